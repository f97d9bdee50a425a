//! `mailherd notify TYPE NAME STATE [PRIORITY]`: keepalived's notify
//! handler, so that a keepalived setup can move to mailherd step by step:
//! first let mailherd's pipelines promote and demote (this command), then
//! let mailherd's agent decide (drop keepalived).
//!
//! keepalived calls it as `notify "mailherd notify --config F"` with
//! `INSTANCE|GROUP NAME MASTER|BACKUP|FAULT|STOP PRIORITY`:
//!
//! - `MASTER`: the promotion pipeline (volumes, mount, epoch file, stack
//!   start, wait for the critical checks), under the next epoch of a local
//!   counter (`data_dir/keepalived-epoch`). keepalived decides alone, so
//!   the epoch only orders promotions on the volume: when another node's
//!   counter ran ahead, the volume's epoch is adopted and the promotion is
//!   tried once more. A promotion that fails is undone (demotion) and the
//!   command exits 1; the track script (`mailherd check`) then fails and
//!   keepalived moves the address.
//! - `BACKUP`, `STOP`: the demotion pipeline; `FAULT`: the urgent one (the
//!   stack is killed: the other node takes over at once).
//!
//! The floating IP is keepalived's (`virtual_ipaddress`) when its driver
//! is `local`, and left alone here; a `hetzner` floating IP, which
//! keepalived cannot move, is moved by the pipelines.
//!
//! keepalived runs notify scripts without waiting and may run them out of
//! order (keepalived #996, #2158): runs are serialised by a lock file, and
//! each writes what it did to `data_dir/keepalived-notify.json`, which
//! `mailherd check` reads.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use mailherd_agent::monitor::Monitor;
use mailherd_agent::pipelines::{demote, promote, Drivers};
use mailherd_config::{Config, FloatingIpDriver, MemberRole};
use serde::{Deserialize, Serialize};

/// The epoch counter of keepalived mode, in `data_dir`.
pub const EPOCH_FILE: &str = "keepalived-epoch";
/// What the last notify run did, in `data_dir`.
pub const STATE_FILE: &str = "keepalived-notify.json";
/// Serialises notify runs, in `data_dir`.
const LOCK_FILE: &str = "keepalived-notify.lock";

