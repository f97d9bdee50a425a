//! The `local` floating IP driver on a real veth pair between two network
//! namespaces the test creates: `node` (where the driver runs) and
//! `neighbour` (which captures the gratuitous ARPs and keeps an ARP cache).
//! No frame leaves these namespaces.

mod common;

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::{block_on, require_root, Netns};
use mailherd_config::{FloatingIpDriver, FloatingIpSection};
use mailherd_drivers::suite::{floating_ip_suite, FloatingIpObserver};
use mailherd_drivers::{floating_ip_from_config, DriverError, FloatingIp};

const FLOATING: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
const NODE_INTERFACE: &str = "mhnode";
const NEIGHBOUR_INTERFACE: &str = "mhneigh";

/// Two namespaces joined by a veth pair, both ends up and addressed.
struct Segment {
    node: Netns,
    neighbour: Netns,
    node_mac: [u8; 6],
}

impl Segment {
    fn new() -> Segment {
        let node = Netns::new("mhd-node");
        let neighbour = Netns::new("mhd-nb");
        node.ip(&[
            "link",
            "add",
            NODE_INTERFACE,
            "type",
            "veth",
            "peer",
            "name",
            NEIGHBOUR_INTERFACE,
            "netns",
            &neighbour.name,
        ]);
        node.ip(&["addr", "add", "10.77.0.1/24", "dev", NODE_INTERFACE]);
        node.ip(&["link", "set", NODE_INTERFACE, "up"]);
        neighbour.ip(&["addr", "add", "10.77.0.2/24", "dev", NEIGHBOUR_INTERFACE]);
        neighbour.ip(&["link", "set", NEIGHBOUR_INTERFACE, "up"]);
        let node_mac = mac_of(&node, NODE_INTERFACE);
        Segment {
            node,
            neighbour,
            node_mac,
        }
    }

    fn driver(&self, address: &str, interface: &str) -> Box<dyn FloatingIp> {
        floating_ip_from_config(
            &FloatingIpSection {
                driver: FloatingIpDriver::Local,
                address: address.to_string(),
                interface: interface.to_string(),
                garp_refresh_ms: 1_000,
                floating_ip_id: None,
            },
            None,
        )
        .expect("driver from config")
    }

    /// Runs async work on a thread inside the node namespace.
    fn on_node<T: Send>(&self, work: impl AsyncFnOnce() -> T + Send) -> T {
        self.node.enter(|| block_on(work()))
    }

    fn node_addresses(&self) -> String {
        self.node
            .ip(&["-o", "-4", "addr", "show", "dev", NODE_INTERFACE])
    }

    /// The neighbour's ARP cache entry for the floating IP.
    fn neighbour_entry(&self) -> String {
        self.neighbour.ip(&[
            "neigh",
            "show",
            &FLOATING.to_string(),
            "dev",
            NEIGHBOUR_INTERFACE,
        ])
    }
}

fn mac_of(netns: &Netns, interface: &str) -> [u8; 6] {
    let line = netns.ip(&["-o", "link", "show", interface]);
    let text = line
        .split_whitespace()
        .skip_while(|word| *word != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {line:?}"));
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16).expect("hex MAC");
    }
    mac
}

fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An AF_PACKET socket in the neighbour namespace receiving the ARP frames
/// that arrive on its end of the veth pair.
struct ArpCapture {
    socket: OwnedFd,
}

impl ArpCapture {
    fn open(neighbour: &Netns) -> ArpCapture {
        neighbour.enter(|| {
            let interface_name = std::ffi::CString::new(NEIGHBOUR_INTERFACE).unwrap();
            // SAFETY: plain libc calls with checked results.
            unsafe {
                let index = libc::if_nametoindex(interface_name.as_ptr());
                assert!(
                    index > 0,
                    "no {NEIGHBOUR_INTERFACE} in the neighbour namespace"
                );
                let fd = libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    i32::from((libc::ETH_P_ARP as u16).to_be()),
                );
                assert!(
                    fd >= 0,
                    "packet socket: {}",
                    std::io::Error::last_os_error()
                );
                let socket = OwnedFd::from_raw_fd(fd);
                let mut address: libc::sockaddr_ll = std::mem::zeroed();
                address.sll_family = libc::AF_PACKET as u16;
                address.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
                address.sll_ifindex = index as i32;
                let bound = libc::bind(
                    socket.as_raw_fd(),
                    (&address as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
                ArpCapture { socket }
            }
        })
    }

    /// Reads every queued frame; counts the GARPs for `address` from `mac`.
    fn drain_count(&self, mac: [u8; 6], address: Ipv4Addr) -> usize {
        let mut count = 0;
        let mut frame = [0u8; 1600];
        loop {
            // SAFETY: the buffer is valid for its length.
            let received = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    frame.as_mut_ptr().cast(),
                    frame.len(),
                    0,
                )
            };
            if received < 0 {
                let error = std::io::Error::last_os_error();
                assert_eq!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock,
                    "recv: {error}"
                );
                return count;
            }
            let frame = &frame[..received as usize];
            let is_garp = frame.len() >= 42
                && frame[0..6] == [0xff; 6]
                && frame[6..12] == mac
                && frame[12..14] == [0x08, 0x06]
                && frame[20..22] == [0, 1]
                && frame[22..28] == mac
                && frame[28..32] == address.octets()
                && frame[38..42] == address.octets();
            if is_garp {
                count += 1;
            }
        }
    }

    /// Counts GARPs, waiting up to half a second for the first to arrive
    /// (veth delivery goes through a softirq).
    fn count_settled(&self, mac: [u8; 6], address: Ipv4Addr) -> usize {
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut count = self.drain_count(mac, address);
        while count == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            count += self.drain_count(mac, address);
        }
        count
    }
}

