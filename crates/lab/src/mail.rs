//! The lab's mail client: SMTP submission with lettre and a small IMAP reader.
//!
//! Both talk to the floating IP from the client namespace (the caller enters
//! it), to the one lab mailbox. The IMAP side is a line-based client that
//! knows exactly what `mail list` needs: LOGIN, SELECT INBOX, FETCH of the
//! Subject header (literals included), LOGOUT.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Message, SmtpTransport, Transport};
use serde::Serialize;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends one message to `to` through the SMTP server at `server`; returns
/// the server's final reply (e.g. `250 2.0.0 Ok: queued as 4ABC`).
pub fn send(server: SocketAddr, to: &str, subject: &str, body: &str) -> Result<String> {
    let message = Message::builder()
        .from(
            "mailherd-lab <lab@client.lab.test>"
                .parse()
                .context("bad sender address")?,
        )
        .to(to
            .parse()
            .with_context(|| format!("bad recipient address {to}"))?)
        .subject(subject)
        .message_id(None)
        .body(body.to_string())
        .context("cannot build the message")?;
    let transport = SmtpTransport::builder_dangerous(server.ip().to_string())
        .port(server.port())
        .hello_name(ClientId::Domain("client.lab.test".to_string()))
        .timeout(Some(TIMEOUT))
        .build();
    let response = transport
        .send(&message)
        .with_context(|| format!("SMTP to {server} failed"))?;
    Ok(format!(
        "{} {}",
        response.code(),
        response.message().collect::<Vec<_>>().join(" ")
    ))
}

/// One message of the mailbox as `mail list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedMessage {
    pub seq: u32,
    pub uid: Option<u32>,
    pub subject: String,
}

/// Logs in to `server` and returns the Subject of every message in INBOX.
pub fn list_subjects(server: SocketAddr, user: &str, password: &str) -> Result<Vec<ListedMessage>> {
    let stream = TcpStream::connect_timeout(&server, TIMEOUT)
        .with_context(|| format!("cannot connect to IMAP {server}"))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let mut client = ImapClient {
        reader: BufReader::new(stream.try_clone()?),
        writer: stream,
        next_tag: 1,
    };
    let greeting = client.read_item()?;
    if !greeting.starts_with(b"* OK") {
        bail!(
            "IMAP {server} greeted with {:?}",
            String::from_utf8_lossy(&greeting)
        );
    }
    client
        .command(&format!("LOGIN {} {}", quote(user), quote(password)))
        .with_context(|| format!("IMAP login as {user} failed"))?;
    let select = client.command("SELECT INBOX")?;
    let exists = select
        .iter()
        .find_map(|item| parse_exists(item))
        .unwrap_or(0);
    let messages = if exists == 0 {
        Vec::new()
    } else {
        let fetched = client.command(&format!(
            "FETCH 1:{exists} (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])"
        ))?;
        fetched
            .iter()
            .filter_map(|item| parse_fetch(item))
            .collect()
    };
    let _ = client.command("LOGOUT");
    Ok(messages)
}

struct ImapClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    next_tag: u32,
}

impl ImapClient {
    /// Sends a tagged command and returns the untagged responses before its
    /// tagged completion; a completion other than OK is an error.
    fn command(&mut self, command: &str) -> Result<Vec<Vec<u8>>> {
        let tag = format!("a{}", self.next_tag);
        self.next_tag += 1;
        self.writer
            .write_all(format!("{tag} {command}\r\n").as_bytes())?;
        let mut untagged = Vec::new();
        loop {
            let item = self.read_item()?;
            if let Some(rest) = item.strip_prefix(format!("{tag} ").as_bytes()) {
                if rest.starts_with(b"OK") {
                    return Ok(untagged);
                }
                let verb = command.split_whitespace().next().unwrap_or(command);
                bail!(
                    "IMAP {verb} failed: {}",
                    String::from_utf8_lossy(rest).trim_end()
                );
            }
            untagged.push(item);
        }
    }

    /// Reads one response item: a line, with any `{N}` literals inlined.
    fn read_item(&mut self) -> Result<Vec<u8>> {
        let mut item = Vec::new();
        loop {
            let mut line = Vec::new();
            if self.reader.read_until(b'\n', &mut line)? == 0 {
                bail!("the IMAP server closed the connection");
            }
            item.extend_from_slice(&line);
            match literal_length(&line) {
                Some(length) => {
                    let mut literal = vec![0u8; length];
                    self.reader.read_exact(&mut literal)?;
                    item.extend_from_slice(&literal);
                }
                None => return Ok(item),
            }
        }
    }
}

