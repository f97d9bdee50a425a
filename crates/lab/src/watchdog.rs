//! The lab's emulated watchdog, run by each mail node's init (PID 1).
//!
//! It listens on a Unix datagram socket in the node's `/run` tmpfs for the
//! agent's `socket` watchdog driver (`arm <ms>`, `pet`, `disarm`) and, when
//! an armed timer runs out, powers the node off from the inside the way a
//! hardware watchdog resets a machine: the node's link goes down (so its
//! peers get no goodbye either), every process of the node is SIGKILLed, and init exits,
//! which ends the node's mount namespace (and so its mounts). `heal` boots
//! the node again.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::topology::NODE_INTERFACE;

/// How long the listener sleeps when nothing is armed.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Where a node's watchdog listens (inside the node's `/run` tmpfs).
pub fn socket_path(node_dir: &Path) -> PathBuf {
    node_dir.join("run").join("watchdog.sock")
}

/// What the agent said.
#[derive(Debug, PartialEq, Eq)]
enum Message {
    Arm(Duration),
    Pet,
    Disarm,
}

fn parse(text: &str) -> Option<Message> {
    let mut words = text.split_whitespace();
    let message = match (words.next()?, words.next()) {
        ("arm", Some(ms)) => Message::Arm(Duration::from_millis(ms.parse().ok()?)),
        ("pet", None) => Message::Pet,
        ("disarm", None) => Message::Disarm,
        _ => return None,
    };
    words.next().is_none().then_some(message)
}

/// The timer: armed with a timeout, running out at a deadline.
#[derive(Debug, Default)]
struct Timer {
    armed: Option<(Duration, Instant)>,
}

impl Timer {
    fn apply(&mut self, message: Message, now: Instant) {
        match message {
            Message::Arm(timeout) => self.armed = Some((timeout, now + timeout)),
            Message::Pet => {
                if let Some((timeout, deadline)) = &mut self.armed {
                    *deadline = now + *timeout;
                }
            }
            Message::Disarm => self.armed = None,
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.armed.map(|(_, deadline)| deadline)
    }
}

/// Binds the socket and starts the watchdog thread of node `node`.
pub fn start(node: &str, node_dir: &Path) -> Result<()> {
    let path = socket_path(node_dir);
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path)
        .with_context(|| format!("cannot bind the watchdog socket {}", path.display()))?;
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn({
            let node = node.to_string();
            move || {
                let log = move |message: &str| crate::node::log(&node, message);
                if let Err(error) = run_in_real_time() {
                    log(&format!(
                        "watchdog: no real-time priority ({error}); it may fire late under load"
                    ));
                }
                listen(socket, &log)
            }
        })
        .context("cannot start the watchdog thread")?;
    Ok(())
}

/// A hardware watchdog's timer runs whatever the CPUs are busy with; this
/// thread's should too, or on a loaded machine it fires late and the dead
/// node outlives its lease. SCHED_FIFO: it sleeps nearly all the time.
fn run_in_real_time() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 50 };
    // SAFETY: sets the calling thread's own policy from a valid sched_param.
    let result =
        unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(result))
    }
}