#[derive(clap::Args)]
pub struct NotifyArgs {
    #[arg(long, default_value = mailherd_config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// `INSTANCE` or `GROUP`.
    #[arg(value_name = "TYPE")]
    pub kind: String,
    /// The vrrp_instance's (or group's) name.
    pub name: String,
    /// The new state: `MASTER`, `BACKUP`, `FAULT` or `STOP`.
    pub state: String,
    /// The instance's priority (keepalived passes it; unused).
    pub priority: Option<String>,
    /// Anything keepalived adds after the priority (ignored).
    #[arg(trailing_var_arg = true, hide = true)]
    pub rest: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyPhase {
    Promoting,
    Master,
    PromotionFailed,
    Backup,
    Fault,
}

/// `data_dir/keepalived-notify.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotifyState {
    pub phase: NotifyPhase,
    pub epoch: u64,
    pub since_unix_ms: u64,
    /// The first failed step's error, when something failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl NotifyState {
    pub fn read(data_dir: &Path) -> Option<NotifyState> {
        let text = std::fs::read_to_string(data_dir.join(STATE_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn write(&self, data_dir: &Path) -> anyhow::Result<()> {
        let path = data_dir.join(STATE_FILE);
        let temporary = data_dir.join(format!("{STATE_FILE}.tmp"));
        std::fs::write(&temporary, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", temporary.display()))?;
        std::fs::rename(&temporary, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// Whether a promotion by `mailherd notify` runs now (one that began
    /// longer ago than any promotion may take has died with its process).
    pub fn is_promoting(&self, start_timeout_ms: u64) -> bool {
        let age_ms = unix_ms().saturating_sub(self.since_unix_ms);
        crate::check::promotion_in_progress(self.phase, age_ms, start_timeout_ms)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Reads the epoch counter (0 when there is none yet).
fn read_epoch(data_dir: &Path) -> anyhow::Result<u64> {
    let path = data_dir.join(EPOCH_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("{} holds {:?}, not an epoch", path.display(), text.trim())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// Stores the epoch counter durably (written, synced, renamed).
fn write_epoch(data_dir: &Path, epoch: u64) -> anyhow::Result<()> {
    let path = data_dir.join(EPOCH_FILE);
    let temporary = data_dir.join(format!("{EPOCH_FILE}.tmp"));
    let mut file = std::fs::File::create(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    std::io::Write::write_all(&mut file, format!("{epoch}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, &path).with_context(|| format!("writing {}", path.display()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transition {
    Master,
    Backup,
    Fault,
    Stop,
}

fn transition(state: &str) -> anyhow::Result<Transition> {
    Ok(match state.to_ascii_uppercase().as_str() {
        "MASTER" => Transition::Master,
        "BACKUP" => Transition::Backup,
        "FAULT" => Transition::Fault,
        "STOP" | "DELETED" => Transition::Stop,
        other => bail!("unknown state {other:?} (keepalived passes MASTER, BACKUP, FAULT or STOP)"),
    })
}

pub fn run(args: &NotifyArgs) -> anyhow::Result<ExitCode> {
    if !matches!(
        args.kind.to_ascii_uppercase().as_str(),
        "INSTANCE" | "GROUP"
    ) {
        bail!(
            "unknown notify type {:?} (keepalived passes INSTANCE or GROUP)",
            args.kind
        );
    }
    let transition = transition(&args.state)?;
    let config =
        crate::load(&args.config).with_context(|| format!("loading {}", args.config.display()))?;
    if config.me().role == MemberRole::Witness {
        bail!(
            "{} is a witness: it never holds the master role",
            config.node.name
        );
    }
    crate::init_logging(false);
    let data_dir = config.node.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    // One run at a time; a second waits for the first.
    let lock_path = data_dir.join(LOCK_FILE);
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    tracing::info!(
        instance = %args.name,
        state = %args.state,
        priority = args.priority.as_deref().unwrap_or("-"),
        "keepalived notify"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let ok = runtime.block_on(async {
        let mut drivers = Drivers::from_config(&config).context("building the drivers")?;
        if config
            .floating_ip
            .as_ref()
            .is_some_and(|fip| fip.driver == FloatingIpDriver::Local)
        {
            // keepalived's virtual_ipaddress.
            drivers.floating_ip = None;
        }
        match transition {
            Transition::Master => become_master(&config, &drivers).await,
            Transition::Backup | Transition::Stop => become_backup(&config, &drivers, false).await,
            Transition::Fault => become_backup(&config, &drivers, true).await,
        }
    })?;
    drop(lock);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn become_master(config: &Config, drivers: &Drivers) -> anyhow::Result<bool> {
    let data_dir = &config.node.data_dir;
    let mut epoch = read_epoch(data_dir)? + 1;
    write_epoch(data_dir, epoch)?;
    let mut state = NotifyState {
        phase: NotifyPhase::Promoting,
        epoch,
        since_unix_ms: unix_ms(),
        error: None,
    };
    state.write(data_dir)?;
    let monitor = (!config.checks.is_empty()).then(|| Monitor::start(&config.checks, None));

    let mut outcome = promote(drivers, monitor.as_ref(), epoch).await;
    if !outcome.ok {
        // Another node's counter may have run ahead: adopt the highest
        // epoch on the volumes (still mounted: promote stops at the first
        // failed stage and does not undo) and try once more.
        let highest_on_volumes = config
            .volumes
            .iter()
            .filter_map(|volume| {
                mailherd_drivers::volume::epoch::read_epoch(&volume.mount_point)
                    .ok()
                    .flatten()
            })
            .max();
        if let Some(found) = highest_on_volumes.filter(|found| *found > epoch) {
            tracing::warn!(
                ours = epoch,
                found,
                "a volume carries a newer epoch than this node's counter; adopting it"
            );
            epoch = found + 1;
            write_epoch(data_dir, epoch)?;
            state.epoch = epoch;
            state.write(data_dir)?;
            outcome = promote(drivers, monitor.as_ref(), epoch).await;
        }
    }
    for step in &outcome.steps {
        tracing::info!(step = %step.name, ok = step.ok, duration_ms = step.duration_ms, error = step.error.as_deref().unwrap_or(""), "promotion step");
    }
    if outcome.ok {
        println!(
            "{}: master, epoch {epoch}, promoted in {} ms",
            config.node.name, outcome.total_ms
        );
        state.phase = NotifyPhase::Master;
        state.since_unix_ms = unix_ms();
        state.write(data_dir)?;
        return Ok(true);
    }
    let error = outcome
        .error
        .clone()
        .unwrap_or_else(|| "unknown".to_string());
    eprintln!("mailherd notify: promotion to epoch {epoch} failed: {error}; demoting");
    let steps = demote(drivers, false).await;
    report_demotion(&steps);
    state.phase = NotifyPhase::PromotionFailed;
    state.since_unix_ms = unix_ms();
    state.error = Some(error);
    state.write(data_dir)?;
    Ok(false)
}

async fn become_backup(config: &Config, drivers: &Drivers, urgent: bool) -> anyhow::Result<bool> {
    let data_dir = &config.node.data_dir;
    let steps = demote(drivers, urgent).await;
    let ok = report_demotion(&steps);
    let failed = steps
        .iter()
        .find(|step| !step.ok)
        .map(|step| format!("{}: {}", step.name, step.error.clone().unwrap_or_default()));
    NotifyState {
        phase: if urgent {
            NotifyPhase::Fault
        } else {
            NotifyPhase::Backup
        },
        epoch: read_epoch(data_dir)?,
        since_unix_ms: unix_ms(),
        error: failed,
    }
    .write(data_dir)?;
    if ok {
        println!(
            "{}: {}",
            config.node.name,
            if urgent {
                "fault, stack killed"
            } else {
                "backup, stack stopped"
            }
        );
    }
    Ok(ok)
}

/// Logs the demotion's steps; whether all succeeded.
fn report_demotion(steps: &[mailherd_core::state::StepRecord]) -> bool {
    for step in steps {
        if !step.ok {
            eprintln!(
                "mailherd notify: demotion step {} failed: {}",
                step.name,
                step.error.clone().unwrap_or_default()
            );
        }
    }
    steps.iter().all(|step| step.ok)
}

/// How long `mailherd check` should let keepalived wait for it.
pub fn check_timeout(config: &Config) -> Duration {
    let longest_check_ms = config
        .checks
        .iter()
        .map(|check| check.timeout_ms)
        .max()
        .unwrap_or(0);
    Duration::from_millis(longest_check_ms)
}
