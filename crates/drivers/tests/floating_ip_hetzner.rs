//! The `hetzner` floating IP driver against the Hetzner Cloud API
//! simulator, both inside a network namespace the test creates (the
//! simulator on its loopback, the address on a dummy interface). Nothing
//! leaves the namespace.

mod cloud;
mod common;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cloud::{Cloud, FLOATING_IP, FLOATING_IP_ID, N1, N2};
use common::{block_on, require_root, Netns};
use mailherd_drivers::floating_ip::hetzner::HetznerFloatingIp;
use mailherd_drivers::hetzner::HetznerApi;
use mailherd_drivers::suite::{floating_ip_suite, FloatingIpObserver};
use mailherd_drivers::{DriverError, FloatingIp};
use mailherd_hcloud_sim::{Fault, SimEvent};

const INTERFACE: &str = "mhfip0";

/// A namespace with `mhfip0` (10.77.0.1/24, up), one end of a veth pair
/// whose other end stays in the namespace too (this kernel has no dummy
/// interfaces).
fn node() -> Netns {
    let netns = Netns::new("mhd-hfip");
    netns.ip(&[
        "link", "add", INTERFACE, "type", "veth", "peer", "name", "mhfip1",
    ]);
    netns.ip(&["link", "set", "mhfip1", "up"]);
    netns.ip(&["addr", "add", "10.77.0.1/24", "dev", INTERFACE]);
    netns.ip(&["link", "set", INTERFACE, "up"]);
    netns
}

fn address() -> Ipv4Addr {
    FLOATING_IP.parse().unwrap()
}

fn driver(api: HetznerApi) -> HetznerFloatingIp {
    HetznerFloatingIp::new(api, FLOATING_IP_ID, address(), INTERFACE)
}

fn local_addresses(netns: &Netns) -> String {
    netns.ip(&["-o", "-4", "addr", "show", "dev", INTERFACE])
}

/// Sees the node from outside the driver: `ip addr` for the address (and,
/// when it is there, the simulator must route it to this server), the
/// simulator's request counters for the announcements to the cloud (reads
/// and assigns of the floating IP).
struct CloudObserver<'a> {
    netns: &'a Netns,
    cloud: &'a Cloud,
    server: u64,
    counted: Mutex<u64>,
}

impl CloudObserver<'_> {
    fn cloud_requests(&self) -> u64 {
        let sim = &self.cloud.sim;
        sim.request_count("GET", &format!("/v1/floating_ips/{FLOATING_IP_ID}"))
            + sim.request_count(
                "POST",
                &format!("/v1/floating_ips/{FLOATING_IP_ID}/actions/assign"),
            )
    }
}

#[async_trait]
impl FloatingIpObserver for CloudObserver<'_> {
    async fn address_present(&self) -> bool {
        let present = local_addresses(self.netns).contains(&format!("inet {FLOATING_IP}/32"));
        if present {
            let routed_to = self
                .cloud
                .sim
                .world()
                .floating_ip(FLOATING_IP_ID)
                .unwrap()
                .server;
            assert_eq!(
                routed_to,
                Some(self.server),
                "the address is on the node but the cloud routes it elsewhere"
            );
        }
        present
    }

    async fn take_announcements(&self) -> usize {
        let now = self.cloud_requests();
        let mut counted = self.counted.lock().unwrap();
        let new = now - *counted;
        *counted = now;
        new as usize
    }
}

#[test]
fn hetzner_floating_ip_passes_the_suite_against_the_simulator() {
    require_root();
    let netns = node();
    netns.enter(|| {
        block_on(async {
            let cloud = cloud::start(cloud::world(None), None).await;
            let driver = driver(cloud::api(&cloud.sim, N1));
            assert_eq!(
                driver.describe(),
                format!("hetzner floating ip {FLOATING_IP_ID} ({FLOATING_IP}/32 on {INTERFACE})")
            );
            let observer = CloudObserver {
                netns: &netns,
                cloud: &cloud,
                server: N1,
                counted: Mutex::new(0),
            };
            floating_ip_suite(&driver, &observer).await;

            // The first acquire moved the address from n2; release is local
            // only, so the cloud still routes it here.
            assert_eq!(
                cloud.events(),
                [SimEvent::FloatingIpAssigned {
                    floating_ip: FLOATING_IP_ID,
                    ip: FLOATING_IP.to_string(),
                    server: Some(N1),
                }]
            );
            assert_eq!(
                cloud
                    .sim
                    .world()
                    .floating_ip(FLOATING_IP_ID)
                    .unwrap()
                    .server,
                Some(N1)
            );
            assert!(driver.last_api_ms().is_some(), "the move's time is kept");
            assert!(driver.api_budget() > std::time::Duration::from_secs(3));
        })
    });
}

