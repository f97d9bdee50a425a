//! Health probes of the mail stack: one attempt per call, never longer than
//! the check's timeout, always answering with a [`ProbeResult`] (a probe
//! that cannot reach the service is a failed probe, not an error).
//!
//! Counting successes and failures into rise/fall verdicts is not done
//! here: it belongs to the pure core, which gets these results as events.
//!
//! # Layout
//! - this file: [`ProbeResult`], [`probe`] and the per-kind dialogues
//!   (`tcp`: connect; `smtp`: banner, EHLO, QUIT; `imap`: greeting,
//!   LOGOUT);
//! - `Conversation`: a line-oriented connection whose every read is bounded
//!   by the probe's deadline and by a maximum line length.

use std::io::ErrorKind;
use std::time::Duration;

use mailherd_config::{CheckKind, CheckSection};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The EHLO name when the check names none.
pub const DEFAULT_EHLO_NAME: &str = "mailherd-probe";
/// Longest reply line read; SMTP allows 512 bytes, IMAP greetings with a
/// capability list run longer.
const MAX_LINE_BYTES: u64 = 4096;
/// Most lines of one multi-line SMTP reply; more is a broken server.
const MAX_REPLY_LINES: usize = 100;
/// The longest `detail`; server text beyond it is cut.
const MAX_DETAIL_CHARS: usize = 200;
/// How long the polite goodbye (QUIT/LOGOUT reply) may add to a probe that
/// already passed: the verdict is known, so do not spend the whole timeout
/// on a server that is slow to say goodbye.
const GOODBYE_GRACE: Duration = Duration::from_millis(250);

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
pub async fn probe(check: &CheckSection) -> ProbeResult {
    let started = Instant::now();
    let deadline = started + Duration::from_millis(check.timeout_ms);
    let outcome = match check.kind {
        CheckKind::Tcp => probe_tcp(check, deadline).await,
        CheckKind::Smtp => probe_smtp(check, deadline).await,
        CheckKind::Imap => probe_imap(check, deadline).await,
    };
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
    ProbeResult {
        ok,
        latency_ms,
        detail: truncate(&detail),
    }
}

/// A passed probe, with the goodbye still to say.
struct Verdict {
    detail: String,
    goodbye: Option<Goodbye>,
}

/// The end of a dialogue after the verdict: send a command, read until a
/// line that starts with `until`, ignore the outcome.
struct Goodbye {
    conversation: Conversation,
    command: &'static str,
    until: &'static str,
}

impl Goodbye {
    async fn finish(mut self, deadline: Instant) {
        let deadline = deadline.min(Instant::now() + GOODBYE_GRACE);
        let conversation = &mut self.conversation;
        let _ = tokio::time::timeout_at(deadline, async {
            conversation.send(self.command, deadline).await?;
            for _ in 0..MAX_REPLY_LINES {
                if conversation
                    .read_line("goodbye", deadline)
                    .await?
                    .starts_with(self.until)
                {
                    break;
                }
            }
            Ok::<(), String>(())
        })
        .await;
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

/// A connection read line by line, each read bounded by the deadline.
struct Conversation {
    stream: BufReader<TcpStream>,
    /// The check's whole timeout, for "timed out after N ms" messages.
    timeout_ms: u64,
}

impl Conversation {
    async fn connect(check: &CheckSection, deadline: Instant) -> Result<Conversation, String> {
        match tokio::time::timeout_at(deadline, TcpStream::connect(check.address)).await {
            Err(_) => Err(timed_out(check.timeout_ms, "connect")),
            Ok(Err(error)) if error.kind() == ErrorKind::ConnectionRefused => {
                Err("connect refused".to_string())
            }
            Ok(Err(error)) => Err(format!("connect: {error}")),
            Ok(Ok(stream)) => {
                // Probes exchange a few small lines; do not let Nagle hold
                // the EHLO back waiting for an ACK.
                let _ = stream.set_nodelay(true);
                Ok(Conversation {
                    stream: BufReader::new(stream),
                    timeout_ms: check.timeout_ms,
                })
            }
        }
    }

    /// One line without its line ending; `what` names what was awaited.
    async fn read_line(&mut self, what: &str, deadline: Instant) -> Result<String, String> {
        let mut line = Vec::new();
        let read = tokio::time::timeout_at(
            deadline,
            (&mut self.stream)
                .take(MAX_LINE_BYTES)
                .read_until(b'\n', &mut line),
        )
        .await
        .map_err(|_| timed_out(self.timeout_ms, what))?
        .map_err(|error| format!("reading {what}: {error}"))?;
        if read == 0 {
            return Err(format!("connection closed before {what}"));
        }
        if line.last() != Some(&b'\n') && read as u64 == MAX_LINE_BYTES {
            return Err(format!("{what}: line longer than {MAX_LINE_BYTES} bytes"));
        }
        let text = String::from_utf8_lossy(&line);
        Ok(text.trim_end_matches(['\r', '\n']).to_string())
    }

    async fn send(&mut self, command: &str, deadline: Instant) -> Result<(), String> {
        let line = format!("{command}\r\n");
        tokio::time::timeout_at(deadline, self.stream.get_mut().write_all(line.as_bytes()))
            .await
            .map_err(|_| timed_out(self.timeout_ms, "the server to take a command"))?
            .map_err(|error| format!("sending {command:?}: {error}"))
    }

    /// One SMTP reply, possibly multi-line (`250-…` lines then `250 …`).
    /// Returns the code and the first line.
    async fn read_smtp_reply(
        &mut self,
        what: &str,
        deadline: Instant,
    ) -> Result<(u16, String), String> {
        let first = self.read_line(what, deadline).await?;
        let code = smtp_code(&first).ok_or_else(|| format!("malformed {what}: {first}"))?;
        let mut line = first.clone();
        for _ in 0..MAX_REPLY_LINES {
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, first));
            }
            line = self.read_line(what, deadline).await?;
            if smtp_code(&line) != Some(code) {
                return Err(format!("malformed {what}: {line}"));
            }
        }
        Err(format!("{what} has more than {MAX_REPLY_LINES} lines"))
    }
}

