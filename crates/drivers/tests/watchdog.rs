//! The watchdog drivers. The socket driver is checked against a listener
//! like the lab's; the device driver only on its error paths, since arming
//! a real watchdog here would reset the machine running the tests.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use mailherd_drivers::watchdog::{device::DeviceWatchdog, socket::SocketWatchdog};
use mailherd_drivers::Watchdog;

fn received(listener: &UnixDatagram) -> String {
    let mut buffer = [0u8; 64];
    let n = listener.recv(&mut buffer).expect("a datagram");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

#[test]
fn the_socket_driver_speaks_one_line_per_call() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("watchdog.sock");
    let listener = UnixDatagram::bind(&path).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut watchdog = SocketWatchdog::new(path.clone());
    assert_eq!(
        watchdog.arm(Duration::from_millis(300)).unwrap(),
        Duration::from_millis(300)
    );
    assert_eq!(received(&listener), "arm 300");
    watchdog.pet().unwrap();
    assert_eq!(received(&listener), "pet");
    watchdog.disarm().unwrap();
    assert_eq!(received(&listener), "disarm");
    assert_eq!(watchdog.describe(), format!("socket {}", path.display()));
}

#[test]
fn a_socket_nobody_listens_on_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody.sock");
    let mut watchdog = SocketWatchdog::new(path.clone());
    let error = watchdog.arm(Duration::from_millis(300)).unwrap_err();
    let text = error.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("arm"), "{text}");
}

#[test]
fn a_missing_device_cannot_be_armed_but_needs_no_disarming() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("watchdog");
    let mut watchdog = DeviceWatchdog::new(path.clone());
    let error = watchdog.arm(Duration::from_secs(1)).unwrap_err();
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    assert!(watchdog.pet().is_err(), "petting an unarmed watchdog");
    watchdog.disarm().expect("no device: nothing to stop");
}

#[test]
fn a_device_counts_whole_seconds() {
    let mut watchdog = DeviceWatchdog::new("/nonexistent/watchdog".into());
    let error = watchdog.arm(Duration::from_millis(300)).unwrap_err();
    assert!(error.to_string().contains("whole seconds"), "{error}");
}

#[test]
fn a_file_that_is_no_watchdog_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-watchdog");
    std::fs::write(&path, "").unwrap();
    let mut watchdog = DeviceWatchdog::new(path.clone());
    let error = watchdog.arm(Duration::from_secs(1)).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("set the timeout"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
}
