//! What `bench` and `nemesis` share: a client that probes the floating IP
//! all along, a mail load, the invariant sampler in the background, the
//! wait for a settled cluster, and the agent's footprint.
//!
//! Everything here watches the lab from outside, as a client or the host
//! would: the figures are what a user of the mail service sees.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::state::{LabState, MailAccount, NodeState};
use crate::topology;

/// How often the client probes the floating IP (design §7: every 20 ms).
pub const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// How long one probe may wait for a banner.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// One probe that read a ready banner.
#[derive(Debug, Clone)]
struct Answer {
    /// When the banner had arrived.
    at: Instant,
    /// The node the banner names (`220 n2.lab.test ...`).
    node: String,
}

/// Probes the floating IP from the client namespace every
/// [`PROBE_INTERVAL`] until stopped, each probe on its own thread (a probe
/// stuck on an address that moved must not delay the next one), and keeps
/// every ready banner with the time it arrived.
pub struct Prober {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Prober {
    pub fn start(state: &LabState) -> Result<Prober> {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let namespace = state.client.namespace.clone();
        let address = topology::smtp_address();
        let thread = {
            let (stop, answers) = (stop.clone(), answers.clone());
            std::thread::Builder::new()
                .name("prober".into())
                .spawn(move || probe_until_stopped(&namespace, address, &stop, &answers))
                .context("cannot start the prober thread")?
        };
        Ok(Prober {
            stop,
            answers,
            thread: Some(thread),
        })
    }

    /// When the first banner from a node other than `old` arrived after
    /// `since`, waiting up to `limit` for it.
    pub fn first_banner_after(
        &self,
        since: Instant,
        old: &str,
        limit: Duration,
    ) -> Option<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            let found = self
                .answers()
                .iter()
                .filter(|answer| answer.at >= since && answer.node != old)
                .map(|answer| answer.at)
                .min();
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }

    /// The node that answered the last probe, if it answered in the last
    /// `within`.
    pub fn serving(&self, within: Duration) -> Option<String> {
        let answers = self.answers();
        answers
            .iter()
            .max_by_key(|answer| answer.at)
            .filter(|answer| answer.at.elapsed() <= within)
            .map(|answer| answer.node.clone())
    }

    /// The longest time between two banners (from any node) since `since`.
    pub fn longest_gap(&self, since: Instant) -> Duration {
        let mut times: Vec<Instant> = self
            .answers()
            .iter()
            .map(|answer| answer.at)
            .filter(|at| *at >= since)
            .collect();
        times.sort();
        times
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .max()
            .unwrap_or_default()
    }

    fn answers(&self) -> std::sync::MutexGuard<'_, Vec<Answer>> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stop(mut self) -> Result<()> {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the prober panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        let _ = self.stop_thread();
    }
}

fn probe_until_stopped(
    namespace: &str,
    address: SocketAddr,
    stop: &AtomicBool,
    answers: &Arc<Mutex<Vec<Answer>>>,
) -> Result<()> {
    // Threads inherit the network namespace of the thread that spawns
    // them: every probe thread runs in the client namespace.
    crate::netns::enter_on_this_thread(namespace)?;
    let started = Instant::now();
    let mut scheduled = 0u32;
    while !stop.load(Ordering::SeqCst) {
        let answers = answers.clone();
        std::thread::spawn(move || {
            if let Ok(banner) = crate::probe::read_banner(address, PROBE_TIMEOUT) {
                if crate::probe::is_ready_banner(&banner) {
                    if let Some(node) = banner_node(&banner) {
                        let at = Instant::now();
                        answers
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(Answer { at, node });
                    }
                }
            }
        });
        scheduled += 1;
        let next = started + PROBE_INTERVAL * scheduled;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    // Let the last probes finish (they time out on their own).
    std::thread::sleep(PROBE_TIMEOUT);
    Ok(())
}

/// The node a lab banner names: `220 n2.lab.test ESMTP ...` → `n2`.
pub fn banner_node(banner: &str) -> Option<String> {
    let host = banner.get(4..)?.split_whitespace().next()?;
    let node = host.split('.').next()?;
    (!node.is_empty()).then(|| node.to_string())
}

/// Sends mail to the lab mailbox over SMTP on the floating IP, one message
/// after another, and keeps the subject of every message the server
/// accepted (a 250 reply). A failed attempt (no server, a 4xx) is tried
/// again with a new subject: only what was accepted must arrive.
pub struct Load {
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<String>>>,
    attempts: Arc<Mutex<u64>>,
    thread: Option<JoinHandle<Result<()>>>,
}

/// The pause between two messages of the load.
const LOAD_PAUSE: Duration = Duration::from_millis(50);

impl Load {
    pub fn start(state: &LabState, tag: &str) -> Result<Load> {
        let account = mailbox(state)?.clone();
        let namespace = state.client.namespace.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(Mutex::new(0u64));
        let thread = {
            let (stop, accepted, attempts) = (stop.clone(), accepted.clone(), attempts.clone());
            let tag = tag.to_string();
            std::thread::Builder::new()
                .name("load".into())
                .spawn(move || {
                    crate::netns::enter_on_this_thread(&namespace)?;
                    let mut sequence = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        sequence += 1;
                        *attempts.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                        let subject = format!("{tag}-{sequence}");
                        let reply = crate::mail::send(
                            topology::smtp_address(),
                            &account.user,
                            &subject,
                            "Load of mailherd-lab: this message must not be lost.\n",
                        );
                        if reply.is_ok_and(|reply| reply.starts_with("250")) {
                            accepted
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(subject);
                        }
                        std::thread::sleep(LOAD_PAUSE);
                    }
                    Ok(())
                })
                .context("cannot start the load thread")?
        };
        Ok(Load {
            stop,
            accepted,
            attempts,
            thread: Some(thread),
        })
    }

    /// Stops the load; returns the accepted subjects and the attempts.
    pub fn finish(mut self) -> Result<(Vec<String>, u64)> {
        self.stop_thread()?;
        let accepted = self
            .accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let attempts = *self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        Ok((accepted, attempts))
    }

    fn stop_thread(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the load thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.stop_thread();
    }
}