/// The three-digit code of an SMTP reply line, if it is one: `250-x`,
/// `250 x` and a bare `250`.
fn smtp_code(line: &str) -> Option<u16> {
    let bytes = line.as_bytes();
    if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    match bytes.get(3) {
        None | Some(b' ') | Some(b'-') => line[..3].parse().ok(),
        Some(_) => None,
    }
}

async fn probe_tcp(check: &CheckSection, deadline: Instant) -> Result<Verdict, String> {
    Conversation::connect(check, deadline).await?;
    Ok(Verdict {
        detail: format!("connected to {}", check.address),
        goodbye: None,
    })
}

async fn probe_smtp(check: &CheckSection, deadline: Instant) -> Result<Verdict, String> {
    let mut conversation = Conversation::connect(check, deadline).await?;
    let (code, banner) = conversation.read_smtp_reply("banner", deadline).await?;
    if code != 220 {
        return Err(format!("unexpected banner: {banner}"));
    }
    let ehlo_name = check.ehlo_name.as_deref().unwrap_or(DEFAULT_EHLO_NAME);
    conversation
        .send(&format!("EHLO {ehlo_name}"), deadline)
        .await?;
    let (code, reply) = conversation.read_smtp_reply("EHLO reply", deadline).await?;
    if code != 250 {
        return Err(format!("EHLO rejected: {reply}"));
    }
    Ok(Verdict {
        detail: banner,
        goodbye: Some(Goodbye {
            conversation,
            command: "QUIT",
            until: "221",
        }),
    })
}

async fn probe_imap(check: &CheckSection, deadline: Instant) -> Result<Verdict, String> {
    let mut conversation = Conversation::connect(check, deadline).await?;
    let greeting = conversation.read_line("greeting", deadline).await?;
    // PREAUTH is a server that is up and trusts the connection already.
    let accepted = ["* OK", "* PREAUTH"].iter().any(|prefix| {
        greeting
            .get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    });
    if !accepted {
        return Err(format!("unexpected greeting: {greeting}"));
    }
    Ok(Verdict {
        detail: greeting,
        goodbye: Some(Goodbye {
            conversation,
            command: "a1 LOGOUT",
            until: "a1 ",
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_codes_are_three_digits_then_space_dash_or_end() {
        assert_eq!(smtp_code("220 n1.lab.test ESMTP"), Some(220));
        assert_eq!(smtp_code("250-PIPELINING"), Some(250));
        assert_eq!(smtp_code("250"), Some(250));
        assert_eq!(smtp_code("2500 x"), None);
        assert_eq!(smtp_code("22"), None);
        assert_eq!(smtp_code("hello"), None);
    }

    #[test]
    fn long_details_are_cut() {
        let long = "x".repeat(MAX_DETAIL_CHARS + 50);
        let cut = truncate(&long);
        assert_eq!(cut.chars().count(), MAX_DETAIL_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("short"), "short");
    }
}
