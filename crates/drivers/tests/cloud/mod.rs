//! What the `hetzner` driver tests share: a simulator of the Hetzner Cloud
//! API on loopback (of whatever network namespace the calling thread is
//! in), and an API handle against it whose delays are milliseconds.
//!
//! The world: servers n1 (id 1) and n2 (id 2) in fsn1; floating IP 41
//! (10.77.0.100) and volume 7, both on n2 at the start, so every first
//! acquire or attach on n1 is a real move away from another server.

#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailherd_drivers::hetzner::HetznerApi;
use mailherd_hcloud::{Client, ClientConfig, RetryPolicy, Token};
use mailherd_hcloud_sim::{
    EventHook, RateLimitConfig, SimConfig, SimEvent, SimHandle, Simulator, World, WorldFloatingIp,
    WorldServer, WorldVolume,
};

pub const TOKEN: &str = "driver-test-token-93f1";
pub const N1: u64 = 1;
pub const N2: u64 = 2;
pub const FLOATING_IP_ID: u64 = 41;
pub const FLOATING_IP: &str = "10.77.0.100";
pub const VOLUME_ID: u64 = 7;

fn server(id: u64, name: &str) -> WorldServer {
    WorldServer {
        id,
        name: name.to_string(),
        location: "fsn1".to_string(),
        status: "running".to_string(),
        ipv4: None,
    }
}

/// The world, with the volume's `linux_device` at `linux_device`.
pub fn world(linux_device: Option<PathBuf>) -> World {
    World {
        servers: vec![server(N1, "n1"), server(N2, "n2")],
        floating_ips: vec![WorldFloatingIp {
            id: FLOATING_IP_ID,
            ip: FLOATING_IP.to_string(),
            name: "mail".to_string(),
            description: None,
            home_location: "fsn1".to_string(),
            server: Some(N2),
        }],
        volumes: vec![WorldVolume {
            id: VOLUME_ID,
            name: "mail".to_string(),
            location: "fsn1".to_string(),
            size: 10,
            server: Some(N2),
            linux_device: linux_device
                .map(|path| path.display().to_string())
                .unwrap_or_default(),
            format: Some("ext4".to_string()),
        }],
    }
}

/// Actions of 30–50 ms, no rate limit reached by accident.
pub fn sim_config() -> SimConfig {
    SimConfig {
        action_duration: Duration::from_millis(40),
        jitter: Duration::from_millis(10),
        rate_limit: RateLimitConfig {
            limit: 100_000,
            refill_per_second: 1000.0,
        },
        ..SimConfig::new(TOKEN)
    }
}

/// The official retry policy shrunk to milliseconds.
pub fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(10),
        factor: 2.0,
        cap: Duration::from_millis(100),
        max_retries: 4,
        jitter: false,
        locked_retry_delay: Duration::from_millis(20),
        locked_max_retries: 50,
        rate_limit_reset_is_full_refill: true,
    }
}

/// A client against `sim` that gives up on an action after 1 s.
pub fn client(sim: &SimHandle) -> Client {
    Client::new(ClientConfig {
        request_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(10),
        action_timeout: Duration::from_secs(1),
        retry: fast_policy(),
        ..ClientConfig::new(Token::new(TOKEN).unwrap()).with_base_url(sim.base_url())
    })
    .unwrap()
}

/// The API as server `server` sees it.
pub fn api(sim: &SimHandle, server: u64) -> HetznerApi {
    HetznerApi::new(client(sim), Some(server), sim.metadata_url())
}

/// A simulator recording its events and passing them to `hook`.
pub struct Cloud {
    pub sim: SimHandle,
    pub events: Arc<Mutex<Vec<SimEvent>>>,
}

impl Cloud {
    pub fn events(&self) -> Vec<SimEvent> {
        self.events.lock().unwrap().clone()
    }
}

/// Serves `world` on 127.0.0.1 of the calling thread's network namespace.
pub async fn start(world: World, hook: Option<EventHook>) -> Cloud {
    let events = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&events);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = Simulator::new(sim_config(), world)
        .unwrap()
        .on_event(Arc::new(move |event: SimEvent| {
            recorded.lock().unwrap().push(event.clone());
            if let Some(hook) = &hook {
                hook(event);
            }
        }))
        .serve(listener)
        .await
        .unwrap();
    Cloud { sim, events }
}
