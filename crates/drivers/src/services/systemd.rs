//! The `systemd` services driver: `systemctl start|stop|kill|is-active` on
//! the stack's units (e.g. `postfix.service`, `dovecot.service`).
//!
//! - `start`: `systemctl start -- UNITS`, which waits for the start jobs;
//! - `stop`: `systemctl stop -- UNITS`; when that fails or outlives the
//!   timeout, the kill below;
//! - `kill`: `systemctl stop --no-block -- UNITS` first, then `systemctl
//!   kill --signal=SIGKILL -- UNITS`. The queued stop job matters: a unit
//!   with `Restart=` whose processes die of a signal is restarted by
//!   systemd, unless a stop job is what it is doing;
//! - `is_running`: `systemctl is-active -- UNITS`, one state per line;
//!   running when any unit is active, activating, deactivating or
//!   reloading (something of the stack holds the host), stopped when every
//!   unit is inactive or failed.
//!
//! Every command runs in its own process group under a timeout
//! ([`super::process`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use mailherd_config::ServicesSection;

use super::command::{KILL_COMMAND_MIN_TIMEOUT, STATUS_COMMAND_TIMEOUT};
use super::process::{require_success, run_command, run_command_with_stdout, CommandRun};
use super::Services;
use crate::DriverError;

/// The unit states in which a unit still has (or is about to have)
/// processes: `is-active` prints one of these for a unit holding the host.
const HOLDING_STATES: [&str; 5] = [
    "active",
    "activating",
    "deactivating",
    "reloading",
    "refreshing",
];

/// The mail stack as systemd units.
#[derive(Debug, Clone)]
pub struct SystemdServices {
    systemctl: PathBuf,
    units: Vec<String>,
    env: BTreeMap<String, String>,
}

impl SystemdServices {
    pub fn from_config(section: &ServicesSection) -> Result<Self, DriverError> {
        if section.units.is_empty() {
            return Err(DriverError::InvalidConfig {
                section: "services",
                reason: "the systemd driver needs at least one unit".to_string(),
            });
        }
        if let Some(unit) = section.units.iter().find(|unit| unit.starts_with('-')) {
            return Err(DriverError::InvalidConfig {
                section: "services",
                reason: format!("`{unit}` is not a unit name"),
            });
        }
        Ok(SystemdServices {
            systemctl: section.systemctl_program(),
            units: section.units.clone(),
            env: section.env.clone(),
        })
    }

    /// `systemctl ARGUMENTS -- UNITS`; `--` so that no unit is read as an
    /// option.
    fn argv(&self, arguments: &[&str]) -> Vec<String> {
        let mut argv = vec![self.systemctl.display().to_string()];
        argv.extend(arguments.iter().map(|argument| argument.to_string()));
        argv.push("--".to_string());
        argv.extend(self.units.iter().cloned());
        argv
    }

    async fn run(
        &self,
        what: &'static str,
        arguments: &[&str],
        timeout: Duration,
    ) -> Result<CommandRun, DriverError> {
        run_command_with_stdout(what, &self.argv(arguments), &self.env, timeout).await
    }

    async fn run_to_success(
        &self,
        what: &'static str,
        arguments: &[&str],
        timeout: Duration,
    ) -> Result<(), DriverError> {
        let argv = self.argv(arguments);
        let run = run_command(what, &argv, &self.env, timeout).await?;
        require_success(what, &argv, run)
    }

    /// The kill of [`Services::kill`]; see the module docs.
    async fn kill_units(&self, timeout: Duration) -> Result<(), DriverError> {
        // Half the budget each; the stop job is only queued, so it answers
        // at once unless systemd itself is stuck.
        let half = timeout / 2;
        let queued = self
            .run_to_success("systemctl stop --no-block", &["stop", "--no-block"], half)
            .await;
        if let Err(error) = &queued {
            tracing::warn!(%error, "could not queue the stop jobs before killing the units");
        }
        let killed = self
            .run_to_success(
                "systemctl kill",
                &["kill", "--signal=SIGKILL"],
                timeout.saturating_sub(half),
            )
            .await;
        match killed {
            Ok(()) => Ok(()),
            // `systemctl kill` fails on units that have no process left
            // ("No main process to kill" and the like): stopped is what
            // was asked for, so read back before calling it a failure.
            Err(error) => match self.is_running().await {
                Ok(false) => Ok(()),
                _ => Err(error),
            },
        }
    }
}

#[async_trait]
impl Services for SystemdServices {
    fn describe(&self) -> String {
        format!(
            "systemd: {} via {}",
            self.units.join(", "),
            self.systemctl.display()
        )
    }

    async fn start(&self, timeout: Duration) -> Result<(), DriverError> {
        self.run_to_success("systemctl start", &["start"], timeout)
            .await
    }

    async fn stop(&self, timeout: Duration) -> Result<(), DriverError> {
        let stop_error = match self
            .run_to_success("systemctl stop", &["stop"], timeout)
            .await
        {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        tracing::warn!(error = %stop_error, "systemctl stop failed; killing the units");
        // The kill gets its own budget: a stop that used up a short timeout
        // must not leave the kill no time to run.
        match self.kill_units(timeout.max(KILL_COMMAND_MIN_TIMEOUT)).await {
            Ok(()) => {
                tracing::warn!(stop_error = %stop_error, "units stopped by systemctl kill");
                Ok(())
            }
            Err(kill_error) => Err(DriverError::StopAndKillFailed {
                stop: Box::new(stop_error),
                kill: Box::new(kill_error),
            }),
        }
    }

    async fn kill(&self, timeout: Duration) -> Result<(), DriverError> {
        self.kill_units(timeout).await
    }

    async fn is_running(&self) -> Result<bool, DriverError> {
        let run = self
            .run(
                "systemctl is-active",
                &["is-active"],
                STATUS_COMMAND_TIMEOUT,
            )
            .await?;
        let states: Vec<&str> = run
            .stdout
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect();
        // One state per unit, or systemctl did not get to ask (no systemd
        // as PID 1, no bus): then the answer is unknown, not "stopped".
        if states.len() != self.units.len() {
            return Err(DriverError::Command {
                what: "systemctl is-active",
                argv0: self.systemctl.display().to_string(),
                status: run.status.to_string(),
                stderr_tail: if run.stderr_tail.is_empty() {
                    format!(
                        "expected one state per unit ({}), got {:?}",
                        self.units.len(),
                        states
                    )
                } else {
                    run.stderr_tail
                },
            });
        }
        Ok(states.iter().any(|state| HOLDING_STATES.contains(state)))
    }
}
