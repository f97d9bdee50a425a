//! The shared test suites: every driver of a kind must pass its kind's suite
//! (garage's `db/test.rs` pattern). A suite drives the driver through the
//! calls the pipelines and the reconciler make, in the orders they make
//! them, and checks the results both through the driver and, where the
//! driver could fool itself, through an independent observer.
//!
//! The suites panic on the first violation, with a message naming the step,
//! so they are meant to be called from tests. Each driver's tests set up a
//! real environment (network namespace, loop device, shell service) and
//! call the suite on it.

use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::{DriverError, FloatingIp, Services, Volume};

/// Sees a floating IP from outside the driver.
#[async_trait]
pub trait FloatingIpObserver: Send + Sync {
    /// Whether the address is on the node, observed without the driver
    /// (e.g. `ip addr` in the node's namespace, the cloud's assignment).
    async fn address_present(&self) -> bool;
    /// How many announcements of the address to this node the network saw
    /// since the previous call (gratuitous ARPs captured by a neighbour,
    /// route changes of a cloud).
    async fn take_announcements(&self) -> usize;
}

/// The suite every floating IP driver passes. Expects the address not held
/// at the start and leaves it not held.
pub async fn floating_ip_suite(driver: &dyn FloatingIp, observer: &dyn FloatingIpObserver) {
    let name = driver.describe();
    assert!(!name.is_empty(), "describe() is empty");
    assert!(
        !driver.is_held().await.expect("is_held before acquire"),
        "{name}: held at the start"
    );
    assert!(
        !observer.address_present().await,
        "{name}: observer sees the address at the start"
    );
    observer.take_announcements().await;

    driver.acquire().await.expect("acquire");
    assert!(
        driver.is_held().await.expect("is_held after acquire"),
        "{name}: not held after acquire"
    );
    assert!(
        observer.address_present().await,
        "{name}: observer misses the address after acquire"
    );
    assert!(
        observer.take_announcements().await >= 1,
        "{name}: acquire did not announce the address"
    );

    driver.acquire().await.expect("acquire again (idempotent)");
    assert!(
        driver.is_held().await.expect("is_held"),
        "{name}: second acquire lost the address"
    );
    observer.take_announcements().await;

    driver.refresh().await.expect("refresh");
    assert!(
        observer.take_announcements().await >= 1,
        "{name}: refresh did not announce the address"
    );

    driver.release().await.expect("release");
    assert!(
        !driver.is_held().await.expect("is_held after release"),
        "{name}: held after release"
    );
    assert!(
        !observer.address_present().await,
        "{name}: observer still sees the address after release"
    );

    driver.release().await.expect("release again (idempotent)");

    // A node is promoted again after a demotion: the cycle must repeat.
    driver.acquire().await.expect("acquire after release");
    assert!(
        driver.is_held().await.expect("is_held"),
        "{name}: not held after re-acquire"
    );
    assert!(
        observer.address_present().await,
        "{name}: observer misses the re-acquired address"
    );
    driver.release().await.expect("final release");
    assert!(
        !observer.address_present().await,
        "{name}: address left behind"
    );
}