#[test]
fn acquire_takes_the_address_from_another_server_and_times_the_move() {
    require_root();
    let netns = node();
    netns.enter(|| {
        block_on(async {
            let cloud = cloud::start(cloud::world(None), None).await;
            let on_n2 = driver(cloud::api(&cloud.sim, N2));
            let on_n1 = driver(cloud::api(&cloud.sim, N1));
            // n2 has it already: no action.
            on_n2.acquire().await.expect("acquire on n2");
            assert_eq!(
                cloud
                    .sim
                    .request_count("POST", "/v1/floating_ips/41/actions/assign"),
                0
            );
            on_n2.release().await.unwrap();
            on_n1.acquire().await.expect("acquire on n1");
            assert_eq!(
                cloud
                    .sim
                    .world()
                    .floating_ip(FLOATING_IP_ID)
                    .unwrap()
                    .server,
                Some(N1)
            );
            // An assign that takes needs no fallback.
            assert_eq!(
                cloud
                    .sim
                    .request_count("POST", "/v1/floating_ips/41/actions/unassign"),
                0
            );
            // An action of 30–50 ms and its polls.
            let api_ms = on_n1.last_api_ms().expect("timed");
            assert!((20..2_000).contains(&api_ms), "the move took {api_ms} ms");
            on_n1.release().await.unwrap();
        })
    });
}

#[test]
fn the_server_id_comes_from_the_metadata_service_when_not_configured() {
    require_root();
    let netns = node();
    netns.enter(|| {
        block_on(async {
            let cloud = cloud::start(cloud::world(None), None).await;
            let api = HetznerApi::new(
                cloud::client(&cloud.sim),
                None,
                cloud.sim.metadata_url_for("n1"),
            );
            assert_eq!(api.server_id().await.unwrap(), N1);
            let driver = driver(api);
            driver.acquire().await.expect("acquire");
            assert_eq!(
                cloud
                    .sim
                    .world()
                    .floating_ip(FLOATING_IP_ID)
                    .unwrap()
                    .server,
                Some(N1)
            );
            driver.release().await.unwrap();
        })
    });
}

#[test]
fn transient_api_failures_are_retried_and_the_move_succeeds() {
    require_root();
    let netns = node();
    netns.enter(|| {
        block_on(async {
            let cloud = cloud::start(cloud::world(None), None).await;
            let driver = driver(cloud::api(&cloud.sim, N1));
            let assign = "/floating_ips/41/actions/assign";
            cloud
                .sim
                .inject(Fault::http(assign, 429, "rate_limit_exceeded", 2));
            cloud.sim.inject(Fault::http(assign, 502, "bad_gateway", 1));
            cloud.sim.inject(Fault::bare_status(assign, 504, 1));
            cloud.sim.inject(Fault::http(assign, 423, "locked", 3));
            driver
                .acquire()
                .await
                .expect("acquire through 429, 502, locked");
            assert!(cloud.sim.faults().is_empty(), "{:?}", cloud.sim.faults());
            assert_eq!(
                cloud
                    .sim
                    .request_count("POST", "/v1/floating_ips/41/actions/assign"),
                8
            );
            assert!(driver.is_held().await.unwrap());
            driver.release().await.unwrap();
        })
    });
}

/// The failed acquire's error, checked to name the floating IP and `what`,
/// and to have left nothing on the node.
async fn expect_cloud_error(netns: &Netns, driver: &HetznerFloatingIp, what: &[&str]) -> String {
    let error = driver.acquire().await.expect_err("the acquire must fail");
    let message = error.to_string();
    assert!(
        matches!(error, DriverError::Cloud { .. }),
        "not a cloud error: {error:?}"
    );
    assert!(
        message.starts_with(&format!(
            "hetzner floating ip {FLOATING_IP_ID} ({FLOATING_IP})"
        )),
        "{message}"
    );
    for needle in what {
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }
    assert!(!driver.is_held().await.unwrap(), "{message}");
    assert!(!local_addresses(netns).contains(FLOATING_IP));
    message
}

#[test]
fn failed_moves_are_named_and_leave_nothing_local() {
    require_root();
    let netns = node();
    netns.enter(|| {
        block_on(async {
            let cloud = cloud::start(cloud::world(None), None).await;
            let driver = driver(cloud::api(&cloud.sim, N1));

            // An action that ends in error.
            cloud
                .sim
                .inject(Fault::action_error("assign_floating_ip", "server_error", 1));
            expect_cloud_error(
                &netns,
                &driver,
                &[
                    "assigning to server 1 (from server 2)",
                    "ended in error server_error",
                ],
            )
            .await;

            // Errors that are not retried.
            cloud.sim.inject(Fault::http(
                "/floating_ips/41/actions/assign",
                500,
                "service_error",
                1,
            ));
            expect_cloud_error(&netns, &driver, &["service_error", "HTTP 500"]).await;

            // Retries that run out.
            cloud.sim.inject(Fault::http(
                "/floating_ips/41/actions/assign",
                502,
                "bad_gateway",
                50,
            ));
            expect_cloud_error(
                &netns,
                &driver,
                &["bad_gateway", "gave up after 5 attempts"],
            )
            .await;
            cloud.sim.clear_faults();

            // A slow action: still running when the action timeout (1 s) ends.
            cloud
                .sim
                .inject(Fault::action_stuck("assign_floating_ip", 1));
            expect_cloud_error(&netns, &driver, &["still running after"]).await;
            assert_eq!(
                cloud
                    .sim
                    .world()
                    .floating_ip(FLOATING_IP_ID)
                    .unwrap()
                    .server,
                Some(N2),
                "no failed move changed the route"
            );
        })
    });
}

