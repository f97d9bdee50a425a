//! Health probes of the mail stack: one attempt per call, never longer than
//! the check's timeout, always answering with a [`ProbeResult`] (a probe
//! that cannot reach the service is a failed probe, not an error; a probe
//! that hangs or panics is one too).
//!
//! Counting successes and failures into rise/fall verdicts is not done
//! here: it belongs to the pure core, which gets these results as events.
//!
//! # Layout
//! - this file: [`ProbeResult`], [`probe`] (the one entry point: it runs
//!   the check's kind under the deadline), `tcp` (connect);
//! - `conversation`: a line-oriented connection whose every read is bounded
//!   by the deadline and a maximum line length, and which can STARTTLS;
//! - `tls`: the rustls client configurations (system roots, a CA file, or
//!   no verification);
//! - one module per dialogue: `smtp` (banner, EHLO, STARTTLS, a test
//!   message), `imap` (greeting, CAPABILITY, STARTTLS, LOGIN), `pop3`
//!   (greeting, CAPA, STLS, USER/PASS), `http` (GET, status, body text);
//! - one module per local check: `docker` (container running and healthy,
//!   from the Engine API), `systemd` (`systemctl is-active`), `mariadb`
//!   (login, `SELECT 1`; `mariadb_replication`: IO/SQL threads, lag and
//!   errors, judged by `mailherd_mariadb::health`), `mount` (mount point, writable), `postfix_queue`
//!   (queue files under a limit).

mod conversation;
mod docker;
mod http;
mod imap;
mod mariadb;
mod mount;
mod pop3;
mod postfix_queue;
mod smtp;
mod systemd;
mod tls;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use mailherd_config::{CheckKind, CheckSection, Secret};
use tokio::time::Instant;

use conversation::{Conversation, MAX_REPLY_LINES};

/// The EHLO name when the check names none.
pub const DEFAULT_EHLO_NAME: &str = "mailherd-probe";
/// The longest `detail`; server text beyond it is cut.
const MAX_DETAIL_CHARS: usize = 200;
/// How long the polite goodbye (QUIT/LOGOUT reply) may add to a probe that
/// already passed: the verdict is known, so do not spend the whole timeout
/// on a server that is slow to say goodbye.
const GOODBYE_GRACE: Duration = Duration::from_millis(250);
/// How long past the deadline [`probe`] waits for an attempt before giving
/// up on it. Every step of every dialogue is bounded by the deadline itself
/// and says which step timed out; this backstop only catches a step that
/// forgot to be, so a bug cannot hang the monitor.
const BACKSTOP_SLACK: Duration = Duration::from_millis(100);

/// The outcome of one probe attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub ok: bool,
    /// From the start of the attempt to the verdict.
    pub latency_ms: u64,
    /// What the server said or what went wrong, e.g. `220 n1.lab.test
    /// ESMTP` or `connect refused`.
    pub detail: String,
}

/// Runs one attempt of `check`, bounded by `check.timeout_ms`.
///
/// The attempt runs as its own task, so that a panic in a dialogue or a
/// client library is a failed probe rather than a dead monitor, and so
/// that an attempt still running at the deadline is aborted.
pub async fn probe(check: &CheckSection) -> ProbeResult {
    let started = Instant::now();
    let deadline = started + Duration::from_millis(check.timeout_ms);
    let owned = check.clone();
    let attempt = tokio::spawn(async move {
        let outcome = run(&owned, deadline).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let (ok, detail) = match outcome {
            Ok(Verdict { detail, goodbye }) => {
                if let Some(goodbye) = goodbye {
                    goodbye.finish(deadline).await;
                }
                (true, detail)
            }
            Err(failure) => (false, failure),
        };
        (ok, latency_ms, detail)
    });
    // Aborts the attempt when it runs past the backstop, and also when the
    // caller stops waiting (drops this future, e.g. at shutdown).
    let _abort_on_drop = AbortOnDrop(attempt.abort_handle());
    let (ok, latency_ms, detail) =
        match tokio::time::timeout_at(deadline + BACKSTOP_SLACK, attempt).await {
            Ok(Ok(result)) => result,
            Ok(Err(join_error)) => (
                false,
                started.elapsed().as_millis() as u64,
                format!(
                    "{} probe crashed: {}",
                    check.kind.as_str(),
                    panic_text(join_error)
                ),
            ),
            Err(_) => (
                false,
                started.elapsed().as_millis() as u64,
                timed_out(
                    check.timeout_ms,
                    &format!("the {} probe", check.kind.as_str()),
                ),
            ),
        };
    ProbeResult {
        ok,
        latency_ms,
        detail: truncate(&detail),
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The dialogue of the check's kind.
async fn run(check: &CheckSection, deadline: Instant) -> Result<Verdict, String> {
    match check.kind {
        CheckKind::Tcp => probe_tcp(check, deadline).await,
        CheckKind::Smtp => smtp::probe(check, deadline).await,
        CheckKind::Imap => imap::probe(check, deadline).await,
        CheckKind::Pop3 => pop3::probe(check, deadline).await,
        CheckKind::Http | CheckKind::Https => http::probe(check, deadline).await,
        CheckKind::Docker => docker::probe(check, deadline).await,
        CheckKind::Systemd => systemd::probe(check, deadline).await,
        CheckKind::Mariadb => mariadb::probe(check, deadline).await,
        CheckKind::MariadbReplication => mariadb::probe_replication(check, deadline).await,
        CheckKind::Mount => mount::probe(check, deadline).await,
        CheckKind::PostfixQueue => postfix_queue::probe(check, deadline).await,
    }
}

fn panic_text(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|text| text.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string()),
        Err(error) => error.to_string(),
    }
}

