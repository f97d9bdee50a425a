//! Executes promotion and demotion plans (from [`mailherd_core::pipeline`])
//! with the drivers: stages in order, the steps of a stage in parallel, each
//! step under its own timeout, every outcome recorded.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use mailherd_config::{Config, MemberRole};
use mailherd_core::pipeline::{demotion_plan, promotion_plan, Plan, Recorder, Resources, Step};
use mailherd_core::state::{PromotionOutcome, StepRecord};
use mailherd_core::Epoch;
use mailherd_drivers::volume::replicated::ReplicatedVolume;
use mailherd_drivers::{Database, FloatingIp, Services, Volume};

use crate::monitor::Monitor;

/// Timeouts of the pipeline steps that the config does not set per driver.
const ADDRESS_STEP_TIMEOUT: Duration = Duration::from_secs(5);
const MOUNT_STEP_TIMEOUT: Duration = Duration::from_secs(15);
const CLAIM_STEP_TIMEOUT: Duration = Duration::from_secs(5);
const UNMOUNT_TIMEOUT: Duration = Duration::from_secs(5);
/// In an urgent demotion the lease is about to end (the fence budget is
/// 150 ms by default): the stack is killed, not stopped, and a busy volume
/// is detached lazily almost at once. These bound each step; the holder
/// raises an alarm if the lease ends before the demotion does.
const URGENT_KILL_TIMEOUT: Duration = Duration::from_millis(1_000);
const URGENT_UNMOUNT_TIMEOUT: Duration = Duration::from_millis(30);
const URGENT_ADDRESS_TIMEOUT: Duration = Duration::from_millis(500);
/// Making the database read-only is one statement on a local server.
const DATABASE_DEMOTE_TIMEOUT: Duration = Duration::from_secs(5);
const URGENT_DATABASE_DEMOTE_TIMEOUT: Duration = Duration::from_millis(500);
/// A planned demotion's last snapshot of a replicated volume: the node
/// keeps its lease meanwhile, so this delays the switchover, never safety.
const FINAL_SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// The node's drivers, shared by pipelines, the API and the reconciling
/// checks in the control loop.
#[derive(Clone)]
pub struct Drivers {
    pub floating_ip: Option<Arc<dyn FloatingIp>>,
    pub volumes: Vec<(String, Arc<dyn Volume>, Duration)>,
    pub services: Option<Arc<dyn Services>>,
    /// The replicated database (`[mariadb]`).
    pub database: Option<Arc<dyn Database>>,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
    pub has_checks: bool,
    /// The volumes this node replicates (`btrfs`, `zfs`), also in
    /// `volumes`: the replication worker and the peer endpoint use them.
    pub replicated: Vec<crate::storage::ReplicatedSet>,
    /// Set once replication runs: a planned demotion ships a last snapshot
    /// of a replicated volume before unmounting it.
    pub replication: Arc<std::sync::OnceLock<crate::storage::Replication>>,
    /// The repointing of the other databases a promotion started in the
    /// background. It may act only while this node may hold the role, so
    /// every demotion aborts it first (before the lease ends, hence before
    /// another node can be promoted and be repointed by a late straggler).
    repointing: Arc<std::sync::Mutex<Option<tokio::task::AbortHandle>>>,
}

impl Drivers {
    pub fn from_config(config: &Config) -> Result<Drivers, mailherd_drivers::DriverError> {
        if config.me().role == MemberRole::Witness {
            return Ok(Drivers::none());
        }
        let floating_ip = match &config.floating_ip {
            Some(section) => Some(Arc::from(mailherd_drivers::floating_ip_from_config(
                section,
                config.hetzner.as_ref(),
            )?)),
            None => None,
        };
        let mut volumes = Vec::new();
        let mut replicated = Vec::new();
        for section in &config.volumes {
            let driver: Arc<dyn Volume> = match &section.replication {
                Some(settings) => {
                    let volume = Arc::new(ReplicatedVolume::from_config(section)?);
                    replicated.push(crate::storage::ReplicatedSet {
                        volume: volume.clone(),
                        settings: settings.clone(),
                    });
                    volume
                }
                None => Arc::from(mailherd_drivers::volume_from_config(
                    section,
                    config.hetzner.as_ref(),
                )?),
            };
            volumes.push((
                section.name.clone(),
                driver,
                Duration::from_millis(section.device_wait_ms),
            ));
        }
        let (services, start_timeout, stop_timeout) = match &config.services {
            Some(section) => (
                Some(Arc::from(mailherd_drivers::services_from_config(section)?)),
                Duration::from_millis(section.start_timeout_ms),
                Duration::from_millis(section.stop_timeout_ms),
            ),
            None => (None, Duration::from_secs(30), Duration::from_secs(10)),
        };
        Ok(Drivers {
            floating_ip,
            volumes,
            services,
            database: mailherd_drivers::database_from_config(config)?,
            start_timeout,
            stop_timeout,
            has_checks: !config.checks.is_empty(),
            replicated,
            replication: Arc::default(),
            repointing: Arc::default(),
        })
    }