fn mailbox(state: &LabState) -> Result<&MailAccount> {
    state
        .mail
        .as_ref()
        .context("a mail load needs a lab with `--stack mail`")
}

/// Waits up to `limit` until every subject in `accepted` is in the lab
/// mailbox (read over IMAP on the floating IP); returns those that are not.
pub fn missing_mail(state: &LabState, accepted: &[String], limit: Duration) -> Result<Vec<String>> {
    let account = mailbox(state)?;
    let deadline = Instant::now() + limit;
    let mut missing: Vec<String> = accepted.to_vec();
    loop {
        let listed = crate::netns::run_in(&state.client.namespace, || {
            crate::mail::list_subjects(topology::imap_address(), &account.user, &account.password)
        });
        if let Ok(listed) = listed {
            let found: BTreeSet<&str> = listed.iter().map(|m| m.subject.as_str()).collect();
            missing = accepted
                .iter()
                .filter(|subject| !found.contains(subject.as_str()))
                .cloned()
                .collect();
            if missing.is_empty() {
                return Ok(missing);
            }
        }
        if Instant::now() >= deadline {
            return Ok(missing);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The invariant sampler of design §8 on a thread of its own, until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<crate::invariants::Report>>,
}

impl Sampler {
    pub fn start(state: &LabState) -> Result<Sampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, state) = (stop.clone(), state.clone());
            std::thread::Builder::new()
                .name("invariants".into())
                .spawn(move || {
                    crate::invariants::sample_while(&state, Duration::from_millis(10), |_| {
                        !stop.load(Ordering::SeqCst)
                    })
                })
                .context("cannot start the invariant sampler")?
        };
        Ok(Sampler { stop, thread })
    }

    pub fn finish(self) -> Result<crate::invariants::Report> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the invariant sampler panicked")))
    }
}

/// What watches a lab during a bench phase or a nemesis run: the prober,
/// the invariant sampler and, with the mail stack, a load whose subjects
/// start with `tag`.
pub fn start_watching(state: &LabState, tag: &str) -> Result<(Prober, Sampler, Option<Load>)> {
    let prober = Prober::start(state)?;
    let sampler = Sampler::start(state)?;
    let load = match state.stack {
        crate::state::Stack::Mail => Some(Load::start(state, &format!("{tag}-{}", unix_ms()))?),
        crate::state::Stack::Banner => None,
    };
    Ok((prober, sampler, load))
}

