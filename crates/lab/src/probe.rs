//! SMTP banner probes: one read (`probe`) or a live view of a failover (`watch`).
//!
//! Both run in the client namespace and connect to the floating IP, as a
//! mail client on the LAN would. `watch` prints a line only when what the
//! client sees changes: a new banner (which names the serving node) or an
//! outage with its cause, and how long each outage lasted.

use std::collections::BTreeMap;
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
    let remaining = timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
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

/// `check-banner`: succeeds when `address` greets with a ready banner
/// within `timeout`; the error says what came instead.
pub fn check_banner(address: SocketAddr, timeout: Duration) -> Result<()> {
    match read_banner(address, timeout) {
        Ok(banner) if is_ready_banner(&banner) => Ok(()),
        Ok(banner) => anyhow::bail!("{address} is not ready: {banner:?}"),
        Err(reason) => anyhow::bail!("no banner from {address}: {reason}"),
    }
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

/// One finished probe.
struct ProbeResult {
    /// Position in the probe schedule: results are reported in this order.
    tick: u32,
    probed_at: Instant,
    wall_clock: String,
    seen: Seen,
}

/// Starts a probe every `interval` for `duration`, writing each change of
/// what the client sees to `out`.
///
/// Probes start on schedule even while earlier ones still wait for their
/// timeout (each runs on its own thread): a probe stuck on an address that
/// moved must not blur when the first banner of the new master came. The
/// results are reported in schedule order.
pub fn watch(options: &WatchOptions, out: &mut impl Write) -> Result<WatchSummary> {
    let started = Instant::now();
    let mut report = ChangeReport::new(started, options.json);
    let (sender, receiver) = std::sync::mpsc::channel::<ProbeResult>();
    std::thread::scope(|scope| -> Result<()> {
        let mut scheduled = 0u32;
        let mut finished: BTreeMap<u32, ProbeResult> = BTreeMap::new();
        let mut next_to_report = 0u32;
        loop {
            let next_start = started + options.interval * scheduled;
            let scheduling = next_start.duration_since(started) < options.duration;
            if scheduling && Instant::now() >= next_start {
                let sender = sender.clone();
                let (address, timeout, tick) = (options.address, options.timeout, scheduled);
                // Threads inherit the network namespace of the thread that
                // spawns them, so the probes run where `watch` runs.
                scope.spawn(move || {
                    let probed_at = Instant::now();
                    let wall_clock = wall_clock();
                    let seen = match read_banner(address, timeout) {
                        Ok(banner) if is_ready_banner(&banner) => Seen::Banner(banner),
                        Ok(other) => Seen::Outage(format!("not ready: {other}")),
                        Err(reason) => Seen::Outage(reason),
                    };
                    let _ = sender.send(ProbeResult {
                        tick,
                        probed_at,
                        wall_clock,
                        seen,
                    });
                });
                scheduled += 1;
                continue;
            }
            while let Some(result) = finished.remove(&next_to_report) {
                report.record(out, result)?;
                next_to_report += 1;
            }
            if !scheduling && next_to_report == scheduled {
                return Ok(());
            }
            let wait = if scheduling {
                next_start.saturating_duration_since(Instant::now())
            } else {
                options.timeout + Duration::from_secs(1)
            };
            match receiver.recv_timeout(wait) {
                Ok(result) => {
                    finished.insert(result.tick, result);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
    })?;
    report.finish(out)
}

/// Turns probe results, in schedule order, into change lines and a summary.
struct ChangeReport {
    started: Instant,
    json: bool,
    summary: WatchSummary,
    last: Option<Seen>,
    /// When the current outage began (first failed probe after a banner).
    outage_started: Option<Instant>,
}

impl ChangeReport {
    fn new(started: Instant, json: bool) -> ChangeReport {
        ChangeReport {
            started,
            json,
            summary: WatchSummary::default(),
            last: None,
            outage_started: None,
        }
    }

    fn record(&mut self, out: &mut impl Write, result: ProbeResult) -> Result<()> {
        self.summary.probes += 1;
        if self.last.as_ref() == Some(&result.seen) {
            return Ok(());
        }
        self.summary.changes += 1;
        let outage_ms = match (&result.seen, self.outage_started) {
            (Seen::Banner(_), Some(since)) => Some(
                result
                    .probed_at
                    .saturating_duration_since(since)
                    .as_millis() as u64,
            ),
            _ => None,
        };
        if let Some(ms) = outage_ms {
            self.summary.longest_outage_ms = self.summary.longest_outage_ms.max(ms);
            self.outage_started = None;
        }
        if matches!(result.seen, Seen::Outage(_)) && self.outage_started.is_none() {
            self.outage_started = Some(result.probed_at);
        }
        let elapsed_ms = result
            .probed_at
            .saturating_duration_since(self.started)
            .as_millis() as u64;
        print_change(
            out,
            self.json,
            &result.wall_clock,
            elapsed_ms,
            &result.seen,
            outage_ms,
        )?;
        self.last = Some(result.seen);
        Ok(())
    }

    fn finish(mut self, out: &mut impl Write) -> Result<WatchSummary> {
        // An outage still going on when the watch ends counts until now.
        if let Some(since) = self.outage_started {
            self.summary.longest_outage_ms = self
                .summary
                .longest_outage_ms
                .max(since.elapsed().as_millis() as u64);
        }
        let summary = self.summary;
        if self.json {
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
                let after = outage_ms
                    .map(|ms| format!(" (after {ms} ms without a banner)"))
                    .unwrap_or_default();
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
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
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
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
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
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert_eq!(
            read_banner(closed, Duration::from_secs(5)).unwrap_err(),
            "connection refused"
        );
    }

    #[test]
    fn a_hanging_probe_does_not_delay_the_next_ones() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        // The first client gets nothing (it hangs until its timeout); every
        // later one gets a banner at once.
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for (index, stream) in listener.incoming().enumerate() {
                let mut stream = stream.unwrap();
                if index == 0 {
                    held.push(stream);
                } else {
                    let _ = stream.write_all(b"220 late ESMTP\r\n");
                }
            }
        });
        let options = WatchOptions {
            address,
            interval: Duration::from_millis(20),
            duration: Duration::from_millis(100),
            timeout: Duration::from_secs(2),
            json: true,
        };
        let mut out = Vec::new();
        watch(&options, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        // Reported in schedule order: the hung probe first...
        assert_eq!(lines[0]["outage"], "timeout", "{text}");
        // ...then the banner, from a probe that started long before the
        // first one gave up.
        assert_eq!(lines[1]["banner"], "220 late ESMTP", "{text}");
        assert!(lines[1]["elapsed_ms"].as_u64().unwrap() < 1000, "{text}");
        assert!(
            lines.last().unwrap()["summary"]["probes"].as_u64().unwrap() >= 2,
            "{text}"
        );
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
        assert!(lines[0].ends_with("banner: 220 x ESMTP"), "{text}");
        assert!(lines[1].contains("outage: "), "{text}");
        // Once the server is gone, no banner comes back.
        let change_lines = &lines[..lines.len() - 1];
        assert!(
            change_lines[1..]
                .iter()
                .all(|line| line.contains("outage: ")),
            "{text}"
        );
        assert!(lines.last().unwrap().contains("probes"), "{text}");
        assert!(summary.changes >= 2, "{text}");
        assert!(summary.probes >= 5, "{text}");
        assert!(summary.longest_outage_ms > 0, "{text}");
    }
}
