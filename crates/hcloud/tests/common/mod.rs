//! What the client tests share: a simulator on loopback seeded with a small
//! world, and a client against it whose delays are milliseconds.
//!
//! The world: servers n1 and n2 in fsn1, n3 in hel1; floating IP 1 on n1;
//! volume 10 attached to n1, volume 11 free (both fsn1), volume 12 free in
//! hel1.

#![allow(dead_code)] // each test binary uses a different part

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailherd_hcloud::{Client, ClientConfig, RetryPolicy, Token};
use mailherd_hcloud_sim::{
    RateLimitConfig, SimConfig, SimEvent, SimHandle, Simulator, World, WorldFloatingIp,
    WorldServer, WorldVolume,
};

pub const TOKEN: &str = "sim-token-4c1d8e";

pub const N1: u64 = 1;
pub const N2: u64 = 2;
pub const N3: u64 = 3;
pub const FLOATING_IP: u64 = 1;
pub const ATTACHED_VOLUME: u64 = 10;
pub const FREE_VOLUME: u64 = 11;
pub const HEL1_VOLUME: u64 = 12;

pub fn server(id: u64, name: &str, location: &str) -> WorldServer {
    WorldServer {
        id,
        name: name.to_string(),
        location: location.to_string(),
        status: "running".to_string(),
        ipv4: Some(format!("192.0.2.{id}")),
    }
}

pub fn volume(id: u64, location: &str, server: Option<u64>) -> WorldVolume {
    WorldVolume {
        id,
        name: String::new(),
        location: location.to_string(),
        size: 10,
        server,
        linux_device: String::new(),
        format: Some("ext4".to_string()),
    }
}

pub fn world() -> World {
    World {
        servers: vec![
            server(N1, "n1", "fsn1"),
            server(N2, "n2", "fsn1"),
            server(N3, "n3", "hel1"),
        ],
        floating_ips: vec![WorldFloatingIp {
            id: FLOATING_IP,
            ip: "203.0.113.10".to_string(),
            name: "mail".to_string(),
            description: None,
            home_location: "fsn1".to_string(),
            server: Some(N1),
        }],
        volumes: vec![
            volume(ATTACHED_VOLUME, "fsn1", Some(N1)),
            volume(FREE_VOLUME, "fsn1", None),
            volume(HEL1_VOLUME, "hel1", None),
        ],
    }
}

/// Actions of 40–80 ms and a rate limit no test reaches by accident.
pub fn sim_config() -> SimConfig {
    SimConfig {
        action_duration: Duration::from_millis(60),
        jitter: Duration::from_millis(20),
        rate_limit: RateLimitConfig {
            limit: 100_000,
            refill_per_second: 1000.0,
        },
        ..SimConfig::new(TOKEN)
    }
}

/// The official policy shrunk to milliseconds: backoff 10, 20, 40 ms.
pub fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(10),
        factor: 2.0,
        cap: Duration::from_millis(200),
        max_retries: 3,
        jitter: true,
        locked_retry_delay: Duration::from_millis(20),
        locked_max_retries: 100,
        rate_limit_reset_is_full_refill: true,
    }
}

pub fn client_config(sim: &SimHandle) -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(20),
        action_timeout: Duration::from_secs(5),
        retry: fast_policy(),
        ..ClientConfig::new(Token::new(TOKEN).unwrap()).with_base_url(sim.base_url())
    }
}

pub fn client(sim: &SimHandle) -> Client {
    Client::new(client_config(sim)).unwrap()
}

/// A simulator recording its events.
pub struct Cloud {
    pub sim: SimHandle,
    pub events: Arc<Mutex<Vec<SimEvent>>>,
}

impl Cloud {
    pub fn events(&self) -> Vec<SimEvent> {
        self.events.lock().unwrap().clone()
    }
}

pub async fn start_with(world: World, config: SimConfig, hook_delay: Duration) -> Cloud {
    let events = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&events);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = Simulator::new(config, world)
        .unwrap()
        .on_event(Arc::new(move |event| {
            // As the lab's `ip route replace` would, the hook takes time.
            std::thread::sleep(hook_delay);
            recorded.lock().unwrap().push(event);
        }))
        .serve(listener)
        .await
        .unwrap();
    Cloud { sim, events }
}

pub async fn start() -> Cloud {
    start_with(world(), sim_config(), Duration::ZERO).await
}

/// For tests that act while an action is still running: actions long
/// enough (`action_duration`, no jitter) that a loaded machine does not see
/// them end first.
pub async fn start_slow(action_duration: Duration) -> Cloud {
    let config = SimConfig {
        action_duration,
        jitter: Duration::ZERO,
        ..sim_config()
    };
    start_with(world(), config, Duration::ZERO).await
}