#[test]
fn an_address_that_does_not_match_the_api_is_refused() {
    require_root();
    let netns = node();
    netns.enter(|| {
        block_on(async {
            let cloud = cloud::start(cloud::world(None), None).await;
            let driver = HetznerFloatingIp::new(
                cloud::api(&cloud.sim, N1),
                FLOATING_IP_ID,
                Ipv4Addr::new(10, 77, 0, 99),
                INTERFACE,
            );
            let message = driver.acquire().await.unwrap_err().to_string();
            assert!(
                message.contains("checking the address")
                    && message.contains("10.77.0.100")
                    && message.contains("10.77.0.99"),
                "{message}"
            );
            assert_eq!(
                cloud
                    .sim
                    .world()
                    .floating_ip(FLOATING_IP_ID)
                    .unwrap()
                    .server,
                Some(N2)
            );
        })
    });
}

/// What `tracing` wrote on this thread while a [`Logs::capture`] guard
/// lived: the driver's warnings and its "hcloud move done" line.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Sends this thread's logs (info and above, without colours) here
    /// until the guard is dropped.
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Design §5: "fall back to unassign-then-assign when an in-place reassign
/// does not take". The simulator's first assign succeeds without moving
/// the address (an injected fault); the driver reads the assignment back,
/// says so in a warning, unassigns, assigns again, and the move's steps
/// show the fallback.
#[test]
fn an_assign_that_does_not_take_falls_back_to_unassign_then_assign() {
    require_root();
    let netns = node();
    netns.enter(|| {
        let logs = Logs::default();
        let _capture = logs.capture();
        block_on(async {
            let cloud = cloud::start(cloud::world(None), None).await;
            let driver = driver(cloud::api(&cloud.sim, N1));
            cloud
                .sim
                .inject(Fault::action_without_effect("assign_floating_ip", 1));
            driver
                .acquire()
                .await
                .expect("acquire through an assign that does not take");

            assert!(
                cloud.sim.faults().is_empty(),
                "the first assign met the fault: {:?}",
                cloud.sim.faults()
            );
            assert_eq!(
                cloud
                    .sim
                    .world()
                    .floating_ip(FLOATING_IP_ID)
                    .unwrap()
                    .server,
                Some(N1)
            );
            assert_eq!(
                cloud
                    .sim
                    .request_count("POST", "/v1/floating_ips/41/actions/assign"),
                2
            );
            assert_eq!(
                cloud
                    .sim
                    .request_count("POST", "/v1/floating_ips/41/actions/unassign"),
                1
            );
            // The assign that did not take moved nothing; then the route
            // went nowhere, then here.
            let routed = |server| SimEvent::FloatingIpAssigned {
                floating_ip: FLOATING_IP_ID,
                ip: FLOATING_IP.to_string(),
                server,
            };
            assert_eq!(cloud.events(), [routed(None), routed(Some(N1))]);
            assert!(driver.is_held().await.unwrap());

            let logs = logs.text();
            let warning = logs
                .lines()
                .find(|line| line.contains("WARN") && line.contains("did not take"))
                .unwrap_or_else(|| panic!("no warning about the fallback in:\n{logs}"));
            assert!(
                warning.contains("floating ip 41 to server 1")
                    && warning.contains("the API shows server 2")
                    && warning.contains("falling back to unassign, then assign"),
                "{warning}"
            );
            let report = logs
                .lines()
                .find(|line| line.contains("hcloud move done"))
                .unwrap_or_else(|| panic!("no report of the move in:\n{logs}"));
            for step in [
                "assigning to server 1 (from server 2)",
                "the assign did not take (the API showed server 2)",
                "unassigning (from server 2)",
                "assigning to server 1 after the unassign",
            ] {
                assert!(report.contains(step), "{report:?} lacks {step:?}");
            }
            driver.release().await.unwrap();
        })
    });
}

/// When the assign after the unassign does not take either, the acquire
/// fails, naming what the API shows and the fallback it tried.
#[test]
fn a_fallback_that_does_not_take_either_fails_and_says_what_was_tried() {
    require_root();
    let netns = node();
    netns.enter(|| {
        block_on(async {
            let cloud = cloud::start(cloud::world(None), None).await;
            let driver = driver(cloud::api(&cloud.sim, N1));
            cloud
                .sim
                .inject(Fault::action_without_effect("assign_floating_ip", 2));
            expect_cloud_error(
                &netns,
                &driver,
                &[
                    "checking the assignment failed",
                    "the API shows no server after unassign, then assign to server 1",
                    "the assign did not take (the API showed server 2)",
                    "unassigning (from server 2)",
                ],
            )
            .await;
            assert!(cloud.sim.faults().is_empty(), "{:?}", cloud.sim.faults());
            assert_eq!(
                cloud
                    .sim
                    .world()
                    .floating_ip(FLOATING_IP_ID)
                    .unwrap()
                    .server,
                None
            );
        })
    });
}
