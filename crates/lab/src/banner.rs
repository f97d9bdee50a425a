//! The banner stack: a tiny SMTP-like server for fast, fair failover timing.
//!
//! It greets with `220 <name>.lab.test ESMTP mailherd-lab banner`, answers
//! EHLO/HELO with 250, QUIT with 221 and anything else with 502. Started by
//! `stack.sh start` as `mailherd-lab banner --daemon`: it binds first, then
//! forks into the background and writes its pid file, so the port answers as
//! soon as the start command returns.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::topology::MAIL_DOMAIN;

/// An idle client is dropped after this long, so stuck probes cannot pile up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct BannerOptions {
    pub listen: SocketAddr,
    pub name: String,
    pub pidfile: Option<PathBuf>,
    pub log: Option<PathBuf>,
    pub daemon: bool,
}

/// Runs the banner server (in the background with `daemon`).
pub fn run(options: BannerOptions) -> Result<()> {
    let listener = TcpListener::bind(options.listen)
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    if options.daemon {
        // SAFETY: called from main before any thread exists.
        match unsafe { nix::unistd::fork() }.context("cannot fork")? {
            nix::unistd::ForkResult::Parent { child } => {
                if let Some(pidfile) = &options.pidfile {
                    std::fs::write(pidfile, format!("{child}\n"))
                        .with_context(|| format!("cannot write {}", pidfile.display()))?;
                }
                return Ok(());
            }
            nix::unistd::ForkResult::Child => {
                nix::unistd::setsid().context("cannot start a session")?;
                detach_stdio(options.log.as_deref())?;
            }
        }
    } else if let Some(pidfile) = &options.pidfile {
        std::fs::write(pidfile, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write {}", pidfile.display()))?;
    }
    eprintln!(
        "{} banner {} listening on {}",
        crate::probe::wall_clock(),
        options.name,
        options.listen
    );
    serve(listener, &options.name)
}

/// Points stdin at /dev/null and stdout/stderr at the log (or /dev/null):
/// the caller's pipes must not stay open in the daemon.
fn detach_stdio(log: Option<&Path>) -> Result<()> {
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let out = match log {
        Some(path) => OpenOptions::new().create(true).append(true).open(path)?,
        None => null.try_clone()?,
    };
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&out)?;
    nix::unistd::dup2_stderr(&out)?;
    Ok(())
}

/// Accepts connections forever, one thread each.
pub fn serve(listener: TcpListener, name: &str) -> Result<()> {
    let host = format!("{name}.{MAIL_DOMAIN}");
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let host = host.clone();
                std::thread::spawn(move || {
                    let _ = converse(stream, &host);
                });
            }
            // Transient accept errors (EMFILE, ECONNABORTED): keep serving.
            Err(error) => {
                eprintln!(
                    "{} banner: accept failed: {error}",
                    crate::probe::wall_clock()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    Ok(())
}

fn converse(stream: TcpStream, host: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    writer.write_all(format!("220 {host} ESMTP mailherd-lab banner\r\n").as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let (reply, close) = reply_to(&line, host);
        writer.write_all(reply.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}

/// The reply to one command line, and whether to close afterwards.
fn reply_to(line: &str, host: &str) -> (String, bool) {
    let verb = line
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    match verb.as_str() {
        "EHLO" | "HELO" => (format!("250 {host}\r\n"), false),
        "QUIT" => (format!("221 {host} closing\r\n"), true),
        _ => ("502 command not implemented\r\n".to_string(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn speaks_just_enough_smtp() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || serve(listener, "n2"));
        let mut stream = TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "220 n2.lab.test ESMTP mailherd-lab banner\r\n");
        for (command, expected) in [
            ("EHLO probe\r\n", "250 n2.lab.test\r\n"),
            ("helo probe\r\n", "250 n2.lab.test\r\n"),
            ("MAIL FROM:<a@b>\r\n", "502 command not implemented\r\n"),
            ("QUIT\r\n", "221 n2.lab.test closing\r\n"),
        ] {
            stream.write_all(command.as_bytes()).unwrap();
            line.clear();
            reader.read_line(&mut line).unwrap();
            assert_eq!(line, expected, "reply to {command:?}");
        }
        let mut rest = Vec::new();
        assert_eq!(
            reader.read_to_end(&mut rest).unwrap(),
            0,
            "QUIT closes the connection"
        );
    }
}