/// The suite every volume driver passes, on a volume with a fresh file
/// system (no epoch file) mounted at `mount_point`, not mounted at the
/// start; leaves it unmounted.
pub async fn volume_suite(driver: &dyn Volume, mount_point: &Path) {
    let name = driver.describe();
    assert!(
        !driver.is_mounted().await.expect("is_mounted at start"),
        "{name}: mounted at the start"
    );
    driver
        .unmount(Duration::from_secs(5))
        .await
        .expect("unmount when not mounted");

    match driver.claim_epoch(1).await {
        Err(DriverError::NotMounted { .. }) => {}
        other => panic!("{name}: claim_epoch on an unmounted volume gave {other:?}"),
    }

    driver.attach(Duration::from_secs(5)).await.expect("attach");
    driver.mount().await.expect("mount");
    assert!(
        driver.is_mounted().await.expect("is_mounted"),
        "{name}: not mounted after mount"
    );
    driver.mount().await.expect("mount again (idempotent)");

    // Epochs: equal is fine, higher is written, lower is refused.
    driver.claim_epoch(5).await.expect("claim epoch 5");
    driver.claim_epoch(5).await.expect("claim epoch 5 again");
    driver.claim_epoch(7).await.expect("claim epoch 7");
    let epoch_path = mount_point.join(crate::volume::epoch::EPOCH_FILE);
    assert_eq!(
        std::fs::read_to_string(&epoch_path)
            .expect("read epoch file")
            .trim(),
        "7",
        "{name}: epoch file"
    );
    match driver.claim_epoch(6).await {
        Err(DriverError::StaleEpoch { ours, found, .. }) => assert_eq!((ours, found), (6, 7)),
        other => panic!("{name}: claim of a stale epoch gave {other:?}"),
    }

    driver
        .unmount(Duration::from_secs(5))
        .await
        .expect("unmount");
    assert!(
        !driver.is_mounted().await.expect("is_mounted"),
        "{name}: mounted after unmount"
    );
    assert!(
        !epoch_path.exists(),
        "{name}: epoch file visible with the volume unmounted"
    );
    driver
        .unmount(Duration::from_secs(5))
        .await
        .expect("unmount again (idempotent)");

    // The epoch lives on the volume, not on the node.
    driver
        .attach(Duration::from_secs(5))
        .await
        .expect("attach again");
    driver.mount().await.expect("mount again");
    match driver.claim_epoch(6).await {
        Err(DriverError::StaleEpoch { ours, found, .. }) => assert_eq!((ours, found), (6, 7)),
        other => panic!("{name}: stale claim after a remount gave {other:?}"),
    }

    // A busy file system (a process of the stack still holding a file) is
    // detached lazily once the timeout ends.
    let busy_path = mount_point.join("busy-file");
    let mut busy_file = std::fs::File::create(&busy_path).expect("create a file on the volume");
    let unmount_timeout = Duration::from_millis(300);
    let started = Instant::now();
    driver
        .unmount(unmount_timeout)
        .await
        .expect("unmount of a busy volume");
    let took = started.elapsed();
    assert!(
        took >= unmount_timeout,
        "{name}: busy unmount returned after {took:?}, before its timeout"
    );
    assert!(
        took < unmount_timeout + Duration::from_secs(3),
        "{name}: busy unmount took {took:?}"
    );
    assert!(
        !driver.is_mounted().await.expect("is_mounted"),
        "{name}: busy volume still mounted"
    );
    std::io::Write::write_all(&mut busy_file, b"still writable after the detach\n")
        .expect("the holder of a lazily detached file keeps working");
    drop(busy_file);
}

/// Polls `condition` until it holds or `within` passes.
async fn eventually(within: Duration, mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The suite every services driver passes, given a stack that is stopped at
/// the start and whose commands work; leaves it stopped.
/// Asserts that `driver` reports `running` within `settle`; `message` may
/// name `{name}`, the driver's description.
async fn expect_running(driver: &dyn Services, settle: Duration, running: bool, message: &str) {
    let reached = eventually(settle, async || {
        driver.is_running().await.expect("is_running") == running
    })
    .await;
    assert!(reached, "{}", message.replace("{name}", &driver.describe()));
}

pub async fn services_suite(driver: &dyn Services) {
    let name = driver.describe();
    let timeout = Duration::from_secs(10);
    let settle = Duration::from_secs(3);
    assert!(
        !driver.is_running().await.expect("is_running at start"),
        "{name}: running at the start"
    );
    driver
        .stop(timeout)
        .await
        .expect("stop when stopped (demotion of a backup)");

    driver.start(timeout).await.expect("start");
    expect_running(driver, settle, true, "{name}: not running after start").await;

    driver.stop(timeout).await.expect("stop");
    expect_running(driver, settle, false, "{name}: still running after stop").await;
    driver.stop(timeout).await.expect("stop again (idempotent)");

    driver.start(timeout).await.expect("start after stop");
    expect_running(driver, settle, true, "{name}: not running after restart").await;
    // An urgent demotion kills instead of stopping.
    driver.kill(timeout).await.expect("kill");
    expect_running(driver, settle, false, "{name}: still running after kill").await;
    driver.stop(timeout).await.expect("final stop");
    expect_running(driver, settle, false, "{name}: left running").await;
}
