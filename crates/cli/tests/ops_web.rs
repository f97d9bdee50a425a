//! The operations surface of real agents on loopback (three agents, each
//! with a critical check that is up, a non-critical one that is down and a
//! webhook alert channel whose receiver is gone):
//! - `/metrics` is read by the reference parsers of Debian's
//!   python3-prometheus-client (`scripts/parse-metrics.py`); its values are
//!   those of the status document, and after the master is killed the
//!   failover counter, the promotion histogram (whose sum is the recorded
//!   promotion time) and the failed-alert counter have moved;
//! - the dashboard at `/` is rendered by headless Chromium (Debian's
//!   `chromium`) for a phone and a desktop: its DOM shows every node with
//!   its role, this node's checks and the failover history with step
//!   timings, and the screenshots are real PNGs of the window's size.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::cluster::{exclusive, http, loopback_cluster, masters, Agent};
use common::wait_for;
use serde_json::Value;

const TOKEN: &str = "ops-web-token-0123456789";

/// A TCP service for the `service` check: accepts and closes every
/// connection, for as long as the test runs.
fn always_up_service() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || for _connection in listener.incoming() {});
    port
}

/// Three agents with the token, the checks and the alert channel.
fn cluster(dir: &Path) -> Vec<Agent> {
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    let extra = format!(
        "token_file = \"{token}\"\n\n\
         [[checks]]\nname = \"service\"\nkind = \"tcp\"\naddress = \"127.0.0.1:{up}\"\ncritical = true\n\n\
         [[checks]]\nname = \"spare\"\nkind = \"tcp\"\naddress = \"127.0.0.1:{closed}\"\ncritical = false\n\n\
         [alerts]\nretries = 0\n\n\
         [[alerts.channels]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"http://127.0.0.1:{gone}/hook\"\n",
        token = dir.join("token").display(),
        up = always_up_service(),
        closed = common::free_port(),
        gone = common::free_port(),
    );
    // Under load (two cores shared by many builds) the cluster may move
    // more than once; a wider breaker keeps it moving for the test.
    loopback_cluster(dir, 3, "breaker_max_failovers = 10", &extra)
}

/// Starts the agents and waits for one master: its index and the epoch.
fn start_and_elect(agents: &mut [Agent], dir: &Path) -> (usize, u64) {
    for agent in agents.iter_mut() {
        agent.start(dir);
    }
    wait_for("a first master", Duration::from_secs(30), || {
        let (found, epoch) = masters(agents);
        (found.len() == 1).then(|| (found[0], epoch))
    })
}

/// Kills the master at `index` and waits for another: its index and epoch.
fn fail_over(agents: &mut [Agent], index: usize, epoch: u64) -> (usize, u64) {
    agents[index].kill();
    wait_for("a new master", Duration::from_secs(30), || {
        let (found, new_epoch) = masters(agents);
        (found.len() == 1 && found[0] != index && new_epoch > epoch).then(|| (found[0], new_epoch))
    })
}

/// One parsed exposition: family name to its type and samples.
struct Exposition {
    families: BTreeMap<String, Value>,
}

impl Exposition {
    /// `GET /metrics` of `agent`, checked by `scripts/parse-metrics.py`.
    fn of(agent: &Agent) -> Exposition {
        let response = agent.get("/metrics").expect("/metrics answers");
        assert_eq!(response.code, 200, "{response:?}");
        assert!(
            response
                .content_type
                .starts_with("application/openmetrics-text"),
            "content type {}",
            response.content_type
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/parse-metrics.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 runs (install python3-prometheus-client)");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(response.body.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "the parser refused {}'s /metrics: {}\n{}",
            agent.name,
            String::from_utf8_lossy(&output.stderr),
            response.body
        );
        let parsed: Value = serde_json::from_slice(&output.stdout).unwrap();
        Exposition {
            families: parsed["families"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(name, family)| (name.clone(), family.clone()))
                .collect(),
        }
    }

    fn family(&self, name: &str) -> &Value {
        self.families
            .get(name)
            .unwrap_or_else(|| panic!("no family {name} in {:?}", self.families.keys()))
    }

    /// The value of sample `sample` whose labels include `labels`; None if
    /// there is no such sample (a family without series is not exposed).
    fn value(&self, family: &str, sample: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.families.get(family)?["samples"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| {
                s["name"] == sample
                    && labels
                        .iter()
                        .all(|(key, value)| s["labels"][key].as_str() == Some(value))
            })
            .map(|s| s["value"].as_f64().expect("a finite value"))
    }

