//! A line-oriented connection (SMTP, IMAP, POP3) whose every read and
//! write is bounded by the probe's deadline and every line by a maximum
//! length, and which can turn into TLS in the middle (STARTTLS).

use std::io::ErrorKind;

use mailherd_config::CheckSection;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::{timed_out, tls};

/// Longest reply line read; SMTP allows 512 bytes, IMAP greetings with a
/// capability list run longer.
pub(crate) const MAX_LINE_BYTES: u64 = 4096;
/// Most lines of one multi-line reply; more is a broken server.
pub(crate) const MAX_REPLY_LINES: usize = 100;

/// A byte stream a dialogue runs over: plain TCP or TLS over it. Boxed so
/// that STARTTLS can wrap whatever the connection is now.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection read line by line, each read bounded by the deadline.
pub(crate) struct Conversation {
    stream: BufReader<Box<dyn Io>>,
    /// The check's whole timeout, for "timed out after N ms" messages.
    timeout_ms: u64,
}

impl Conversation {
    /// Connects to the check's address, with TLS from the first byte when
    /// the check says `tls = true`.
    pub(crate) async fn connect(
        check: &CheckSection,
        deadline: Instant,
    ) -> Result<Conversation, String> {
        let stream = connect_tcp(check, deadline).await?;
        let stream: Box<dyn Io> = if check.tls == Some(true) {
            tls::handshake(Box::new(stream), check, deadline).await?
        } else {
            Box::new(stream)
        };
        Ok(Conversation {
            stream: BufReader::new(stream),
            timeout_ms: check.timeout_ms,
        })
    }

    /// Turns the connection into TLS after the server agreed to STARTTLS.
    pub(crate) async fn start_tls(
        self,
        check: &CheckSection,
        deadline: Instant,
    ) -> Result<Conversation, String> {
        // Anything the server sent after its "go ahead" would be read as if
        // it came over TLS: the STARTTLS command injection of CVE-2011-0411.
        if !self.stream.buffer().is_empty() {
            return Err("the server sent data right after agreeing to STARTTLS".to_string());
        }
        let stream = tls::handshake(self.stream.into_inner(), check, deadline).await?;
        Ok(Conversation {
            stream: BufReader::new(stream),
            timeout_ms: self.timeout_ms,
        })
    }

    /// One line without its line ending; `what` names what was awaited.
    pub(crate) async fn read_line(
        &mut self,
        what: &str,
        deadline: Instant,
    ) -> Result<String, String> {
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

    /// Sends `line` and CRLF. `what` names the command in messages, so a
    /// line carrying a password is never quoted back.
    pub(crate) async fn send(
        &mut self,
        line: &str,
        what: &str,
        deadline: Instant,
    ) -> Result<(), String> {
        let line = format!("{line}\r\n");
        self.send_raw(line.as_bytes(), what, deadline).await
    }

    /// Sends bytes as they are (an SMTP message body).
    pub(crate) async fn send_raw(
        &mut self,
        bytes: &[u8],
        what: &str,
        deadline: Instant,
    ) -> Result<(), String> {
        let stream = self.stream.get_mut();
        tokio::time::timeout_at(deadline, async {
            stream.write_all(bytes).await?;
            // A TLS stream holds written data until flushed.
            stream.flush().await
        })
        .await
        .map_err(|_| timed_out(self.timeout_ms, &format!("the server to take {what}")))?
        .map_err(|error| format!("sending {what}: {error}"))
    }

    /// One SMTP reply, possibly multi-line (`250-…` lines then `250 …`).
    /// Returns the code and the lines.
    pub(crate) async fn read_smtp_reply(
        &mut self,
        what: &str,
        deadline: Instant,
    ) -> Result<(u16, Vec<String>), String> {
        let first = self.read_line(what, deadline).await?;
        let code = smtp_code(&first).ok_or_else(|| format!("malformed {what}: {first}"))?;
        let mut lines = vec![first];
        for _ in 0..MAX_REPLY_LINES {
            let last = lines.last().expect("one line at least");
            if last.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, lines));
            }
            let line = self.read_line(what, deadline).await?;
            if smtp_code(&line) != Some(code) {
                return Err(format!("malformed {what}: {line}"));
            }
            lines.push(line);
        }
        Err(format!("{what} has more than {MAX_REPLY_LINES} lines"))
    }
}

/// Connects to the check's address within the deadline.
pub(crate) async fn connect_tcp(
    check: &CheckSection,
    deadline: Instant,
) -> Result<TcpStream, String> {
    let address = check
        .address
        .ok_or_else(|| "no address configured".to_string())?;
    match tokio::time::timeout_at(deadline, TcpStream::connect(address)).await {
        Err(_) => Err(timed_out(check.timeout_ms, "connect")),
        Ok(Err(error)) if error.kind() == ErrorKind::ConnectionRefused => {
            Err("connect refused".to_string())
        }
        Ok(Err(error)) => Err(format!("connect: {error}")),
        Ok(Ok(stream)) => {
            // Probes exchange a few small lines; do not let Nagle hold
            // the EHLO back waiting for an ACK.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}

/// The three-digit code of an SMTP reply line, if it is one: `250-x`,
/// `250 x` and a bare `250`.
pub(crate) fn smtp_code(line: &str) -> Option<u16> {
    let bytes = line.as_bytes();
    if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    match bytes.get(3) {
        None | Some(b' ') | Some(b'-') => line[..3].parse().ok(),
        Some(_) => None,
    }
}

/// Whether `line` starts with `prefix`, ignoring ASCII case (IMAP and POP3
/// keywords are case-insensitive).
pub(crate) fn starts_with_ignore_case(line: &str, prefix: &str) -> bool {
    line.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
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
    fn prefixes_ignore_ascii_case() {
        assert!(starts_with_ignore_case("* ok Dovecot", "* OK"));
        assert!(!starts_with_ignore_case("* BYE", "* OK"));
        assert!(!starts_with_ignore_case("*", "* OK"));
        assert!(
            !starts_with_ignore_case("* Ö", "* OK"),
            "no panic on a char boundary"
        );
    }
}