    pub fn none() -> Drivers {
        Drivers {
            floating_ip: None,
            volumes: Vec::new(),
            services: None,
            database: None,
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(10),
            has_checks: false,
            replicated: Vec::new(),
            replication: Arc::default(),
            repointing: Arc::default(),
        }
    }

    pub fn resources(&self) -> Resources {
        Resources {
            address: self.floating_ip.is_some(),
            volumes: self
                .volumes
                .iter()
                .map(|(name, _, _)| name.clone())
                .collect(),
            services: self.services.is_some(),
            checks: self.has_checks,
            database: self.database.is_some(),
        }
    }

    fn volume(&self, name: &str) -> Option<&(String, Arc<dyn Volume>, Duration)> {
        self.volumes.iter().find(|(n, _, _)| n == name)
    }

    /// What the host holds right now, read from the drivers.
    pub async fn observe(&self) -> Holdings {
        let address = match &self.floating_ip {
            Some(fip) => Some(fip.is_held().await.map_err(|e| e.to_string())),
            None => None,
        };
        let mut volumes = BTreeMap::new();
        for (name, volume, _) in &self.volumes {
            volumes.insert(
                name.clone(),
                volume.is_mounted().await.map_err(|e| e.to_string()),
            );
        }
        let services = match &self.services {
            Some(services) => Some(services.is_running().await.map_err(|e| e.to_string())),
            None => None,
        };
        let database = match &self.database {
            Some(database) => Some(database.is_writable().await.map_err(|e| e.to_string())),
            None => None,
        };
        Holdings {
            address,
            volumes,
            services,
            database,
        }
    }
}

/// What the host holds, as read from the drivers (errors as text); the
/// reconciler's rules about it live in the core.
pub use mailherd_core::reconcile::Holdings;

async fn with_timeout<F>(what: &str, timeout: Duration, future: F) -> Result<(), String>
where
    F: std::future::Future<Output = Result<(), mailherd_drivers::DriverError>>,
{
    match tokio::time::timeout(timeout, future).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("{what} timed out after {} ms", timeout.as_millis())),
    }
}

async fn run_promotion_step(
    drivers: &Drivers,
    monitor: Option<&Monitor>,
    epoch: Epoch,
    step: &Step,
) -> Result<(), String> {
    match step {
        Step::AcquireAddress => match &drivers.floating_ip {
            Some(fip) => {
                // A cloud driver bounds its API part itself; the step
                // leaves it that long on top of the local work.
                with_timeout(
                    "acquiring the floating IP",
                    ADDRESS_STEP_TIMEOUT + fip.api_budget(),
                    fip.acquire(),
                )
                .await
            }
            None => Ok(()),
        },
        Step::AttachVolume { volume } => match drivers.volume(volume) {
            Some((_, driver, wait)) => {
                with_timeout(
                    "attaching the volume",
                    *wait + Duration::from_secs(1) + driver.api_budget(),
                    driver.attach(*wait),
                )
                .await
            }
            None => Err(format!("unknown volume {volume}")),
        },
        Step::MountVolume { volume } => match drivers.volume(volume) {
            Some((_, driver, _)) => {
                with_timeout("mounting", MOUNT_STEP_TIMEOUT, driver.mount()).await
            }
            None => Err(format!("unknown volume {volume}")),
        },
        Step::ClaimEpoch { volume } => match drivers.volume(volume) {
            Some((_, driver, _)) => {
                with_timeout(
                    "claiming the epoch",
                    CLAIM_STEP_TIMEOUT,
                    driver.claim_epoch(epoch),
                )
                .await
            }
            None => Err(format!("unknown volume {volume}")),
        },
        Step::StartServices => match &drivers.services {
            Some(services) => {
                if let Some(monitor) = monitor {
                    monitor.reset();
                }
                with_timeout(
                    "starting the services",
                    drivers.start_timeout + Duration::from_secs(1),
                    services.start(drivers.start_timeout),
                )
                .await
            }
            None => Ok(()),
        },
        Step::PromoteDatabase => match &drivers.database {
            Some(database) => {
                let budget = database.promotion_budget();
                let result = match tokio::time::timeout(budget, database.promote()).await {
                    Ok(Ok(done)) => {
                        tracing::info!(%done, "database promoted");
                        Ok(())
                    }
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!(
                        "promoting the database timed out after {} ms",
                        budget.as_millis()
                    )),
                };
                if result.is_ok() {
                    // Best effort, and not worth delaying the stack for:
                    // the old master may be down (its agent makes it
                    // follow when it is back).
                    let database = database.clone();
                    let task = tokio::spawn(async move {
                        for (node, result) in database.repoint_others().await {
                            match result {
                                Ok(done) => {
                                    tracing::info!(%node, %done, "database follows this master")
                                }
                                Err(error) => {
                                    tracing::warn!(%node, %error, "could not repoint the database (its agent retries when it is back)")
                                }
                            }
                        }
                    });
                    let previous = drivers
                        .repointing
                        .lock()
                        .expect("never poisoned: no panics under the lock")
                        .replace(task.abort_handle());
                    if let Some(previous) = previous {
                        previous.abort();
                    }
                }
                result
            }
            None => Ok(()),
        },
        Step::WaitChecks => match monitor {
            Some(monitor) => monitor.wait_critical_up(drivers.start_timeout).await,
            None => Ok(()),
        },
        other => Err(format!("{} is not a promotion step", other.name())),
    }
}