/// `N` when `line` ends with an IMAP literal announcement `{N}\r\n`.
fn literal_length(line: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(line)
        .ok()?
        .trim_end_matches(['\r', '\n']);
    let open = text.strip_suffix('}')?.rfind('{')?;
    text[open + 1..text.len() - 1].parse().ok()
}

/// An IMAP quoted string.
fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `N` from `* N EXISTS`.
fn parse_exists(item: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(item).ok()?;
    let mut words = text.split_whitespace();
    (words.next()? == "*").then_some(())?;
    let count = words.next()?.parse().ok()?;
    words
        .next()?
        .eq_ignore_ascii_case("EXISTS")
        .then_some(count)
}

/// A `* N FETCH (UID u BODY[HEADER.FIELDS (SUBJECT)] {n}\r\nSubject: ...)` item.
fn parse_fetch(item: &[u8]) -> Option<ListedMessage> {
    let text = String::from_utf8_lossy(item);
    let mut words = text.split_whitespace();
    (words.next()? == "*").then_some(())?;
    let seq = words.next()?.parse().ok()?;
    if !words.next()?.eq_ignore_ascii_case("FETCH") {
        return None;
    }
    let uid = text.split_once("UID ").and_then(|(_, rest)| {
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    });
    Some(ListedMessage {
        seq,
        uid,
        subject: subject_header(&text).unwrap_or_default(),
    })
}

/// The unfolded value of the Subject header in `text`.
fn subject_header(text: &str) -> Option<String> {
    let mut lines = text
        .split("\r\n")
        .skip_while(|line| !line.to_ascii_lowercase().starts_with("subject:"));
    let first = lines.next()?;
    let mut value = first["subject:".len()..].trim().to_string();
    for continuation in lines.take_while(|line| line.starts_with([' ', '\t'])) {
        value.push(' ');
        value.push_str(continuation.trim());
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_literals_exists_and_fetch_items() {
        assert_eq!(
            literal_length(b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {19}\r\n"),
            Some(19)
        );
        assert_eq!(literal_length(b"* 1 EXISTS\r\n"), None);
        assert_eq!(parse_exists(b"* 3 EXISTS\r\n"), Some(3));
        assert_eq!(parse_exists(b"* 3 RECENT\r\n"), None);
        let item = b"* 2 FETCH (UID 7 BODY[HEADER.FIELDS (SUBJECT)] {36}\r\nSubject: a long\r\n subject folded\r\n\r\n)\r\n";
        let message = parse_fetch(item).unwrap();
        assert_eq!(
            message,
            ListedMessage {
                seq: 2,
                uid: Some(7),
                subject: "a long subject folded".to_string()
            }
        );
    }

    #[test]
    fn quotes_imap_strings() {
        assert_eq!(quote(r#"pa"ss\word"#), r#""pa\"ss\\word""#);
    }

    /// A scripted IMAP server: checks each command the client sends and
    /// answers as Dovecot would, literals included.
    #[test]
    fn lists_subjects_from_an_imap_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            writer.write_all(b"* OK ready\r\n").unwrap();
            let mut expect = |expected: &str, reply: &[u8]| {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                assert_eq!(line, expected);
                writer.write_all(reply).unwrap();
            };
            expect(
                "a1 LOGIN \"alice@lab.test\" \"pw\"\r\n",
                b"a1 OK Logged in\r\n",
            );
            expect("a2 SELECT INBOX\r\n", b"* FLAGS (\\Seen)\r\n* 2 EXISTS\r\n* 0 RECENT\r\na2 OK [READ-WRITE] Select completed\r\n");
            expect(
                "a3 FETCH 1:2 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n",
                b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: first\r\n\r\n)\r\n\
                  * 2 FETCH (UID 2 BODY[HEADER.FIELDS (SUBJECT)] {19}\r\nSubject: second\r\n\r\n)\r\n\
                  a3 OK Fetch completed\r\n",
            );
            expect("a4 LOGOUT\r\n", b"* BYE\r\na4 OK Logout completed\r\n");
        });
        let messages = list_subjects(address, "alice@lab.test", "pw").unwrap();
        server.join().unwrap();
        let subjects: Vec<&str> = messages
            .iter()
            .map(|message| message.subject.as_str())
            .collect();
        assert_eq!(subjects, ["first", "second"]);
        assert_eq!(messages[1].uid, Some(2));
    }

    #[test]
    fn a_refused_login_is_an_error_naming_the_user() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            writer.write_all(b"* OK ready\r\n").unwrap();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            writer
                .write_all(b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
                .unwrap();
        });
        let error = list_subjects(address, "alice@lab.test", "wrong").unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("alice@lab.test"), "{message}");
        assert!(message.contains("AUTHENTICATIONFAILED"), "{message}");
    }
}