    /// Like `value`, 0 when the series does not exist yet (a counter or
    /// histogram series appears with its first event).
    fn count(&self, family: &str, sample: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(family, sample, labels).unwrap_or(0.0)
    }

    /// The sum over every series of `sample` (0 without any).
    fn total(&self, family: &str, sample: &str) -> f64 {
        let Some(family) = self.families.get(family) else {
            return 0.0;
        };
        family["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["name"] == sample)
            .map(|s| s["value"].as_f64().unwrap())
            .sum()
    }
}

#[test]
fn metrics_parse_and_follow_a_failover() {
    let _cluster = exclusive();
    let dir = common::tempdir();
    let mut agents = cluster(dir.path());
    let (first, epoch) = start_and_elect(&mut agents, dir.path());

    // Every family the brief of issue 7 asks for, with its type.
    let before = Exposition::of(&agents[first]);
    for (family, kind) in [
        ("mailherd_node", "info"),
        ("mailherd_role", "gauge"),
        ("mailherd_epoch", "gauge"),
        ("mailherd_failovers", "counter"),
        ("mailherd_failover_duration_seconds", "histogram"),
        ("mailherd_promotion_step_duration_seconds", "histogram"),
        ("mailherd_lease_renewals", "counter"),
        ("mailherd_lease_renewal_duration_seconds", "histogram"),
        ("mailherd_lease_renewals_relayed", "counter"),
        ("mailherd_check_up", "gauge"),
        ("mailherd_check_latency_seconds", "histogram"),
        ("mailherd_check_probes", "counter"),
        ("mailherd_stack_verdict", "gauge"),
        ("mailherd_member_ready", "gauge"),
        ("mailherd_alerts_sent", "counter"),
        ("mailherd_alerts_suppressed", "counter"),
        ("mailherd_alerts_failed", "counter"),
        ("mailherd_breaker_open", "gauge"),
        ("mailherd_maintenance", "gauge"),
        ("mailherd_raft_leader", "gauge"),
    ] {
        assert_eq!(before.family(family)["type"], kind, "{family}");
    }
    // The values are the agent's own: its role and epoch as /status says,
    // its checks as probed, its renewals as confirmed.
    let master = &agents[first];
    let role =
        |e: &Exposition, role: &str| e.value("mailherd_role", "mailherd_role", &[("role", role)]);
    assert_eq!(role(&before, "master"), Some(1.0));
    assert_eq!(role(&before, "backup"), Some(0.0));
    assert_eq!(
        before.value("mailherd_epoch", "mailherd_epoch", &[]),
        Some(epoch as f64)
    );
    let check_up = |e: &Exposition, check: &str| {
        e.value(
            "mailherd_check_up",
            "mailherd_check_up",
            &[("check", check)],
        )
    };
    wait_for("the checks to settle", Duration::from_secs(10), || {
        let e = Exposition::of(master);
        (check_up(&e, "service") == Some(1.0) && check_up(&e, "spare") == Some(0.0)).then_some(())
    });
    let settled = Exposition::of(master);
    assert_eq!(
        settled.value(
            "mailherd_stack_verdict",
            "mailherd_stack_verdict",
            &[("verdict", "degraded")]
        ),
        Some(1.0),
        "a non-critical check down is degraded"
    );
    assert!(
        settled.count(
            "mailherd_check_probes",
            "mailherd_check_probes_total",
            &[("check", "spare"), ("result", "failed")]
        ) >= 2.0
    );
    assert!(
        settled.count(
            "mailherd_check_latency_seconds",
            "mailherd_check_latency_seconds_count",
            &[("check", "service")]
        ) >= 1.0
    );
    assert!(
        settled.count(
            "mailherd_lease_renewals",
            "mailherd_lease_renewals_total",
            &[("result", "confirmed")]
        ) >= 1.0,
        "the master renews its lease"
    );
    // Every renewal that ended was timed: the histogram counts as many.
    assert!(
        settled.count(
            "mailherd_lease_renewal_duration_seconds",
            "mailherd_lease_renewal_duration_seconds_count",
            &[("result", "confirmed")]
        ) >= 1.0,
        "the master's renewals are timed"
    );
    assert_eq!(
        settled.value("mailherd_maintenance", "mailherd_maintenance", &[]),
        Some(0.0)
    );
    assert_eq!(
        settled.value("mailherd_breaker_open", "mailherd_breaker_open", &[]),
        Some(0.0)
    );

    // What the survivors counted before the failover: assignments seen
    // (with the epoch they were counted against) and promotions timed.
    let survivors: Vec<usize> = (0..agents.len()).filter(|i| *i != first).collect();
    let before: Vec<(f64, f64, f64)> = survivors
        .iter()
        .map(|i| counted(&Exposition::of(&agents[*i])))
        .collect();

    let (second, new_epoch) = fail_over(&mut agents, first, epoch);
    let new_master = &agents[second];
    let after = Exposition::of(new_master);
    assert_eq!(role(&after, "master"), Some(1.0));
    // Each survivor counted every assignment it applied: as many as the
    // epoch moved. (Under load the cluster may move more than once.)
    for (i, (failovers_before, epoch_before, _)) in survivors.iter().zip(&before) {
        wait_for(
            &format!("{} to count the assignments", agents[*i].name),
            Duration::from_secs(10),
            || {
                let (failovers, epoch, _) = counted(&Exposition::of(&agents[*i]));
                (epoch >= new_epoch as f64 && failovers - failovers_before == epoch - epoch_before)
                    .then_some(())
            },
        );
    }
    // The new master timed its promotion; once the promotion is recorded in
    // the replicated history, the histogram's sum is the recorded time.
    let position = survivors.iter().position(|i| *i == second).unwrap();
    wait_for(
        "the promotion histogram to match the recorded promotions",
        Duration::from_secs(30),
        || {
            let e = Exposition::of(new_master);
            let (_, _, promotions) = counted(&e);
            let sum = e.value(
                "mailherd_failover_duration_seconds",
                "mailherd_failover_duration_seconds_sum",
                &[("kind", "failover"), ("result", "ok")],
            )?;
            let recorded = recorded_promotions_ms(new_master)?;
            (promotions > before[position].2
                && promotions == recorded.len() as f64
                && (sum * 1_000.0 - recorded.iter().sum::<u64>() as f64).abs() < 0.5)
                .then_some(())
        },
    );
    assert!(
        Exposition::of(new_master).total(
            "mailherd_promotion_step_duration_seconds",
            "mailherd_promotion_step_duration_seconds_count"
        ) >= 1.0,
        "the promotion's steps are timed"
    );
    // The webhook's receiver is gone: the new master's "failover started"
    // alert failed (no retries configured) and is counted as such.
    wait_for(
        "the failed alert to be counted",
        Duration::from_secs(10),
        || {
            (Exposition::of(new_master).count(
                "mailherd_alerts_failed",
                "mailherd_alerts_failed_total",
                &[("channel", "hook"), ("event", "failover_started")],
            ) >= 1.0)
                .then_some(())
        },
    );
}

/// (assignments counted, epoch, failover promotions timed) in `e`.
fn counted(e: &Exposition) -> (f64, f64, f64) {
    (
        e.total("mailherd_failovers", "mailherd_failovers_total"),
        e.value("mailherd_epoch", "mailherd_epoch", &[])
            .unwrap_or(0.0),
        e.count(
            "mailherd_failover_duration_seconds",
            "mailherd_failover_duration_seconds_count",
            &[("kind", "failover"), ("result", "ok")],
        ),
    )
}

/// The times of the successful failover promotions `agent` ran, as its
/// status document's history recorded them.
fn recorded_promotions_ms(agent: &Agent) -> Option<Vec<u64>> {
    let status = agent.status()?;
    Some(
        status["history"]
            .as_array()?
            .iter()
            .filter(|h| h["to"] == agent.name.as_str() && h["kind"] == "failover")
            .filter(|h| h["outcome"]["ok"] == true)
            .filter_map(|h| h["outcome"]["total_ms"].as_u64())
            .collect(),
    )
}

#[test]
fn control_endpoints_refuse_a_missing_or_wrong_token() {
    let _cluster = exclusive();
    let dir = common::tempdir();
    let mut agents = cluster(dir.path());
    let (master, _) = start_and_elect(&mut agents, dir.path());
    let port = agents[master].api_port;
    for path in ["/v1/switchover", "/v1/maintenance", "/v1/breaker/reset"] {
        for authorization in [None, Some("Bearer wrong-token"), Some(TOKEN)] {
            let response = http(port, "POST", path, authorization, "{\"on\": false}").unwrap();
            assert_eq!(
                response.code, 401,
                "{path} with {authorization:?}: {response:?}"
            );
        }
    }
    // The right token in the right form passes the check (and the request
    // is carried out: maintenance off is a no-op commit).
    let bearer = format!("Bearer {TOKEN}");
    let response = http(
        port,
        "POST",
        "/v1/maintenance",
        Some(&bearer),
        "{\"on\": false}",
    )
    .unwrap();
    assert_eq!(response.code, 200, "{response:?}");
}

/// Headless Chromium, as the Debian package installs it.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs Chromium on `url` with `args` and a profile of its own in `dir`.
fn chromium(dir: &Path, url: &str, args: &[&str]) -> std::process::Output {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium (scripts/install-deps.sh)"
    );
    let profile = tempfile::tempdir_in(dir).unwrap();
    let output = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium {args:?} {url} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A screenshot of `url` in a window of `width` x `height`, checked to be
/// a PNG of that size with more than a blank page in it.
fn screenshot(dir: &Path, url: &str, name: &str, width: u32, height: u32) -> PathBuf {
    let file = dir.join(name);
    chromium(
        dir,
        url,
        &[
            &format!("--screenshot={}", file.display()),
            &format!("--window-size={width},{height}"),
        ],
    );
    let png = std::fs::read(&file).expect("the screenshot was written");
    assert_eq!(
        &png[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is a PNG",
        file.display()
    );
    let be32 = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!(&png[12..16], b"IHDR");
    assert_eq!((be32(16), be32(20)), (width, height), "{name}'s size");
    // A blank page of that size compresses to a few hundred bytes; text,
    // badges and bars make tens of kilobytes.
    assert!(
        png.len() > 15_000,
        "{name} is only {} bytes: nothing rendered?",
        png.len()
    );
    file
}

#[test]
fn the_dashboard_shows_the_cluster_and_the_history_in_a_browser() {
    let _cluster = exclusive();
    let dir = common::tempdir();
    let mut agents = cluster(dir.path());
    let (first, epoch) = start_and_elect(&mut agents, dir.path());
    let (second, new_epoch) = fail_over(&mut agents, first, epoch);
    let new_master = &agents[second];
    wait_for(
        "the promotion to be recorded",
        Duration::from_secs(30),
        || {
            let status = new_master.status()?;
            let recorded = status["history"]
                .as_array()?
                .iter()
                .any(|h| h["epoch"] == new_epoch && h["outcome"]["ok"] == true);
            recorded.then_some(())
        },
    );
    let page = new_master.get("/").unwrap();
    assert_eq!(page.code, 200);
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );

    // What a browser makes of it: the DOM after rendering.
    let url = format!("{}/", new_master.url());
    let dom = String::from_utf8(chromium(dir.path(), &url, &["--dump-dom"]).stdout).unwrap();
    assert!(dom.contains("name=\"viewport\""), "{dom}");
    for agent in &agents {
        assert!(
            dom.contains(&format!("data-node=\"{}\"", agent.name)),
            "{} missing from the dashboard:\n{dom}",
            agent.name
        );
    }
    // One master at most, and the page agrees with itself: this node's
    // card shows the role its header shows (both from one status document).
    assert!(dom.matches("data-role=\"master\"").count() <= 1, "{dom}");
    let this_role = dom
        .split_once("id=\"this-role\">")
        .and_then(|(_, rest)| rest.split_once('<'))
        .map(|(role, _)| role.to_string())
        .expect("the header shows this node's role");
    let card = format!(
        "data-node=\"{}\" data-role=\"{this_role}\"",
        new_master.name
    );
    assert!(dom.contains(&card), "{card} not in:\n{dom}");
    for epoch in [epoch, new_epoch] {
        assert!(
            dom.contains(&format!("data-epoch=\"{epoch}\"")),
            "epoch {epoch}:\n{dom}"
        );
    }
    assert!(dom.contains("failover"), "{dom}");
    assert!(dom.contains("promoted in"), "step timings:\n{dom}");
    assert!(dom.contains("class=\"steps\""), "{dom}");
    assert!(
        dom.contains("data-check=\"service\" data-state=\"up\""),
        "{dom}"
    );
    assert!(
        dom.contains("data-check=\"spare\" data-state=\"down\""),
        "{dom}"
    );

    // Screenshots for a phone and a desktop, kept in target/ to look at.
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    screenshot(&shots, &url, "phone.png", 390, 844);
    screenshot(&shots, &url, "desktop.png", 1280, 900);
}
