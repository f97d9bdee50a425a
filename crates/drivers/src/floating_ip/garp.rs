//! Gratuitous ARP: tells every host on the segment "this IP is at this MAC"
//! so their ARP caches (and switches' MAC tables) follow a takeover at once
//! instead of after the cache entry ages out.
//!
//! The frames are ARP *requests* with sender IP = target IP = the floating
//! IP, broadcast. Linux updates an existing cache entry from such a request
//! whatever `arp_accept` says (it treats it as a GARP), and so do common
//! routers and switches; the reply form is ignored by some stacks.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// How many frames one announcement sends: one can be lost on a busy or
/// just-reconfigured link, three rarely all are.
pub const GARP_COUNT: usize = 3;
/// Pause between the frames of one announcement.
pub const GARP_SPACING: Duration = Duration::from_millis(5);

const ETH_P_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];
/// Ethernet's minimum frame length without the FCS; shorter frames are
/// padded by most NICs but not by every virtual device.
const MIN_FRAME_LEN: usize = 60;

/// The bytes of one gratuitous ARP request, Ethernet header included.
pub fn garp_frame(mac: [u8; 6], address: Ipv4Addr) -> [u8; MIN_FRAME_LEN] {
    let mut frame = [0u8; MIN_FRAME_LEN];
    // Ethernet: destination, source, type.
    frame[0..6].copy_from_slice(&BROADCAST);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    // ARP: hardware Ethernet, protocol IPv4, lengths 6 and 4, op request.
    frame[14..16].copy_from_slice(&1u16.to_be_bytes());
    frame[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    frame[18] = 6;
    frame[19] = 4;
    frame[20..22].copy_from_slice(&1u16.to_be_bytes());
    // Sender MAC and IP, then target MAC (unknown: zero) and IP (ours).
    frame[22..28].copy_from_slice(&mac);
    frame[28..32].copy_from_slice(&address.octets());
    frame[32..38].copy_from_slice(&[0u8; 6]);
    frame[38..42].copy_from_slice(&address.octets());
    frame
}

/// Sends [`GARP_COUNT`] gratuitous ARP frames for `address` out of the
/// interface `interface_index`, from `mac`. The raw socket is opened in the
/// calling thread's network namespace.
pub(crate) async fn announce(
    interface_index: u32,
    mac: [u8; 6],
    address: Ipv4Addr,
) -> std::io::Result<()> {
    let socket = open_packet_socket()?;
    let frame = garp_frame(mac, address);
    for attempt in 0..GARP_COUNT {
        if attempt > 0 {
            tokio::time::sleep(GARP_SPACING).await;
        }
        send_frame(&socket, interface_index, &frame)?;
    }
    Ok(())
}

/// An AF_PACKET raw socket that only sends: protocol 0 means the kernel
/// queues no received frames on it.
fn open_packet_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn send_frame(socket: &OwnedFd, interface_index: u32, frame: &[u8]) -> std::io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut destination: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    destination.sll_family = libc::AF_PACKET as u16;
    destination.sll_protocol = ETH_P_ARP.to_be();
    destination.sll_ifindex = interface_index as i32;
    destination.sll_halen = 6;
    destination.sll_addr[..6].copy_from_slice(&BROADCAST);
    // SAFETY: the buffer and the address are valid for the given lengths.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&destination as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if sent as usize != frame.len() {
        return Err(std::io::Error::other(format!(
            "short send: {sent} of {} bytes",
            frame.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_is_a_broadcast_arp_request_with_sender_ip_equal_to_target_ip() {
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let frame = garp_frame(mac, Ipv4Addr::new(10, 77, 0, 100));
        assert_eq!(frame.len(), 60);
        assert_eq!(&frame[0..6], &[0xff; 6], "broadcast destination");
        assert_eq!(&frame[6..12], &mac, "source MAC");
        assert_eq!(&frame[12..14], &[0x08, 0x06], "ethertype ARP");
        assert_eq!(
            &frame[14..22],
            &[0, 1, 0x08, 0x00, 6, 4, 0, 1],
            "ARP request header"
        );
        assert_eq!(&frame[22..28], &mac, "sender MAC");
        assert_eq!(&frame[28..32], &[10, 77, 0, 100], "sender IP");
        assert_eq!(&frame[32..38], &[0; 6], "target MAC unknown");
        assert_eq!(&frame[38..42], &[10, 77, 0, 100], "target IP");
        assert!(frame[42..].iter().all(|b| *b == 0), "zero padding");
    }
}
