//! `mailherd check`: is this node fit for its role, right now? Usable as a
//! keepalived track script, without a running agent.
//!
//! The role is read from the host, through the drivers: a node that holds
//! anything of the master's (the floating IP, a volume mounted, the stack
//! running), or on which `mailherd notify` is promoting, is judged as a
//! master; any other node as a backup. `--role` overrides that.
//!
//! - **master**: every `[[checks]]` entry is probed once, all at once.
//!   Operational (exit 0) when every check passes; Degraded (1) when only
//!   non-critical ones fail; Down (2) when a critical one fails or the
//!   services driver says the stack does not run. While `mailherd notify`
//!   is promoting this node (at most the services' start timeout), the
//!   verdict is `promoting`, exit 0: keepalived must not fault a master
//!   whose stack is still starting.
//! - **backup**: ready to take over, meaning nothing of the master's is
//!   held here (no split brain to start from), the services driver can
//!   read the stack's state (its tools work: systemctl, the Docker Engine),
//!   and every `local` volume's device is present (the local driver
//!   cannot promote without it; a `hetzner` volume is attached on
//!   promotion). Exit 0 when ready, 2 when not. The stack's checks are not
//!   run: the stack is stopped on a backup. Peers are not asked: with
//!   keepalived they are keepalived's business, with the agent `/status`
//!   shows them.
//!
//! Exit 2 also when the check cannot be made at all (an unreadable
//! config): for a track script, not knowing is not fit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use futures::future::join_all;
use mailherd_agent::pipelines::{Drivers, Holdings};
use mailherd_config::{CheckSection, Config, MemberRole, VolumeDriver};
use mailherd_core::checks::{CheckState, Verdict};
use serde::Serialize;

use crate::notify::{NotifyPhase, NotifyState};

#[derive(Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Master,
    Backup,
}

#[derive(clap::Args)]
pub struct CheckArgs {
    #[arg(long, default_value = mailherd_config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Judge this node as this role instead of reading it from the host.
    #[arg(long, value_enum)]
    pub role: Option<Role>,
    /// Exit 0 when degraded (a non-critical check failed): keepalived
    /// treats every non-zero exit as a failure.
    #[arg(long)]
    pub degraded_ok: bool,
}

/// One line of the result: a probe or a readiness item.
#[derive(Serialize)]
struct Item {
    name: String,
    /// The check's kind, or what a readiness item is about.
    kind: String,
    critical: bool,
    ok: bool,
    latency_ms: u64,
    detail: String,
}

#[derive(Serialize)]
struct Report {
    node: String,
    role: Role,
    /// `host` (read through the drivers), `notify` (a promotion by
    /// `mailherd notify` runs) or `argument` (`--role`).
    role_from: &'static str,
    /// `operational`, `degraded`, `down` or `promoting` (master);
    /// `ready` or `not_ready` (backup); `witness`.
    verdict: &'static str,
    exit_code: u8,
    items: Vec<Item>,
}

pub fn run(args: &CheckArgs) -> ExitCode {
    match check(args) {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("a report serialises")
                );
            } else {
                print_report(&report);
            }
            ExitCode::from(report.exit_code)
        }
        Err(error) => {
            eprintln!("mailherd check: {error:#}");
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "verdict": "unknown", "exit_code": 2, "error": format!("{error:#}") })
                );
            }
            ExitCode::from(2)
        }
    }
}

