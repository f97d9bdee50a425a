//! An emulated watchdog behind a Unix datagram socket.
//!
//! Each datagram is one line: `arm <timeout_ms>`, `pet` or `disarm`. The
//! listener (the lab's node init) keeps the deadline and powers the node
//! off when it passes. Nothing is answered: like a device, the watchdog
//! does not care whether the agent is still there, only whether it pets.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use super::Watchdog;
use crate::DriverError;

pub struct SocketWatchdog {
    path: PathBuf,
}

impl SocketWatchdog {
    pub fn new(path: PathBuf) -> SocketWatchdog {
        SocketWatchdog { path }
    }

    fn send(&self, op: &'static str, message: &str) -> Result<(), DriverError> {
        let io = |source| DriverError::Io {
            op,
            path: self.path.clone(),
            source,
        };
        let socket = UnixDatagram::unbound().map_err(io)?;
        socket.set_nonblocking(true).map_err(io)?;
        socket.send_to(message.as_bytes(), &self.path).map_err(io)?;
        Ok(())
    }
}

impl Watchdog for SocketWatchdog {
    fn describe(&self) -> String {
        format!("socket {}", self.path.display())
    }

    fn arm(&mut self, timeout: Duration) -> Result<Duration, DriverError> {
        self.send(
            "arm the watchdog at",
            &format!("arm {}", timeout.as_millis()),
        )?;
        Ok(timeout)
    }

    fn pet(&mut self) -> Result<(), DriverError> {
        self.send("pet the watchdog at", "pet")
    }

    fn disarm(&mut self) -> Result<(), DriverError> {
        self.send("disarm the watchdog at", "disarm")
    }
}