/// Sees the node from outside the driver: `ip addr` for the address, the
/// neighbour's capture for the announcements.
struct SegmentObserver<'a> {
    segment: &'a Segment,
    capture: ArpCapture,
}

#[async_trait]
impl FloatingIpObserver for SegmentObserver<'_> {
    async fn address_present(&self) -> bool {
        self.segment
            .node_addresses()
            .contains(&format!("inet {FLOATING}/"))
    }

    async fn take_announcements(&self) -> usize {
        self.capture.count_settled(self.segment.node_mac, FLOATING)
    }
}

#[test]
fn local_floating_ip_passes_the_suite_on_a_veth_pair() {
    require_root();
    let segment = Segment::new();
    let observer = SegmentObserver {
        segment: &segment,
        capture: ArpCapture::open(&segment.neighbour),
    };
    let driver = segment.driver("10.77.0.100/24", NODE_INTERFACE);
    assert_eq!(
        driver.describe(),
        format!("local 10.77.0.100/24 on {NODE_INTERFACE}")
    );
    segment.on_node(async || floating_ip_suite(driver.as_ref(), &observer).await);
}

#[test]
fn acquire_sends_three_garps_that_move_a_neighbours_arp_entry_here() {
    require_root();
    let segment = Segment::new();
    let capture = ArpCapture::open(&segment.neighbour);
    // The neighbour still believes the address is at the old master.
    segment.neighbour.ip(&[
        "neigh",
        "replace",
        &FLOATING.to_string(),
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        NEIGHBOUR_INTERFACE,
        "nud",
        "stale",
    ]);
    assert!(segment.neighbour_entry().contains("02:00:00:00:00:99"));

    let driver = segment.driver("10.77.0.100/24", NODE_INTERFACE);
    segment
        .on_node(async || driver.acquire().await)
        .expect("acquire");

    let node_mac = format_mac(segment.node_mac);
    let entry = segment.neighbour_entry();
    assert!(
        entry.contains(&node_mac),
        "neighbour entry {entry:?} does not point at the new holder {node_mac}"
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        capture.drain_count(segment.node_mac, FLOATING),
        3,
        "GARPs per acquire"
    );
    segment
        .on_node(async || driver.release().await)
        .expect("release");
}

#[test]
fn release_removes_the_address_whatever_prefix_it_was_added_with() {
    require_root();
    let segment = Segment::new();
    // A stray /32 (an operator's hand, an old driver) is a second holder too.
    segment
        .node
        .ip(&["addr", "add", "10.77.0.100/32", "dev", NODE_INTERFACE]);
    let driver = segment.driver("10.77.0.100/24", NODE_INTERFACE);
    assert!(segment
        .on_node(async || driver.is_held().await)
        .expect("is_held"));
    segment
        .on_node(async || driver.release().await)
        .expect("release");
    assert!(
        !segment.node_addresses().contains("10.77.0.100"),
        "{}",
        segment.node_addresses()
    );
    // The node's own address is left alone.
    assert!(segment.node_addresses().contains("10.77.0.1/24"));
}

#[test]
fn acquire_adds_the_configured_prefix_next_to_other_addresses() {
    require_root();
    let segment = Segment::new();
    let driver = segment.driver("10.77.0.100/24", NODE_INTERFACE);
    segment
        .on_node(async || driver.acquire().await)
        .expect("acquire");
    let addresses = segment.node_addresses();
    assert!(addresses.contains("inet 10.77.0.100/24"), "{addresses}");
    assert!(addresses.contains("inet 10.77.0.1/24"), "{addresses}");
    segment
        .on_node(async || driver.release().await)
        .expect("release");
}

#[test]
fn a_missing_interface_is_named_in_the_error_and_holds_nothing() {
    require_root();
    let segment = Segment::new();
    let driver = segment.driver("10.77.0.100/24", "mhnosuch0");
    let (acquired, held, released) = segment.on_node(async || {
        (
            driver.acquire().await,
            driver.is_held().await,
            driver.release().await,
        )
    });
    match acquired {
        Err(error @ DriverError::InterfaceNotFound { .. }) => {
            assert!(error.to_string().contains("mhnosuch0"), "{error}")
        }
        other => panic!("acquire on a missing interface gave {other:?}"),
    }
    assert!(
        !held.expect("is_held"),
        "nothing is held on a missing interface"
    );
    released.expect("release on a missing interface is a no-op");
}

#[test]
fn acquire_on_a_down_interface_reports_the_failed_announcement() {
    require_root();
    let segment = Segment::new();
    segment.node.ip(&["link", "set", NODE_INTERFACE, "down"]);
    let driver = segment.driver("10.77.0.100/24", NODE_INTERFACE);
    match segment.on_node(async || driver.acquire().await) {
        Err(error @ DriverError::Garp { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains("10.77.0.100") && message.contains(NODE_INTERFACE),
                "{message}"
            );
        }
        other => panic!("acquire on a down interface gave {other:?}"),
    }
    segment
        .on_node(async || driver.release().await)
        .expect("release");
}
