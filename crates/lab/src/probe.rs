//! SMTP banner probes: one read (`probe`) or a live view of a failover (`watch`).
//!
//! Both run in the client namespace and connect to the floating IP, as a
//! mail client on the LAN would. `watch` prints a line only when what the
//! client sees changes: a new banner (which names the serving node) or an
//! outage with its cause, and how long each outage lasted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde_json::json;

/// Reads the first line the server sends on `address`, then says QUIT.
/// The error is a short human reason ("connection refused", "timeout").
pub fn read_banner(address: SocketAddr, timeout: Duration) -> std::result::Result<String, String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(describe)?;
    let remaining = timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
    stream.set_read_timeout(Some(remaining)).map_err(describe)?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") && line.len() < 1024 {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => line.push(byte[0]),
            Err(error) => return Err(describe(error)),
        }
    }
    if line.is_empty() {
        return Err("closed without a banner".to_string());
    }
    // Be polite so Postfix does not log a lost connection for every probe.
    let _ = stream.write_all(b"QUIT\r\n");
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

fn describe(error: std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => "connection refused".to_string(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timeout".to_string(),
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => "unreachable".to_string(),
        ErrorKind::ConnectionReset => "connection reset".to_string(),
        _ => error.to_string(),
    }
}

/// True for a banner that says the server is ready.
pub fn is_ready_banner(banner: &str) -> bool {
    banner.starts_with("220 ") || banner.starts_with("220-")
}

pub struct WatchOptions {
    pub address: SocketAddr,
    pub interval: Duration,
    pub duration: Duration,
    pub timeout: Duration,
    pub json: bool,
}

/// What a watch saw, for its closing line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WatchSummary {
    pub probes: u64,
    pub changes: u64,
    pub longest_outage_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Banner(String),
    Outage(String),
}

/// Probes every `interval` for `duration`, writing each change to `out`.
pub fn watch(options: &WatchOptions, out: &mut impl Write) -> Result<WatchSummary> {
    let started = Instant::now();
    let mut summary = WatchSummary::default();
    let mut last: Option<Seen> = None;
    let mut outage_started: Option<Instant> = None;
    let mut tick = 0u32;
    while started.elapsed() < options.duration {
        let probed_at = Instant::now();
        let wall_clock_at_probe = wall_clock();
        let seen = match read_banner(options.address, options.timeout) {
            Ok(banner) if is_ready_banner(&banner) => Seen::Banner(banner),
            Ok(other) => Seen::Outage(format!("not ready: {other}")),
            Err(reason) => Seen::Outage(reason),
        };
        summary.probes += 1;
        let elapsed_ms = probed_at.duration_since(started).as_millis() as u64;
        if last.as_ref() != Some(&seen) {
            summary.changes += 1;
            let outage_ms = match (&seen, outage_started) {
                (Seen::Banner(_), Some(since)) => Some(probed_at.duration_since(since).as_millis() as u64),
                _ => None,
            };
            if let Some(ms) = outage_ms {
                summary.longest_outage_ms = summary.longest_outage_ms.max(ms);
                outage_started = None;
            }
            if matches!(seen, Seen::Outage(_)) && outage_started.is_none() {
                outage_started = Some(probed_at);
            }
            print_change(out, options.json, &wall_clock_at_probe, elapsed_ms, &seen, outage_ms)?;
            last = Some(seen);
        }
        tick += 1;
        let next = started + options.interval * tick;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    if let Some(since) = outage_started {
        summary.longest_outage_ms = summary.longest_outage_ms.max(since.elapsed().as_millis() as u64);
    }
    if options.json {
        writeln!(
            out,
            "{}",
            json!({"summary": {"probes": summary.probes, "changes": summary.changes, "longest_outage_ms": summary.longest_outage_ms}})
        )?;
    } else {
        writeln!(
            out,
            "{} probes, {} changes, longest outage {} ms",
            summary.probes, summary.changes, summary.longest_outage_ms
        )?;
    }
    Ok(summary)
}

fn print_change(
    out: &mut impl Write,
    json: bool,
    at: &str,
    elapsed_ms: u64,
    seen: &Seen,
    outage_ms: Option<u64>,
) -> Result<()> {
    if json {
        let mut line = json!({"at": at, "elapsed_ms": elapsed_ms});
        match seen {
            Seen::Banner(banner) => line["banner"] = json!(banner),
            Seen::Outage(reason) => line["outage"] = json!(reason),
        }
        if let Some(ms) = outage_ms {
            line["outage_ms"] = json!(ms);
        }
        writeln!(out, "{line}")?;
    } else {
        match seen {
            Seen::Banner(banner) => {
                let after = outage_ms.map(|ms| format!(" (after {ms} ms without a banner)")).unwrap_or_default();
                writeln!(out, "{at} +{elapsed_ms}ms banner: {banner}{after}")?;
            }
            Seen::Outage(reason) => writeln!(out, "{at} +{elapsed_ms}ms outage: {reason}")?,
        }
    }
    out.flush()?;
    Ok(())
}

/// UTC wall-clock time with milliseconds, e.g. `2025-03-01T12:34:56.789Z`.
pub fn wall_clock() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    format_utc(now.as_millis() as u64)
}

fn format_utc(unix_ms: u64) -> String {
    let seconds = unix_ms / 1000;
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        unix_ms % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn formats_utc_times() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(format_utc(1_735_689_599_999), "2024-12-31T23:59:59.999Z");
    }

    #[test]
    fn reads_a_banner_and_reports_refusals() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || crate::banner::serve(listener, "n1"));
        let banner = read_banner(address, Duration::from_secs(5)).unwrap();
        assert_eq!(banner, "220 n1.lab.test ESMTP mailherd-lab banner");
        assert!(is_ready_banner(&banner));

        // A port nobody listens on: bind, learn the port, close.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert_eq!(read_banner(closed, Duration::from_secs(5)).unwrap_err(), "connection refused");
    }

    #[test]
    fn watch_prints_changes_only_and_measures_the_outage() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        // Serve three connections, then stop accepting for good (the
        // listener closes): the watch sees a banner, then refusals.
        std::thread::spawn(move || {
            for stream in listener.incoming().take(3) {
                let mut stream = stream.unwrap();
                stream.write_all(b"220 x ESMTP\r\n").unwrap();
            }
        });
        let options = WatchOptions {
            address,
            interval: Duration::from_millis(20),
            duration: Duration::from_millis(300),
            timeout: Duration::from_millis(200),
            json: false,
        };
        let mut out = Vec::new();
        let summary = watch(&options, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(summary.changes, 2, "{text}");
        assert!(lines[0].ends_with("banner: 220 x ESMTP"), "{text}");
        assert!(lines[1].ends_with("outage: connection refused"), "{text}");
        assert!(summary.probes >= 5, "{text}");
        assert!(summary.longest_outage_ms > 0, "{text}");
    }
}