/// Runs this `mailherd-lab` with `args` (same prefix and lab directory);
/// fails with its output when it fails.
pub fn run_lab(args: &[&str]) -> Result<String> {
    let output = Command::new(crate::host::lab_bin()?)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run mailherd-lab {}", args.join(" ")))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "mailherd-lab {} failed ({}): {}{}",
            args.join(" "),
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// `status --json` of the running lab.
pub fn lab_status() -> Result<Value> {
    let text = run_lab(&["status", "--json"])?;
    serde_json::from_str(&text).context("status --json did not print JSON")
}

/// How long a master must have served before the bench faults it: past
/// the grace period after a promotion (2 s in the fast timing profile the
/// lab runs), in which a failing check does not yet count.
const PAST_GRACE: Duration = Duration::from_millis(2_500);

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Waits up to `limit` until the cluster is settled: one master, every
/// other mail node a backup, the floating IP answering with the master's
/// banner, and (with mailherd) the master past its grace period, every
/// mail node ready and the breaker closed. A breaker that would block the next failover is reset through
/// the master's API, as an operator would between two drills. Returns the
/// master's name and whether the breaker was reset.
pub fn settle(state: &LabState, prober: &Prober, limit: Duration) -> Result<(String, bool)> {
    let deadline = Instant::now() + limit;
    let mut breaker_reset = false;
    loop {
        let status = lab_status()?;
        let why_not = match settled(state, &status, prober) {
            Ok(master) => match cluster_ready(state, &status, &master, &mut breaker_reset) {
                Ok(()) => return Ok((master, breaker_reset)),
                Err(reason) => reason,
            },
            Err(reason) => reason,
        };
        if Instant::now() >= deadline {
            bail!(
                "the cluster did not settle within {} s: {why_not}\n{status:#}",
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The master's name when `status` shows a settled cluster, else why not.
fn settled(
    state: &LabState,
    status: &Value,
    prober: &Prober,
) -> std::result::Result<String, String> {
    let nodes = status["nodes"].as_array().ok_or("status has no nodes")?;
    let mut masters = Vec::new();
    for node in nodes {
        let name = node["name"].as_str().unwrap_or("?");
        let role = node["role"].as_str().unwrap_or("?");
        let mail = state.node(name).map(NodeState::is_mail).unwrap_or(true);
        match (mail, role) {
            (true, "master") => masters.push(name.to_string()),
            (true, "backup") | (false, "witness") => {}
            _ => return Err(format!("{name} is {role}")),
        }
        if node["faults"].as_array().is_some_and(|f| !f.is_empty()) {
            return Err(format!("{name} still has faults {}", node["faults"]));
        }
    }
    let [master] = masters.as_slice() else {
        return Err(format!("masters: {masters:?}"));
    };
    match prober.serving(Duration::from_millis(500)) {
        Some(serving) if serving == *master => Ok(master.clone()),
        other => Err(format!(
            "the floating IP answers from {other:?}, the master is {master}"
        )),
    }
}

/// With mailherd: every mail member ready, the breaker closed (reset if it
/// would block the next failover). Other managers: nothing to check.
fn cluster_ready(
    state: &LabState,
    status: &Value,
    master: &str,
    breaker_reset: &mut bool,
) -> std::result::Result<(), String> {
    if status["manager"].as_str().is_some_and(|m| m != "mailherd") {
        return Ok(());
    }
    let node = state.node(master).map_err(|e| e.to_string())?;
    let (code, body) = crate::commands::status::agent_request(node, "/status", None)
        .map_err(|e| format!("{e:#}"))?;
    if !code.is_success() {
        return Err(format!("the master's /status answered {code}"));
    }
    let agent: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let not_ready: Vec<&str> = agent["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .filter(|m| m["kind"] == "mail" && m["ready"] != true)
                .filter_map(|m| m["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    if !not_ready.is_empty() {
        return Err(format!("not ready yet: {not_ready:?}"));
    }
    // A fault in the grace period after a promotion is judged later by
    // design: the bench faults masters that have served for a while.
    let epoch = agent["epoch"].as_u64();
    let assigned_at = agent["history"]
        .as_array()
        .and_then(|history| {
            history
                .iter()
                .rev()
                .find(|entry| entry["epoch"].as_u64() == epoch)
        })
        .and_then(|entry| entry["assigned_at_unix_ms"].as_u64())
        .ok_or_else(|| format!("no history entry for epoch {epoch:?} on {master} yet"))?;
    let serving_ms = unix_ms().saturating_sub(assigned_at);
    if serving_ms < PAST_GRACE.as_millis() as u64 {
        return Err(format!("{master} was promoted {serving_ms} ms ago"));
    }
    let breaker = &agent["breaker"];
    let in_window = breaker["failovers_in_window"].as_u64().unwrap_or(0);
    let max = breaker["max_failovers"].as_u64().unwrap_or(u64::MAX);
    if breaker["open"] == true || in_window >= max {
        let token = std::fs::read_to_string(topology::token_file(&state.lab_dir))
            .map_err(|e| format!("cannot read the lab's token: {e}"))?;
        let (code, body) =
            crate::commands::status::agent_request(node, "/v1/breaker/reset", Some(token.trim()))
                .map_err(|e| format!("{e:#}"))?;
        if !code.is_success() {
            return Err(format!("resetting the breaker answered {code}: {body}"));
        }
        *breaker_reset = true;
        return Err("the breaker was just reset".to_string());
    }
    Ok(())
}

/// With mailherd: when the breaker is open on the cluster (as any mail
/// node's agent reports it), resets it through that node's API, as the
/// operator would, and returns true.
pub fn reset_breaker_if_open(state: &LabState) -> Result<bool> {
    let token = std::fs::read_to_string(topology::token_file(&state.lab_dir))
        .context("cannot read the lab's token")?;
    for node in state.nodes.iter().filter(|n| n.is_mail() && !n.powered_off) {
        let Ok((code, body)) = crate::commands::status::agent_request(node, "/status", None) else {
            continue;
        };
        let Ok(agent) = serde_json::from_str::<Value>(&body) else {
            continue;
        };
        if !code.is_success() {
            continue;
        }
        if agent["breaker"]["open"] != true {
            return Ok(false);
        }
        let (code, body) =
            crate::commands::status::agent_request(node, "/v1/breaker/reset", Some(token.trim()))?;
        if !code.is_success() {
            bail!(
                "resetting the breaker through {} answered {code}: {body}",
                node.name
            );
        }
        return Ok(true);
    }
    Ok(false)
}

/// What an agent costs: memory now, CPU over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Footprint {
    /// Resident set (`VmRSS`), KiB: anonymous plus file-backed pages.
    pub rss_kib: u64,
    /// Of which anonymous memory (`RssAnon`): heap, stacks, statics.
    pub rss_anon_kib: u64,
    /// Of which file-backed pages (`RssFile`): mostly the binary's code,
    /// shared with every other process running the same binary.
    pub rss_file_kib: u64,
    /// CPU time over the window, % of one core.
    pub cpu_percent: f64,
}

/// The footprint of the agent on `node`, CPU measured over `window`.
pub fn agent_footprint(state: &LabState, node: &NodeState, window: Duration) -> Result<Footprint> {
    let pid = agent_pid(state, node)?;
    let ticks = |pid: i32| -> Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("the agent (pid {pid}) is gone"))?;
        // Fields after the command name (which may hold spaces): utime is
        // the 14th field, stime the 15th.
        let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| -> Result<u64> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .with_context(|| format!("unexpected /proc/{pid}/stat: {stat}"))
        };
        Ok(field(11)? + field(12)?)
    };
    let before = ticks(pid)?;
    let started = Instant::now();
    std::thread::sleep(window);
    let after = ticks(pid)?;
    let elapsed = started.elapsed().as_secs_f64();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_percent = (after - before) as f64 / hz / elapsed * 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("the agent (pid {pid}) is gone"))?;
    let kib = |key: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .with_context(|| format!("no {key} in /proc/{pid}/status"))
    };
    Ok(Footprint {
        rss_kib: kib("VmRSS:")?,
        rss_anon_kib: kib("RssAnon:")?,
        rss_file_kib: kib("RssFile:")?,
        cpu_percent: (cpu_percent * 100.0).round() / 100.0,
    })
}

/// The host PID of the agent process in `node`'s namespace.
fn agent_pid(state: &LabState, node: &NodeState) -> Result<i32> {
    let wanted = std::fs::canonicalize(&state.agent_bin).unwrap_or(state.agent_bin.clone());
    crate::netns::pids(&node.namespace)?
        .into_iter()
        .find(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == wanted)
                && is_agent_command(*pid)
        })
        .with_context(|| {
            format!(
                "no agent ({}) runs in {}",
                state.agent_bin.display(),
                node.namespace
            )
        })
}

fn is_agent_command(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| {
            cmdline
                .split(|byte| *byte == 0)
                .nth(1)
                .is_some_and(|arg| arg == b"agent")
        })
        .unwrap_or(false)
}

/// Median and maximum of `values` (milliseconds).
pub fn median_and_max(values: &[u64]) -> (u64, u64) {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let median = match sorted.len() {
        0 => 0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    };
    (median, sorted.last().copied().unwrap_or(0))
}

/// A line of progress on stderr (stdout is the report).
pub fn progress(line: &str) {
    eprintln!("[{}] {line}", crate::probe::wall_clock());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banners_name_their_node() {
        assert_eq!(
            banner_node("220 n2.lab.test ESMTP mailherd-lab banner").as_deref(),
            Some("n2")
        );
        assert_eq!(
            banner_node("220 n13.lab.test ESMTP Postfix").as_deref(),
            Some("n13")
        );
        assert_eq!(banner_node("220 "), None);
        assert_eq!(banner_node("22"), None);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median_and_max(&[300, 100, 200]), (200, 300));
        assert_eq!(median_and_max(&[400, 100, 200, 300]), (250, 400));
        assert_eq!(median_and_max(&[]), (0, 0));
    }
}