/// A passed probe, with the goodbye still to say.
struct Verdict {
    detail: String,
    goodbye: Option<Goodbye>,
}

/// The end of a dialogue after the verdict (QUIT, LOGOUT, a database
/// disconnect), bounded by the deadline and [`GOODBYE_GRACE`]; its outcome
/// is ignored.
struct Goodbye(Pin<Box<dyn Future<Output = ()> + Send>>);

impl Goodbye {
    /// Send `command`, read until a line that starts with `until`.
    fn line(conversation: Conversation, command: &'static str, until: &'static str) -> Goodbye {
        Goodbye::line_owned(conversation, command.to_string(), until.to_string())
    }

    fn line_owned(mut conversation: Conversation, command: String, until: String) -> Goodbye {
        Goodbye::future(async move {
            // The future is bounded from outside; reads need a deadline
            // too, and the outer one is at most this far away.
            let deadline = Instant::now() + GOODBYE_GRACE;
            let _ = async {
                conversation.send(&command, &command, deadline).await?;
                for _ in 0..MAX_REPLY_LINES {
                    if conversation
                        .read_line("goodbye", deadline)
                        .await?
                        .starts_with(until.as_str())
                    {
                        break;
                    }
                }
                Ok::<(), String>(())
            }
            .await;
        })
    }

    fn future(future: impl Future<Output = ()> + Send + 'static) -> Goodbye {
        Goodbye(Box::pin(future))
    }

    async fn finish(self, deadline: Instant) {
        let deadline = deadline.min(Instant::now() + GOODBYE_GRACE);
        let _ = tokio::time::timeout_at(deadline, self.0).await;
    }
}

fn truncate(text: &str) -> String {
    if text.chars().count() <= MAX_DETAIL_CHARS {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(MAX_DETAIL_CHARS).collect();
        cut.push('…');
        cut
    }
}

fn timed_out(timeout_ms: u64, what: &str) -> String {
    format!("timed out after {timeout_ms} ms waiting for {what}")
}

async fn probe_tcp(check: &CheckSection, deadline: Instant) -> Result<Verdict, String> {
    conversation::connect_tcp(check, deadline).await?;
    Ok(Verdict {
        detail: match check.address {
            Some(address) => format!("connected to {address}"),
            None => "connected".to_string(),
        },
        goodbye: None,
    })
}

/// The password of a login, from `password_file` or `password`. The file
/// is read at every attempt; its problems are the probe's failure.
fn login_password(check: &CheckSection) -> Result<Secret, String> {
    match check.read_password() {
        Ok(Some(password)) => Ok(password),
        Ok(None) => Err("no password or password_file configured".to_string()),
        Err(error) => Err(format!("password_file: {error}")),
    }
}

/// `error: cause: cause`, skipping a cause whose text the previous ones
/// already hold (client libraries often repeat their source).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_details_are_cut() {
        let long = "x".repeat(MAX_DETAIL_CHARS + 50);
        let cut = truncate(&long);
        assert_eq!(cut.chars().count(), MAX_DETAIL_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short"), "short");
    }
}
