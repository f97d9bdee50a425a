//! The `command` services driver: the operator gives argv lists for start,
//! stop, status and kill (e.g. `postfix start`, `dovecot`, a script).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use mailherd_config::ServicesSection;

use super::process::{require_success, run_command};
use super::Services;
use crate::DriverError;

/// The least time the kill command gets when it is the stop's fallback.
pub const KILL_COMMAND_MIN_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a status command may take. The config has no setting for it;
/// a status command is expected to answer at once.
pub const STATUS_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The mail stack driven by operator-given commands.
#[derive(Debug, Clone)]
pub struct CommandServices {
    start: Vec<String>,
    stop: Vec<String>,
    /// Empty: `is_running` cannot be answered.
    status: Vec<String>,
    /// Empty: a failed stop is an error, nothing else is tried.
    kill: Vec<String>,
    env: BTreeMap<String, String>,
}

impl CommandServices {
    pub fn from_config(section: &ServicesSection) -> Result<Self, DriverError> {
        for (name, argv) in [("start", &section.start), ("stop", &section.stop)] {
            if argv.first().is_none_or(|program| program.is_empty()) {
                return Err(DriverError::InvalidConfig {
                    section: "services",
                    reason: format!("the command driver needs a {name} command"),
                });
            }
        }
        Ok(CommandServices {
            start: section.start.clone(),
            stop: section.stop.clone(),
            status: section.status.clone(),
            kill: section.kill.clone(),
            env: section.env.clone(),
        })
    }

    async fn run_to_success(
        &self,
        what: &'static str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<(), DriverError> {
        let run = run_command(what, argv, &self.env, timeout).await?;
        require_success(what, argv, run)
    }
}

/// `a b c` for messages; argv elements with spaces are quoted.
fn show_argv(argv: &[String]) -> String {
    argv.iter()
        .map(|word| {
            if word.contains(char::is_whitespace) {
                format!("{word:?}")
            } else {
                word.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[async_trait]
impl Services for CommandServices {
    fn describe(&self) -> String {
        format!(
            "command: start `{}`, stop `{}`",
            show_argv(&self.start),
            show_argv(&self.stop)
        )
    }

    async fn start(&self, timeout: Duration) -> Result<(), DriverError> {
        self.run_to_success("start command", &self.start, timeout)
            .await
    }

    async fn stop(&self, timeout: Duration) -> Result<(), DriverError> {
        let stop_error = match self
            .run_to_success("stop command", &self.stop, timeout)
            .await
        {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        if self.kill.is_empty() {
            return Err(stop_error);
        }
        tracing::warn!(error = %stop_error, "stop command failed; running the kill command");
        // The kill command gets its own budget: a stop that used up a short
        // timeout must not leave the kill command no time to run.
        match self
            .run_to_success(
                "kill command",
                &self.kill,
                timeout.max(KILL_COMMAND_MIN_TIMEOUT),
            )
            .await
        {
            Ok(()) => {
                tracing::warn!(stop_error = %stop_error, "stack stopped by the kill command");
                Ok(())
            }
            Err(kill_error) => Err(DriverError::StopAndKillFailed {
                stop: Box::new(stop_error),
                kill: Box::new(kill_error),
            }),
        }
    }

    async fn kill(&self, timeout: Duration) -> Result<(), DriverError> {
        if self.kill.is_empty() {
            return Err(DriverError::NotConfigured {
                what: "services kill command",
            });
        }
        self.run_to_success("kill command", &self.kill, timeout)
            .await
    }

    async fn is_running(&self) -> Result<bool, DriverError> {
        if self.status.is_empty() {
            return Err(DriverError::NotConfigured {
                what: "services status command",
            });
        }
        let run = run_command(
            "status command",
            &self.status,
            &self.env,
            STATUS_COMMAND_TIMEOUT,
        )
        .await?;
        match run.status.code() {
            Some(0) => Ok(true),
            Some(_) => Ok(false),
            // Killed by a signal: the status is unknown, not "stopped".
            None => Err(DriverError::Command {
                what: "status command",
                argv0: self.status[0].clone(),
                status: run.status.to_string(),
                stderr_tail: run.stderr_tail,
            }),
        }
    }
}