fn check(args: &CheckArgs) -> anyhow::Result<Report> {
    let config =
        crate::load(&args.config).with_context(|| format!("loading {}", args.config.display()))?;
    if config.me().role == MemberRole::Witness {
        return Ok(Report {
            node: config.node.name.clone(),
            role: Role::Backup,
            role_from: "host",
            verdict: "witness",
            exit_code: 0,
            items: Vec::new(),
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(check_async(args, config))
}

async fn check_async(args: &CheckArgs, config: Config) -> anyhow::Result<Report> {
    let drivers = Drivers::from_config(&config).context("building the drivers")?;
    let holdings = drivers.observe().await;
    let notify = NotifyState::read(&config.node.data_dir);
    let start_timeout_ms = config
        .services
        .as_ref()
        .map_or(30_000, |services| services.start_timeout_ms);
    let promoting = notify
        .as_ref()
        .is_some_and(|state| state.is_promoting(start_timeout_ms));
    let (role, role_from) = match args.role {
        Some(role) => (role, "argument"),
        None if holdings.holds_anything() => (Role::Master, "host"),
        None if promoting => (Role::Master, "notify"),
        None => (Role::Backup, "host"),
    };
    let (verdict, items) = match role {
        Role::Master if promoting => (
            "promoting",
            vec![Item {
                name: "promotion".to_string(),
                kind: "notify".to_string(),
                critical: true,
                ok: true,
                latency_ms: 0,
                detail: format!(
                    "mailherd notify is promoting this node (epoch {})",
                    notify.as_ref().map_or(0, |state| state.epoch)
                ),
            }],
        ),
        Role::Master => master(&config, &holdings).await,
        Role::Backup => backup(&config, &holdings, &replicas(&drivers).await),
    };
    let exit_code = match verdict {
        "operational" | "promoting" | "ready" => 0,
        "degraded" if args.degraded_ok => 0,
        "degraded" => 1,
        _ => 2,
    };
    Ok(Report {
        node: config.node.name.clone(),
        role,
        role_from,
        verdict,
        exit_code,
        items,
    })
}

async fn master(config: &Config, holdings: &Holdings) -> (&'static str, Vec<Item>) {
    let results = join_all(config.checks.iter().map(probe_item)).await;
    let mut items = Vec::new();
    if let Some(services) = &holdings.services {
        items.push(Item {
            name: "services".to_string(),
            kind: "driver".to_string(),
            critical: true,
            ok: matches!(services, Ok(true)),
            latency_ms: 0,
            detail: match services {
                Ok(true) => "the stack runs".to_string(),
                Ok(false) => "the stack does not run".to_string(),
                Err(error) => format!("cannot read the stack's state: {error}"),
            },
        });
    }
    items.extend(results);
    let verdict = Verdict::from_checks(items.iter().map(|item| {
        (
            item.critical,
            if item.ok {
                CheckState::Up
            } else {
                CheckState::Down
            },
        )
    }));
    let verdict = match verdict {
        Verdict::Operational | Verdict::Pending => "operational",
        Verdict::Degraded => "degraded",
        Verdict::Down => "down",
    };
    (verdict, items)
}

async fn probe_item(check: &CheckSection) -> Item {
    let result = mailherd_probes::probe(check).await;
    Item {
        name: check.name.clone(),
        kind: check.kind.as_str().to_string(),
        critical: check.critical,
        ok: result.ok,
        latency_ms: result.latency_ms,
        detail: result.detail,
    }
}

/// A backup's copy of each replicated volume: what it would start from if
/// promoted now (its newest complete snapshot, and that snapshot's age), or
/// why it could not.
async fn replicas(drivers: &Drivers) -> BTreeMap<String, Result<String, String>> {
    let mut found = BTreeMap::new();
    for set in &drivers.replicated {
        let store = set.volume.store();
        let reading = match store.check().await {
            Err(error) => Err(format!("its replication pool is not usable: {error}")),
            Ok(()) => match store.snapshots().await {
                Err(error) => Err(format!("cannot list its snapshots: {error}")),
                Ok(names) => match names.last() {
                    None => Err("no complete snapshot here: promoted now, this node would \
                                 start with an empty copy"
                        .to_string()),
                    Some(newest) => Ok(format!(
                        "newest snapshot {newest}, {} ms old",
                        newest.age_at(std::time::SystemTime::now()).as_millis()
                    )),
                },
            },
        };
        found.insert(set.volume.name().to_string(), reading);
    }
    found
}

fn backup(
    config: &Config,
    holdings: &Holdings,
    replicas: &BTreeMap<String, Result<String, String>>,
) -> (&'static str, Vec<Item>) {
    let mut items = Vec::new();
    let mut readiness = |name: String, kind: &str, ok: bool, detail: String| {
        items.push(Item {
            name,
            kind: kind.to_string(),
            critical: true,
            ok,
            latency_ms: 0,
            detail,
        })
    };
    if let Some(address) = &holdings.address {
        let (ok, detail) = match address {
            Ok(false) => (true, "not held".to_string()),
            Ok(true) => (false, "held on a backup".to_string()),
            Err(error) => (false, format!("cannot tell whether it is held: {error}")),
        };
        readiness("floating_ip".to_string(), "floating_ip", ok, detail);
    }
    for volume in &config.volumes {
        let mounted = holdings.volumes.get(&volume.name);
        let (mut ok, mut detail) = match mounted {
            Some(Ok(false)) | None => (true, "not mounted".to_string()),
            Some(Ok(true)) => (false, "mounted on a backup".to_string()),
            Some(Err(error)) => (false, format!("cannot tell whether it is mounted: {error}")),
        };
        if ok && volume.driver == VolumeDriver::Local {
            match &volume.device {
                Some(device) if device_present(device) => {
                    detail.push_str(&format!(", device {} present", device.display()));
                }
                Some(device) => {
                    ok = false;
                    detail = format!(
                        "device {} is missing: this node could not mount the volume",
                        device.display()
                    );
                }
                None => {}
            }
        }
        match replicas.get(&volume.name) {
            Some(Ok(copy)) if ok => detail.push_str(&format!(", {copy}")),
            Some(Err(why)) if ok => {
                ok = false;
                detail = why.clone();
            }
            _ => {}
        }
        readiness(format!("volume {}", volume.name), "volume", ok, detail);
    }
    if let Some(services) = &holdings.services {
        let (ok, detail) = match services {
            Ok(false) => (true, "the stack is stopped, ready to start".to_string()),
            Ok(true) => (false, "the stack runs on a backup".to_string()),
            Err(error) => (
                false,
                format!("cannot read the stack's state, so could not drive it: {error}"),
            ),
        };
        readiness("services".to_string(), "driver", ok, detail);
    }
    let ready = items.iter().all(|item| item.ok);
    for check in &config.checks {
        items.push(Item {
            name: check.name.clone(),
            kind: check.kind.as_str().to_string(),
            critical: check.critical,
            ok: true,
            latency_ms: 0,
            detail: "not probed: the stack is stopped on a backup".to_string(),
        });
    }
    (if ready { "ready" } else { "not_ready" }, items)
}

fn device_present(device: &Path) -> bool {
    device.exists()
}

fn print_report(report: &Report) {
    let role = match report.role {
        Role::Master => "master",
        Role::Backup => "backup",
    };
    println!(
        "node {}: {role} (from {}), {} (exit {})",
        report.node, report.role_from, report.verdict, report.exit_code
    );
    for item in &report.items {
        println!(
            "  {:<4} {:<20} {:<13} {:>5} ms  {}{}",
            if item.ok { "ok" } else { "FAIL" },
            item.name,
            item.kind,
            item.latency_ms,
            item.detail,
            if item.critical { "" } else { " (not critical)" }
        );
    }
}

/// Whether `phase` counts as a promotion in progress; kept here so the
/// rule sits next to its only user.
pub(crate) fn promotion_in_progress(
    phase: NotifyPhase,
    age_ms: u64,
    start_timeout_ms: u64,
) -> bool {
    // The promotion also waits for the checks up to the start timeout
    // (pipelines: StartServices, then WaitChecks), and needs time for the
    // volumes: twice the start timeout plus a minute bounds it.
    phase == NotifyPhase::Promoting && age_ms <= start_timeout_ms * 2 + 60_000
}