/// How long the cloud API took in the move `step` just made (the floating
/// IP's assign, a volume's detach and attach), for the promotion record.
fn cloud_api_ms(drivers: &Drivers, step: &Step) -> Option<u64> {
    match step {
        Step::AcquireAddress => drivers.floating_ip.as_ref()?.last_api_ms(),
        Step::AttachVolume { volume } => drivers.volume(volume)?.1.last_api_ms(),
        _ => None,
    }
}

/// Runs the promotion pipeline for `epoch`. Stops at the first failed stage;
/// the caller then demotes (which undoes whatever was done).
pub async fn promote(
    drivers: &Drivers,
    monitor: Option<&Monitor>,
    epoch: Epoch,
) -> PromotionOutcome {
    let started = Instant::now();
    let recorder = run_plan(
        drivers,
        monitor,
        epoch,
        promotion_plan(&drivers.resources()),
    )
    .await;
    recorder.finish(started.elapsed().as_millis() as u64)
}

/// Runs the reconciler's repair plan on a master (see
/// `mailherd_core::reconcile::repair_plan`): the promotion's own steps, so
/// the same timeouts and the same epoch fence apply. A volume whose epoch
/// claim fails (it carries a higher epoch: another node was promoted) is
/// unmounted again at once.
pub async fn repair(drivers: &Drivers, epoch: Epoch, plan: Plan) -> Vec<StepRecord> {
    let mut steps = run_plan(drivers, None, epoch, plan).await.finish(0).steps;
    let mut undone = Vec::new();
    for step in &steps {
        if let Some(volume) = step.name.strip_prefix("claim_epoch:").filter(|_| !step.ok) {
            let undo = Step::UnmountVolume {
                volume: volume.to_string(),
            };
            let step_started = Instant::now();
            let result = run_demotion_step(drivers, true, &undo).await;
            let mut recorder = Recorder::default();
            recorder.record(&undo, step_started.elapsed().as_millis() as u64, &result);
            undone.extend(recorder.finish(0).steps);
        }
    }
    steps.extend(undone);
    steps
}

/// Runs `plan`'s stages in order, the steps of a stage in parallel; stops
/// after the first stage with a failed step.
async fn run_plan(
    drivers: &Drivers,
    monitor: Option<&Monitor>,
    epoch: Epoch,
    plan: Plan,
) -> Recorder {
    let mut recorder = Recorder::default();
    for stage in plan {
        let results = join_all(stage.iter().map(|step| async move {
            let step_started = Instant::now();
            let result = run_promotion_step(drivers, monitor, epoch, step).await;
            (step, step_started.elapsed().as_millis() as u64, result)
        }))
        .await;
        for (step, duration_ms, result) in &results {
            let api_ms = cloud_api_ms(drivers, step);
            if let Err(error) = result {
                tracing::warn!(step = %step.name(), %error, ?api_ms, "promotion step failed");
            } else {
                tracing::info!(step = %step.name(), duration_ms, ?api_ms, "promotion step done");
            }
            recorder.record_with_api_ms(step, *duration_ms, api_ms, result);
        }
        if recorder.first_error().is_some() {
            break;
        }
    }
    recorder
}

/// A planned demotion of a replicated volume ships one last snapshot (the
/// stack is stopped by now) so the next master starts with every write.
/// Bounded, and never fatal: without it the next master starts from the
/// last periodic snapshot, as after a crash.
async fn final_sync(drivers: &Drivers, volume: &str) {
    let Some(replication) = drivers.replication.get() else {
        return;
    };
    if !replication.replicates(volume) {
        return;
    }
    let started = Instant::now();
    match tokio::time::timeout(FINAL_SYNC_TIMEOUT, replication.final_sync(volume)).await {
        Ok(Ok(())) => tracing::info!(
            volume,
            ms = started.elapsed().as_millis() as u64,
            "last snapshot shipped before the unmount"
        ),
        Ok(Err(error)) => tracing::warn!(
            volume,
            %error,
            "last snapshot not shipped: the next master starts from the previous one"
        ),
        Err(_) => tracing::warn!(
            volume,
            timeout_ms = FINAL_SYNC_TIMEOUT.as_millis() as u64,
            "last snapshot not shipped in time: the next master starts from the previous one"
        ),
    }
}