fn listen(socket: UnixDatagram, log: &dyn Fn(&str)) {
    let mut timer = Timer::default();
    let mut buffer = [0u8; 64];
    loop {
        let now = Instant::now();
        let wait = match timer.deadline() {
            Some(deadline) if deadline <= now => {
                // A kernel watchdog takes a pet the moment it is written;
                // here it waits in the socket until this thread reads it.
                // If this thread was late, what queued up meanwhile counts
                // before the verdict (at most this thread's own lateness
                // of generosity).
                drain_queued(&socket, &mut timer, &mut buffer, log);
                match timer.deadline() {
                    Some(deadline) if deadline <= Instant::now() => fire(log),
                    _ => continue,
                }
            }
            Some(deadline) => deadline - now,
            None => IDLE_WAIT,
        };
        // A zero timeout means "block forever" to the kernel.
        let _ = socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        match socket.recv(&mut buffer) {
            Ok(n) => receive(&buffer[..n], &mut timer, log),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(error) => {
                log(&format!("watchdog socket failed: {error}"));
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Applies one message read from the socket.
fn receive(bytes: &[u8], timer: &mut Timer, log: &dyn Fn(&str)) {
    let text = String::from_utf8_lossy(bytes);
    match parse(&text) {
        Some(message) => {
            if let Message::Arm(timeout) = &message {
                log(&format!("watchdog armed ({} ms)", timeout.as_millis()));
            } else if message == Message::Disarm && timer.armed.is_some() {
                log("watchdog disarmed");
            }
            timer.apply(message, Instant::now());
        }
        None => log(&format!("watchdog: ignoring {text:?}")),
    }
}

/// Applies every message already waiting in the socket, without blocking.
fn drain_queued(socket: &UnixDatagram, timer: &mut Timer, buffer: &mut [u8], log: &dyn Fn(&str)) {
    if socket.set_nonblocking(true).is_err() {
        return;
    }
    while let Ok(n) = socket.recv(buffer) {
        receive(&buffer[..n], timer, log);
    }
    let _ = socket.set_nonblocking(false);
}

/// Powers the node off from the inside. Never returns.
///
/// What a reset does at once comes first, before anything that can wait
/// for the scheduler (spawning `ip`, writing the log): every process of the
/// node stops, its volumes are no longer mounted, its link goes down. Found
/// by the 2+witness lab test at load average 13: with the log line and
/// `ip address flush` first, the dead node still held the volume for 22 ms
/// after the new master mounted it.
fn fire(log: &dyn Fn(&str)) -> ! {
    // From PID 1 of the node's PID namespace, -1 means every other process
    // of the node: a SIGKILLed process makes no further system call.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    // The node's own mount namespace ends only when init exits; a lazy
    // detach now is what the reset does to the machine's mounts.
    let detached = detach_volumes();
    // The link, as a dead machine's NIC: a down interface answers nothing,
    // not even ARP for the floating IP. An ioctl: nothing to spawn.
    let link = set_link_down(NODE_INTERFACE);
    log("WATCHDOG FIRED: the agent stopped petting while holding the role; powering the node off");
    match detached {
        Ok(points) if !points.is_empty() => {
            log(&format!("watchdog: detached {}", points.join(", ")))
        }
        Ok(_) => {}
        Err(error) => log(&format!("watchdog: cannot read the node's mounts: {error}")),
    }
    if let Err(error) = link {
        log(&format!(
            "watchdog: cannot take {NODE_INTERFACE} down: {error}"
        ));
    }
    // And its addresses go, as `fail --mode power` does, so that nobody
    // counts the dead node as holding the floating IP. If init's main loop
    // reaps `ip` first, waiting for it fails with ECHILD: it has finished.
    let flushed = std::process::Command::new("ip")
        .args(["address", "flush", "dev", NODE_INTERFACE])
        .status();
    match flushed {
        Ok(status) if !status.success() => log(&format!("watchdog: ip address flush: {status}")),
        Err(error) if error.raw_os_error() != Some(libc::ECHILD) => {
            log(&format!("watchdog: ip address flush: {error}"))
        }
        _ => {}
    }
    std::process::exit(137);
}

/// Lazily detaches every loop-device mount of the node's mount namespace
/// (the shared volume and any replica); returns the mount points.
fn detach_volumes() -> std::io::Result<Vec<String>> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut detached = Vec::new();
    for line in table.lines() {
        // Fields: id parent major:minor root mount-point options ... - type source super-options
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(separator) = fields.iter().position(|field| *field == "-") else {
            continue;
        };
        let (Some(point), Some(source)) = (fields.get(4), fields.get(separator + 2)) else {
            continue;
        };
        if source.starts_with("/dev/loop")
            && nix::mount::umount2(*point, nix::mount::MntFlags::MNT_DETACH).is_ok()
        {
            detached.push(point.to_string());
        }
    }
    Ok(detached)
}

/// Clears IFF_UP on `interface` in this thread's network namespace.
fn set_link_down(interface: &str) -> std::io::Result<()> {
    // SAFETY: a plain datagram socket used only for the two interface-flag
    // ioctls on a zeroed, NUL-terminated ifreq; closed before returning.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in request.ifr_name.iter_mut().zip(interface.bytes()) {
            *slot = byte as libc::c_char;
        }
        let mut result = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request);
        if result == 0 {
            request.ifr_ifru.ifru_flags &= !(libc::IFF_UP as libc::c_short);
            result = libc::ioctl(fd, libc::SIOCSIFFLAGS, &request);
        }
        let error = std::io::Error::last_os_error();
        libc::close(fd);
        if result != 0 {
            return Err(error);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_drivers_lines_and_nothing_else() {
        assert_eq!(
            parse("arm 300"),
            Some(Message::Arm(Duration::from_millis(300)))
        );
        assert_eq!(parse("pet"), Some(Message::Pet));
        assert_eq!(parse("disarm"), Some(Message::Disarm));
        for bad in ["", "arm", "arm x", "pet now", "arm 3 4", "reboot"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pets_move_the_deadline_only_while_armed() {
        let start = Instant::now();
        let mut timer = Timer::default();
        timer.apply(Message::Pet, start);
        assert_eq!(timer.deadline(), None);
        timer.apply(Message::Arm(Duration::from_millis(300)), start);
        assert_eq!(timer.deadline(), Some(start + Duration::from_millis(300)));
        let later = start + Duration::from_millis(200);
        timer.apply(Message::Pet, later);
        assert_eq!(timer.deadline(), Some(later + Duration::from_millis(300)));
        timer.apply(Message::Disarm, later);
        assert_eq!(timer.deadline(), None);
    }
}
