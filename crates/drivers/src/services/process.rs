//! Running one operator-given command, bounded in time.
//!
//! - The command gets its own process group, so a timeout can kill it and
//!   everything it started that did not detach itself (`setsid`).
//! - stdin is `/dev/null`, stdout too unless the caller reads it
//!   ([`run_command_with_stdout`], for `systemctl is-active`); stderr is
//!   read into a small tail buffer by a drain task. The wait is for the command's *exit*, never for
//!   the end of its stderr: a daemon it forks inherits stderr and may keep
//!   it open for its whole life (the shell pitfall in lab-notes.md). The
//!   drain task keeps reading for as long as such a daemon holds the pipe,
//!   so the daemon never gets SIGPIPE from us.

use std::collections::BTreeMap;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use crate::DriverError;

/// How much of a command's stderr is kept for error messages.
pub const STDERR_TAIL_BYTES: usize = 1024;
/// After a failed command exits, how long to wait for the rest of its
/// stderr (a forked child may hold the pipe open, so not until EOF).
const STDERR_SETTLE: Duration = Duration::from_millis(100);

/// A command that ran to its end.
#[derive(Debug)]
pub struct CommandRun {
    pub status: ExitStatus,
    /// The last [`STDERR_TAIL_BYTES`] of stderr, lines joined with `; `.
    pub stderr_tail: String,
    /// The last [`STDERR_TAIL_BYTES`] of stdout as written (empty unless
    /// read with [`run_command_with_stdout`]).
    pub stdout: String,
}

/// The last bytes written to a pipe.
#[derive(Default)]
struct TailBuffer {
    bytes: Vec<u8>,
}

impl TailBuffer {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > STDERR_TAIL_BYTES {
            let excess = self.bytes.len() - STDERR_TAIL_BYTES;
            self.bytes.drain(..excess);
        }
    }

    fn raw_text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes)
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Runs `argv` with `env` added to the agent's environment and waits for it
/// to exit, at most `timeout`. On timeout the command's process group gets
/// SIGKILL and the error is [`DriverError::Timeout`]. `what` names the
/// command in errors ("start command").
pub async fn run_command(
    what: &'static str,
    argv: &[String],
    env: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<CommandRun, DriverError> {
    run(what, argv, env, timeout, false).await
}

/// As [`run_command`], and keeps the command's stdout (its last
/// [`STDERR_TAIL_BYTES`]) in [`CommandRun::stdout`].
pub async fn run_command_with_stdout(
    what: &'static str,
    argv: &[String],
    env: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<CommandRun, DriverError> {
    run(what, argv, env, timeout, true).await
}

/// Spawns a task copying `pipe` into a fresh tail buffer.
fn drain_into_tail(
    mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> (Arc<Mutex<TailBuffer>>, tokio::task::JoinHandle<()>) {
    let tail = Arc::new(Mutex::new(TailBuffer::default()));
    let task = {
        let tail = Arc::clone(&tail);
        tokio::spawn(async move {
            let mut chunk = [0u8; 512];
            while let Ok(read) = pipe.read(&mut chunk).await {
                if read == 0 {
                    break;
                }
                tail.lock().expect("tail lock").push(&chunk[..read]);
            }
        })
    };
    (tail, task)
}

async fn run(
    what: &'static str,
    argv: &[String],
    env: &BTreeMap<String, String>,
    timeout: Duration,
    keep_stdout: bool,
) -> Result<CommandRun, DriverError> {
    let (program, arguments) = argv
        .split_first()
        .ok_or(DriverError::NotConfigured { what })?;
    let mut child = Command::new(program)
        .args(arguments)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(if keep_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| DriverError::Spawn {
            what,
            argv0: program.clone(),
            source,
        })?;
    let process_group = child.id().map(|id| Pid::from_raw(id as i32));
    // If this future is dropped (a promotion abandoned mid-step), the
    // command must not live on and start the stack behind our back.
    let mut guard = KillOnDrop { process_group };

    let (tail, mut drain) = drain_into_tail(child.stderr.take().expect("stderr was piped"));
    let tail_text = || tail.lock().expect("tail lock").text();
    let mut stdout_drain = child.stdout.take().map(drain_into_tail);

    let waited = tokio::time::timeout(timeout, child.wait()).await;
    guard.process_group = None;
    match waited {
        Ok(Ok(status)) => {
            if !status.success() {
                // Let the drain catch the last words; the detached task
                // goes on alone if a forked child still holds the pipe.
                let _ = tokio::time::timeout(STDERR_SETTLE, &mut drain).await;
            }
            // The same for stdout, which the caller wants whole.
            let stdout = match &mut stdout_drain {
                Some((stdout_tail, stdout_task)) => {
                    let _ = tokio::time::timeout(STDERR_SETTLE, stdout_task).await;
                    stdout_tail.lock().expect("tail lock").raw_text()
                }
                None => String::new(),
            };
            Ok(CommandRun {
                status,
                stderr_tail: tail_text(),
                stdout,
            })
        }
        Ok(Err(source)) => Err(DriverError::Spawn {
            what,
            argv0: program.clone(),
            source,
        }),
        Err(_elapsed) => {
            if let Some(process_group) = process_group {
                // ESRCH: the group emptied between the timeout and now.
                let _ = killpg(process_group, Signal::SIGKILL);
            }
            // Reap it; SIGKILL cannot be ignored, so this is quick.
            let _ = child.wait().await;
            tracing::warn!(
                command = %program,
                stderr_tail = %tail_text(),
                "{what} timed out; killed its process group"
            );
            Err(DriverError::Timeout {
                what: format!("{what} `{program}`"),
                after_ms: timeout.as_millis() as u64,
            })
        }
    }
}

/// Kills a command's process group when dropped before being disarmed.
struct KillOnDrop {
    process_group: Option<Pid>,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(process_group) = self.process_group.take() {
            tracing::warn!(%process_group, "command abandoned while running; killing its process group");
            let _ = killpg(process_group, Signal::SIGKILL);
        }
    }
}

/// Turns a non-zero exit into [`DriverError::Command`].
pub fn require_success(
    what: &'static str,
    argv: &[String],
    run: CommandRun,
) -> Result<(), DriverError> {
    if run.status.success() {
        Ok(())
    } else {
        Err(DriverError::Command {
            what,
            argv0: argv.first().cloned().unwrap_or_default(),
            status: run.status.to_string(),
            stderr_tail: run.stderr_tail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes_as_one_line() {
        let mut tail = TailBuffer::default();
        tail.push(b"first line\n\n  second line  \n");
        assert_eq!(tail.text(), "first line; second line");
        tail.push(&vec![b'x'; STDERR_TAIL_BYTES]);
        assert_eq!(tail.text(), "x".repeat(STDERR_TAIL_BYTES));
    }
}