async fn run_demotion_step(drivers: &Drivers, urgent: bool, step: &Step) -> Result<(), String> {
    match step {
        Step::StopServices => match &drivers.services {
            // Urgent: the lease is about to end, kill at once.
            Some(services) if urgent => {
                with_timeout(
                    "killing the services",
                    URGENT_KILL_TIMEOUT,
                    services.kill(URGENT_KILL_TIMEOUT),
                )
                .await
            }
            Some(services) => {
                // The driver falls back to its kill command when the stop
                // command does not finish in time; the outer bound leaves it
                // room to do so.
                with_timeout(
                    "stopping the services",
                    drivers.stop_timeout * 2 + Duration::from_secs(5),
                    services.stop(drivers.stop_timeout),
                )
                .await
            }
            None => Ok(()),
        },
        Step::UnmountVolume { volume } => match drivers.volume(volume) {
            Some((_, driver, _)) => {
                if !urgent {
                    final_sync(drivers, volume).await;
                }
                let timeout = if urgent {
                    URGENT_UNMOUNT_TIMEOUT
                } else {
                    UNMOUNT_TIMEOUT
                };
                with_timeout(
                    "unmounting",
                    timeout + Duration::from_secs(2),
                    driver.unmount(timeout),
                )
                .await
            }
            None => Err(format!("unknown volume {volume}")),
        },
        Step::DemoteDatabase => match &drivers.database {
            Some(database) => {
                let timeout = if urgent {
                    URGENT_DATABASE_DEMOTE_TIMEOUT
                } else {
                    DATABASE_DEMOTE_TIMEOUT
                };
                match tokio::time::timeout(timeout, database.demote()).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!(
                        "making the database read-only timed out after {} ms",
                        timeout.as_millis()
                    )),
                }
            }
            None => Ok(()),
        },
        Step::ReleaseAddress => match &drivers.floating_ip {
            Some(fip) => {
                let timeout = if urgent {
                    URGENT_ADDRESS_TIMEOUT
                } else {
                    ADDRESS_STEP_TIMEOUT
                };
                with_timeout("releasing the floating IP", timeout, fip.release()).await
            }
            None => Ok(()),
        },
        other => Err(format!("{} is not a demotion step", other.name())),
    }
}

/// Runs the demotion pipeline to the end (every step is tried even if an
/// earlier one failed) and returns what each step did.
pub async fn demote(drivers: &Drivers, urgent: bool) -> Vec<StepRecord> {
    if let Some(repointing) = drivers
        .repointing
        .lock()
        .expect("never poisoned: no panics under the lock")
        .take()
    {
        repointing.abort();
    }
    let mut recorder = Recorder::default();
    for stage in demotion_plan(&drivers.resources(), urgent) {
        let results = join_all(stage.iter().map(|step| async move {
            let step_started = Instant::now();
            let result = run_demotion_step(drivers, urgent, step).await;
            (step, step_started.elapsed().as_millis() as u64, result)
        }))
        .await;
        for (step, duration_ms, result) in &results {
            if let Err(error) = result {
                tracing::error!(step = %step.name(), %error, urgent, "demotion step failed");
            }
            recorder.record(step, *duration_ms, result);
        }
    }
    recorder.finish(0).steps
}

/// How often a demotion is run again when the host still holds something.
const DEMOTION_ATTEMPTS: u32 = 3;
const DEMOTION_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Demotes, then reads the host back through the drivers; retries (urgently)
/// while anything is still held. `Err` names what is left.
pub async fn demote_until_clean(drivers: &Drivers, urgent: bool) -> Result<(), String> {
    let mut urgent = urgent;
    for attempt in 1..=DEMOTION_ATTEMPTS {
        let steps = demote(drivers, urgent).await;
        let holdings = drivers.observe().await;
        if !holdings.holds_anything() {
            return Ok(());
        }
        let failed: Vec<String> = steps
            .iter()
            .filter(|s| !s.ok)
            .map(|s| format!("{}: {}", s.name, s.error.clone().unwrap_or_default()))
            .collect();
        tracing::error!(attempt, ?holdings, ?failed, "still holding after demotion");
        urgent = true;
        if attempt < DEMOTION_ATTEMPTS {
            tokio::time::sleep(DEMOTION_RETRY_PAUSE).await;
        } else {
            return Err(format!(
                "still held: {holdings:?}; failed steps: {failed:?}"
            ));
        }
    }
    unreachable!("the last attempt returns")
}
