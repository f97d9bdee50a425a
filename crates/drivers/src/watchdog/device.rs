//! The Linux watchdog device (Documentation/watchdog/watchdog-api.rst).
//!
//! Opening the device starts the timer; `WDIOC_SETTIMEOUT` sets it in whole
//! seconds (the driver may round); `WDIOC_KEEPALIVE` pets; writing the magic
//! character `V` before closing stops it. A process that dies without the
//! magic close leaves the timer running, so a killed agent's node is reset
//! — that is the point. A restarted agent stops such a leftover timer once
//! its start-up cleanup has let go of everything (see [`Watchdog::disarm`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use super::Watchdog;
use crate::DriverError;

mod ioctl {
    // From linux/watchdog.h.
    nix::ioctl_read!(keepalive, b'W', 5, libc::c_int);
    nix::ioctl_readwrite!(set_timeout, b'W', 6, libc::c_int);
    nix::ioctl_read!(get_timeout, b'W', 7, libc::c_int);
}

pub struct DeviceWatchdog {
    path: PathBuf,
    open: Option<File>,
}

impl DeviceWatchdog {
    pub fn new(path: PathBuf) -> DeviceWatchdog {
        DeviceWatchdog { path, open: None }
    }

    fn error(&self, op: &'static str, source: std::io::Error) -> DriverError {
        DriverError::Io {
            op,
            path: self.path.clone(),
            source,
        }
    }

    fn open(&self) -> Result<File, DriverError> {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(|e| self.error("open the watchdog device", e))
    }

    /// The magic close: the timer stops.
    fn magic_close(&self, mut file: File) -> Result<(), DriverError> {
        file.write_all(b"V")
            .map_err(|e| self.error("write the magic close to", e))
    }
}

impl Watchdog for DeviceWatchdog {
    fn describe(&self) -> String {
        format!("device {}", self.path.display())
    }

    fn arm(&mut self, timeout: Duration) -> Result<Duration, DriverError> {
        let wanted = timeout.as_secs();
        if wanted == 0 || timeout.subsec_nanos() != 0 {
            return Err(DriverError::InvalidConfig {
                section: "watchdog",
                reason: format!(
                    "a watchdog device counts whole seconds, not {} ms",
                    timeout.as_millis()
                ),
            });
        }
        let file = match self.open.take() {
            Some(file) => file,
            None => self.open()?,
        };
        let fd = file.as_raw_fd();
        let mut seconds = wanted as libc::c_int;
        // SAFETY: fd is an open watchdog device; the argument is a c_int.
        let set = unsafe { ioctl::set_timeout(fd, &mut seconds) };
        let mut actual: libc::c_int = 0;
        // SAFETY: as above.
        let got = set.and_then(|_| unsafe { ioctl::get_timeout(fd, &mut actual) });
        if let Err(errno) = got {
            let _ = self.magic_close(file);
            return Err(self.error("set the timeout of", errno.into()));
        }
        if actual as u64 > wanted {
            // A longer timeout would reset the node after its lease ended.
            let _ = self.magic_close(file);
            return Err(DriverError::Unsupported {
                driver: "watchdog device",
                what: format!("a {wanted} s timeout (it set {actual} s)"),
            });
        }
        self.open = Some(file);
        Ok(Duration::from_secs(actual as u64))
    }

    fn pet(&mut self) -> Result<(), DriverError> {
        let Some(file) = &self.open else {
            return Err(DriverError::NotConfigured {
                what: "an armed watchdog",
            });
        };
        let mut ignored: libc::c_int = 0;
        // SAFETY: an open watchdog device; the argument is a c_int.
        unsafe { ioctl::keepalive(file.as_raw_fd(), &mut ignored) }
            .map_err(|errno| self.error("pet", errno.into()))?;
        Ok(())
    }

    fn disarm(&mut self) -> Result<(), DriverError> {
        match self.open.take() {
            Some(file) => self.magic_close(file),
            // Not armed by this process: stop a timer a killed predecessor
            // left running. No device at all means there is nothing to stop.
            None if !self.path.exists() => Ok(()),
            None => {
                let file = self.open()?;
                self.magic_close(file)
            }
        }
    }
}
