//! The control loop: one task that owns the holder and the decider.
//!
//! Everything that takes time (proposals, pipelines) runs in spawned tasks
//! that report back through one channel, so the loop itself never blocks and
//! its timer keeps the lease arithmetic honest. The loop wakes every
//! [`TICK`] to pace renewals and to fence in time.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mailherd_config::{Config, MemberRole};
use mailherd_consensus::Consensus;
use mailherd_core::decider::{decide, Blocked, Candidate, DeciderView, Decision};
use mailherd_core::handover::{handover_due, Cadence};
use mailherd_core::state::{ClusterState, Command, NodeHealth, PromotionOutcome, Rejection};
use mailherd_core::{Holder, HolderAction, HolderEvent, Millis, RenewalOutcome};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::alerting::{self, Watchers};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::monitor::Monitor;
use crate::pipelines::{self, Drivers};
use crate::status::{
    AssignmentStatus, BreakerStatus, HistoryEntry, LeaderStatus, MemberStatus, StatusDocument,
};
use crate::watchdog::WatchdogGuard;
use crate::workers::Workers;

/// How often the loop wakes up. Small against the fence budget (150 ms by
/// default) so that fencing starts on time.
const TICK: Duration = Duration::from_millis(10);
/// How often the status document is rebuilt.
const STATUS_EVERY: Duration = Duration::from_millis(100);
/// How long a clean shutdown may take to demote and release.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(30);
/// How many history entries the status document shows.
const STATUS_HISTORY: usize = 20;

/// The watchdog as `execute` needs it: to arm before a promotion.
struct Watch<'a> {
    guard: Option<&'a mut WatchdogGuard>,
    lease_end: Option<Millis>,
}

/// Results of spawned work, reported back to the loop.
enum Event {
    Holder(HolderEvent),
    /// The end of pipeline run `id`; ignored unless it is the current run
    /// (a superseded run's late report must not end its successor).
    Pipeline {
        id: u64,
        event: HolderEvent,
    },
    AssignDone,
    HealthDone,
    ReleaseDone,
    /// The reconciler's reading of the host, taken while the pipeline
    /// generation was `generation`.
    Observed {
        generation: u64,
        holdings: pipelines::Holdings,
    },
    /// A reconcile action (release or repair) or a garbage collection pass
    /// of `worker` ended.
    ActionDone {
        generation: u64,
        worker: &'static str,
        result: Result<String, String>,
        /// Whether it changed something (a dry run or an empty pass did not).
        acted: bool,
    },
}

impl Event {
    /// The end of an action that changed something.
    fn acted(generation: u64, worker: &'static str, result: Result<String, String>) -> Event {
        Event::ActionDone {
            generation,
            worker,
            result,
            acted: true,
        }
    }
}

/// A garbage collection pass asked for through the API (`POST /v1/gc`).
pub struct GcRequest {
    pub dry_run: bool,
    /// The report, or why no pass ran.
    pub reply: tokio::sync::oneshot::Sender<Result<crate::gc::GcReport, String>>,
}

/// The reconciler's bookkeeping in the control loop (design invariant 4).
///
/// It reads the host in a spawned task and decides in the loop, with the
/// holder's phase as it is *then*; a reading taken before a pipeline
/// started is thrown away (`generation`), and a reconcile action is
/// aborted the moment a pipeline starts. So the reconciler never acts on a
/// stale picture and never runs beside a promotion or demotion.
struct Reconciler {
    /// Zero: off.
    interval_ms: u64,
    last_started: Option<Millis>,
    /// A reading is in flight.
    observing: bool,
    /// Bumped whenever a pipeline starts: readings and actions of an older
    /// generation are void.
    generation: u64,
    /// The release, repair or garbage collection pass in progress (and
    /// the worker it belongs to), aborted by any pipeline start.
    acting: Option<(JoinHandle<()>, &'static str)>,
    /// When the last periodic garbage collection pass started.
    last_gc: Option<Millis>,
    /// To record an abandoned action as the end of its round.
    workers: Workers,
}

impl Reconciler {
    /// Called before a promotion or demotion starts.
    fn yield_to_pipeline(&mut self) {
        self.generation += 1;
        if let Some((task, worker)) = self.acting.take() {
            task.abort();
            tracing::info!(worker, "action abandoned: a pipeline takes over the host");
            self.workers.finished(
                worker,
                Ok("abandoned: a pipeline took over the host".into()),
            );
        }
    }
}

/// The worker names the control loop reports under.
pub const CONTROL_WORKER: &str = "control_loop";
pub const RECONCILER_WORKER: &str = "reconciler";

pub struct Control {
    config: Arc<Config>,
    consensus: Consensus,
    drivers: Drivers,
    monitor: Option<Monitor>,
    clock: Clock,
    status_tx: watch::Sender<StatusDocument>,
    /// Numbers pipeline runs.
    next_run_id: std::sync::atomic::AtomicU64,
    /// Where failovers, the breaker, fencing and the rest are told; `send`
    /// only queues, so the loop never waits for a receiver.
    alerter: mailherd_alerts::Alerter,
    /// `/metrics`: counted here as renewals end, assignments apply and
    /// promotions finish; the gauges follow the status document.
    metrics: Metrics,
    /// Where the loop and the reconciler report their rounds for `/status`.
    workers: Workers,
    replication: Option<crate::storage::Replication>,
    /// Whether this node's renewals go through relays.
    relaying: Arc<Relaying>,
}

/// Whether renewals reach the leader directly or only through relays
/// (other voters proposing them for this node): every relayed one is
/// counted, and the log says when relaying starts and when renewals have
/// gone directly again for [`DIRECT_AGAIN`] in a row (so that a leader
/// that is merely slow now and then does not flood the log).
#[derive(Default)]
struct Relaying(std::sync::Mutex<RelayingState>);

#[derive(Default)]
struct RelayingState {
    relaying: bool,
    direct_in_a_row: u32,
}

const DIRECT_AGAIN: u32 = 10;

impl Relaying {
    fn note(&self, via: Option<u64>, metrics: &Metrics) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match via {
            Some(relay) => {
                metrics.renewal_relayed();
                state.direct_in_a_row = 0;
                if !state.relaying {
                    state.relaying = true;
                    tracing::warn!(
                        relay,
                        "lease renewals go through other voters: the Raft leader does not confirm them directly"
                    );
                }
            }
            None if state.relaying => {
                state.direct_in_a_row += 1;
                if state.direct_in_a_row >= DIRECT_AGAIN {
                    *state = RelayingState::default();
                    tracing::info!(
                        "lease renewals are confirmed by the Raft leader directly again"
                    );
                }
            }
            None => {}
        }
    }

    /// A renewal failed: whatever comes next (relayed or direct) is a new
    /// episode and is logged as such.
    fn forget(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = RelayingState::default();
    }
}

/// The decider's bookkeeping, on this node's clock.
struct DeciderClock {
    /// When this node last became leader (None while it is not leader);
    /// only whether it is set matters to the decider (see core::decider).
    leader_since: Option<Millis>,
    leader_term: u64,
    /// When the entry behind the last change of epoch or renewal count
    /// arrived here.
    last_progress_seen: Millis,
    seen: (u64, u64),
    /// How steadily the current epoch's renewals arrive (for handing
    /// leadership to the master; see mailherd_core::handover).
    cadence: Cadence,
    /// One assignment proposal at a time.
    assign_in_flight: bool,
    /// What keeps the decider from assigning, if anything (for the log's
    /// alert on change and for `status`).
    blocked: Option<Blocked>,
}

impl Control {
    // Each argument is a distinct part the agent wired up; a struct of
    // them would only repeat these names.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        consensus: Consensus,
        drivers: Drivers,
        monitor: Option<Monitor>,
        clock: Clock,
        status_tx: watch::Sender<StatusDocument>,
        alerter: mailherd_alerts::Alerter,
        metrics: Metrics,
    ) -> Control {
        Control {
            config,
            consensus,
            drivers,
            monitor,
            clock,
            status_tx,
            next_run_id: std::sync::atomic::AtomicU64::new(1),
            alerter,
            metrics,
            workers: Workers::default(),
            replication: None,
            relaying: Arc::default(),
        }
    }

    /// Storage replication, whose report `/status` shows.
    pub fn with_replication(mut self, replication: Option<crate::storage::Replication>) -> Control {
        self.replication = replication;
        self
    }

    /// Reports the loop's, the reconciler's and the collector's rounds to
    /// `workers` (the registry `/status` lists) instead of a private one.
    pub fn with_workers(mut self, workers: Workers) -> Control {
        self.workers = workers;
        self
    }

    /// `stored_assignment` is the assignment as this node's storage held it
    /// when the agent started, before it heard from any peer: only that one
    /// can be left over from a previous run.
    pub async fn run(
        self,
        stored_assignment: Option<mailherd_core::Assignment>,
        mut gc_requests: mpsc::Receiver<GcRequest>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        let me = self.config.me().clone();
        let timing = self.config.cluster.timing();
        let is_witness = me.role == MemberRole::Witness;
        let (events_tx, mut events_rx) = mpsc::unbounded_channel::<Event>();
        let mut state_rx = self.consensus.state();
        let mut leadership_rx = self.consensus.leadership_watch();
        let mut state: Arc<ClusterState> = state_rx.borrow_and_update().clone();

        let mut holder = None;
        let mut pending: Vec<HolderAction> = Vec::new();
        if !is_witness {
            // Not `state.assignment`: by now Raft may already have applied
            // a fresh assignment to this node, which is not a leftover.
            let (h, actions) = Holder::new(me.id, timing.lease, timing.grace_ms, stored_assignment);
            holder = Some(h);
            pending = actions;
        }
        let mut pipeline: Option<Running> = None;
        let mut watchdog = WatchdogGuard::from_config(&self.config);
        // Leadership may already be ours at start (openraft restores a
        // leader's term from storage): the watch's first value counts as
        // seen and would never be reported as a change.
        let initial_leadership = *leadership_rx.borrow_and_update();
        let mut decider = DeciderClock {
            leader_since: initial_leadership.is_me.then(|| self.clock.now()),
            leader_term: initial_leadership.term,
            last_progress_seen: self.clock.now(),
            seen: (state.epoch, state.renewals),
            cadence: Cadence::default(),
            assign_in_flight: false,
            blocked: None,
        };
        let mut not_ready_since: Option<Millis> = None;
        let mut health_in_flight = false;
        let mut releases_in_flight = 0usize;
        let mut last_status = self.clock.now().minus(STATUS_EVERY.as_millis() as u64);
        let mut last_garp = self.clock.now();
        let mut shutting_down_since: Option<Millis> = None;
        let mut last_leadership_transfer: Option<Millis> = None;
        let mut watchers = Watchers::default();
        // Assignments up to this epoch are counted in `/metrics` (those
        // stored before this start are not news).
        let mut assignments_counted_to = state.epoch;
        let mut reconciler = Reconciler {
            interval_ms: self.config.reconciler.interval_ms,
            last_started: None,
            observing: false,
            generation: 0,
            acting: None,
            last_gc: None,
            workers: self.workers.clone(),
        };
        self.workers.register(CONTROL_WORKER);
        if reconciler.interval_ms > 0 {
            self.workers.register(RECONCILER_WORKER);
        }
        self.workers.register(crate::gc::GC_WORKER);

        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let shutdown = tokio::spawn(shutdown);
        tokio::pin!(shutdown);

        loop {
            // Carry out what the holder asked for.
            let lease_end = holder.as_ref().and_then(|h| h.lease_end());
            for action in pending.drain(..) {
                self.execute(
                    action,
                    &events_tx,
                    &mut pipeline,
                    &mut releases_in_flight,
                    &mut reconciler,
                    Watch {
                        guard: watchdog.as_mut(),
                        lease_end,
                    },
                );
            }
            let now = self.clock.now();
            if let Some(since) = shutting_down_since {
                let idle = holder
                    .as_ref()
                    .is_none_or(|h| *h.phase() == mailherd_core::Phase::Backup);
                if (idle && releases_in_flight == 0)
                    || now.since(since) >= SHUTDOWN_LIMIT.as_millis() as u64
                {
                    break;
                }
            }

            tokio::select! {
                _ = &mut shutdown, if shutting_down_since.is_none() => {
                    tracing::info!("shutdown requested: demoting and releasing");
                    shutting_down_since = Some(now);
                    if let Some(h) = holder.as_mut() {
                        pending.extend(h.handle(now, HolderEvent::Shutdown));
                    }
                }
                changed = state_rx.changed() => {
                    if changed.is_err() {
                        tracing::error!("consensus state channel closed");
                        break;
                    }
                    state = state_rx.borrow_and_update().clone();
                    self.count_new_assignments(&state, &mut assignments_counted_to);
                    watchers.maintenance(&self.alerter, state.maintenance.is_some(), decider.leader_since.is_some());
                    let now = self.clock.now();
                    if (state.epoch, state.renewals) != decider.seen {
                        decider.seen = (state.epoch, state.renewals);
                        // From when the entry arrived here, not when it was
                        // applied: after a leader dies the last renewals are
                        // applied only an election later (see
                        // mailherd_consensus's arrivals module). Never later
                        // than now, never earlier than this process.
                        decider.last_progress_seen = self
                            .consensus
                            .last_progress_arrival()
                            .map(|at| self.clock.at(at))
                            .unwrap_or(now)
                            .min(now);
                        decider.cadence.observe(state.epoch, decider.last_progress_seen, now);
                    }
                    if let Some(h) = holder.as_mut() {
                        pending.extend(h.handle(now, HolderEvent::Maintenance { on: state.maintenance.is_some() }));
                        pending.extend(h.handle(now, HolderEvent::Applied { assignment: state.assignment }));
                        if let Some(request) = &state.switchover {
                            pending.extend(h.handle(now, HolderEvent::SwitchoverRequested {
                                epoch: request.epoch,
                                to: request.to,
                            }));
                        }
                    }
                }
                changed = leadership_rx.changed() => {
                    if changed.is_ok() {
                        let leadership = *leadership_rx.borrow_and_update();
                        let now = self.clock.now();
                        if leadership.is_me {
                            if decider.leader_since.is_none() || decider.leader_term != leadership.term {
                                tracing::info!(term = leadership.term, "became Raft leader: deciding");
                                decider.leader_since = Some(now);
                                decider.leader_term = leadership.term;
                            }
                        } else if decider.leader_since.take().is_some() {
                            tracing::info!(leader = ?leadership.leader, "no longer Raft leader");
                        }
                    }
                }
                Some(request) = gc_requests.recv() => {
                    self.start_gc(request.dry_run, Some(request.reply), holder.as_ref(), pipeline.is_some(), &mut reconciler, &events_tx);
                }
                Some(event) = events_rx.recv() => {
                    let now = self.clock.now();
                    match event {
                        Event::Holder(event) => {
                            if let Some(h) = holder.as_mut() {
                                pending.extend(h.handle(now, event));
                            }
                        }
                        Event::Pipeline { id, event } => {
                            if pipeline.as_ref().is_some_and(|running| running.id == id) {
                                pipeline = None;
                                if let Some(h) = holder.as_mut() {
                                    pending.extend(h.handle(now, event));
                                }
                            } else {
                                tracing::debug!(id, ?event, "ignoring the report of a superseded pipeline run");
                            }
                        }
                        Event::Observed { generation, holdings } => {
                            reconciler.observing = false;
                            self.reconcile(now, generation, holdings, holder.as_ref(), pipeline.is_some(), &mut reconciler, &events_tx);
                        }
                        Event::ActionDone { generation, worker, result, acted } => {
                            if generation == reconciler.generation {
                                reconciler.acting = None;
                            }
                            if let Err(error) = &result {
                                tracing::error!(worker, %error, "action failed");
                            }
                            if acted {
                                let (Ok(what) | Err(what)) = &result;
                                self.workers.acted(worker, self.clock.unix_ms(), what);
                            }
                            self.workers.finished(worker, result);
                        }
                        Event::AssignDone => decider.assign_in_flight = false,
                        Event::HealthDone => health_in_flight = false,
                        Event::ReleaseDone => releases_in_flight = releases_in_flight.saturating_sub(1),
                    }
                }
                _ = ticker.tick() => {
                    let now = self.clock.now();
                    if let Some(h) = holder.as_mut() {
                        pending.extend(h.handle(now, HolderEvent::Tick));
                        if let Some(guard) = watchdog.as_mut() {
                            guard.tick(now, h);
                        }
                        if h.is_master() {
                            if let Some(monitor) = &self.monitor {
                                let report = monitor.report();
                                watchers.verdict(&self.alerter, report.verdict, &report.detail);
                                pending.extend(h.handle(now, HolderEvent::Verdict {
                                    verdict: report.verdict,
                                    detail: report.detail,
                                }));
                            }
                            self.refresh_garp_if_due(now, &mut last_garp);
                        } else {
                            watchers.not_master();
                        }
                    }
                    // The decider keeps running while this node shuts down:
                    // it is usually the Raft leader (on the master), and the
                    // fast path after its own release depends on it.
                    self.run_decider(now, &state, &mut decider, &events_tx, shutting_down_since.is_some());
                    if shutting_down_since.is_none() {
                        self.start_reconcile_if_due(now, &mut reconciler, pipeline.is_some(), &events_tx);
                        let gc_interval_ms = self.config.gc.interval_s.saturating_mul(1_000);
                        if gc_interval_ms > 0
                            && reconciler.acting.is_none()
                            && pipeline.is_none()
                            // The first pass a full interval after start:
                            // the start-up cleanup comes first.
                            && now.since(reconciler.last_gc.unwrap_or(Millis(0))) >= gc_interval_ms
                        {
                            reconciler.last_gc = Some(now);
                            self.start_gc(false, None, holder.as_ref(), false, &mut reconciler, &events_tx);
                        }
                        self.hand_leadership_to_master(now, &state, &decider, &mut last_leadership_transfer);
                        if let Some(h) = holder.as_ref() {
                            self.report_readiness(now, &state, h, &mut not_ready_since, &mut health_in_flight, &events_tx);
                        }
                    }
                    if now.since(last_status) >= STATUS_EVERY.as_millis() as u64 {
                        last_status = now;
                        if decider.leader_since.is_some() {
                            watchers.reachability(&self.alerter, &self.config, &state, self.reachability(&state));
                        } else {
                            watchers.not_deciding();
                        }
                        self.workers.alive(
                            CONTROL_WORKER,
                            self.clock.unix_ms(),
                            format!("phase {}", holder.as_ref().map_or("witness", |h| h.phase().name())),
                        );
                        self.publish_status(now, &state, holder.as_ref(), decider.blocked.as_ref(), watchdog.as_ref());
                    }
                }
            }
        }
        if let Some(running) = pipeline {
            running.task.abort();
        }
        reconciler.yield_to_pipeline();
        // Leaving must leave nothing held: if the graceful demotion did not
        // finish within the shutdown limit, kill what is left.
        if holder
            .as_ref()
            .is_some_and(|h| *h.phase() != mailherd_core::Phase::Backup)
        {
            tracing::error!("shutdown limit reached while still demoting: killing what is left");
            pipelines::demote(&self.drivers, true).await;
            // The watchdog stays armed: if the kill did not let go of
            // everything, the reset will.
        } else if let (Some(guard), Some(h)) = (watchdog.as_mut(), holder.as_ref()) {
            guard.tick(self.clock.now(), h);
        }
        // Hand Raft leadership on, preferably to the new master, so the
        // cluster does not wait out an election after this node exits.
        if self.consensus.leadership().is_me {
            let me = self.config.me().id;
            let target = state
                .assignment
                .map(|a| a.node)
                .filter(|node| *node != me)
                .or_else(|| {
                    self.config
                        .effective_members(&state)
                        .iter()
                        .map(|m| m.id)
                        .find(|id| *id != me)
                });
            if let Some(target) = target {
                tracing::info!(to = target, "handing Raft leadership on before exiting");
                match tokio::time::timeout(
                    Duration::from_secs(2),
                    self.consensus.transfer_leadership(target),
                )
                .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::warn!(%error, "could not hand Raft leadership on"),
                    Err(_) => tracing::warn!("handing Raft leadership on did not finish in time"),
                }
            }
        }
        let now = self.clock.now();
        self.publish_status(
            now,
            &state,
            holder.as_ref(),
            decider.blocked.as_ref(),
            watchdog.as_ref(),
        );
    }

    fn execute(
        &self,
        action: HolderAction,
        events: &mpsc::UnboundedSender<Event>,
        pipeline: &mut Option<Running>,
        releases_in_flight: &mut usize,
        reconciler: &mut Reconciler,
        watch: Watch<'_>,
    ) {
        let run_id = self
            .next_run_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let me = self.config.me().id;
        let lease = self.config.cluster.timing().lease;
        let lease_ms = lease.lease_ms;
        match action {
            HolderAction::ProposeRenewal { epoch, started } => {
                let consensus = self.consensus.clone();
                let events = events.clone();
                let metrics = self.metrics.clone();
                // A renewal not confirmed within half an interval also goes
                // through the other voters: a master cut off from a leader
                // that sits on a backup keeps its role through the rest.
                let relay_after = Duration::from_millis(lease.renew_interval_ms / 2);
                let relaying = self.relaying.clone();
                tokio::spawn(async move {
                    let proposed = std::time::Instant::now();
                    let result = consensus
                        .propose_with_relays(
                            Command::Renew { node: me, epoch },
                            Duration::from_millis(lease_ms),
                            relay_after,
                        )
                        .await;
                    match &result {
                        Ok(applied) => relaying.note(applied.via, &metrics),
                        Err(_) => relaying.forget(),
                    }
                    let outcome = match result.map(|applied| applied.result) {
                        Ok(Ok(())) => RenewalOutcome::Confirmed,
                        Ok(Err(rejection)) => {
                            tracing::warn!(epoch, %rejection, "renewal rejected");
                            RenewalOutcome::Rejected
                        }
                        Err(error) => {
                            tracing::debug!(epoch, %error, "renewal did not commit");
                            RenewalOutcome::Failed
                        }
                    };
                    metrics.renewal_finished(outcome, proposed.elapsed());
                    let _ = events.send(Event::Holder(HolderEvent::RenewalFinished {
                        epoch,
                        started,
                        outcome,
                    }));
                });
            }
            HolderAction::StartPromotion { epoch } => {
                tracing::info!(epoch, "promotion started");
                reconciler.yield_to_pipeline();
                alerting::promotion_started(
                    &self.alerter,
                    &self.config,
                    &self.consensus.current_state(),
                    epoch,
                );
                if let Some(running) = pipeline.take() {
                    running.task.abort();
                }
                if let Some(guard) = watch.guard {
                    if let Err(reason) = guard.arm_for_promotion(self.clock.now(), watch.lease_end)
                    {
                        tracing::error!(epoch, %reason, "promotion refused: the watchdog is required");
                        alerting::promotion_finished(
                            &self.alerter,
                            &self.config,
                            &self.consensus.current_state(),
                            epoch,
                            &PromotionOutcome {
                                ok: false,
                                total_ms: 0,
                                steps: Vec::new(),
                                error: Some(reason.clone()),
                            },
                        );
                        record_promotion(
                            self.consensus.clone(),
                            me,
                            epoch,
                            PromotionOutcome {
                                ok: false,
                                total_ms: 0,
                                steps: Vec::new(),
                                error: Some(reason.clone()),
                            },
                        );
                        let events = events.clone();
                        let task = tokio::spawn(async move {
                            let _ = events.send(Event::Pipeline {
                                id: run_id,
                                event: HolderEvent::PromotionFinished {
                                    epoch,
                                    result: Err(reason),
                                },
                            });
                        });
                        *pipeline = Some(Running {
                            task,
                            kind: PipelineKind::Promotion { epoch },
                            id: run_id,
                        });
                        return;
                    }
                }
                let drivers = self.drivers.clone();
                let monitor = self.monitor.clone();
                let consensus = self.consensus.clone();
                let events = events.clone();
                let (alerter, config) = (self.alerter.clone(), self.config.clone());
                let metrics = self.metrics.clone();
                let task = tokio::spawn(async move {
                    let outcome = pipelines::promote(&drivers, monitor.as_ref(), epoch).await;
                    let state = consensus.current_state();
                    alerting::promotion_finished(&alerter, &config, &state, epoch, &outcome);
                    let kind = state
                        .history
                        .iter()
                        .rev()
                        .find(|record| record.epoch == epoch)
                        .map(|record| record.kind)
                        .unwrap_or_default();
                    metrics.promotion_finished(kind, &outcome);
                    let result = match &outcome.error {
                        None => {
                            tracing::info!(
                                epoch,
                                total_ms = outcome.total_ms,
                                "promotion complete: this node is master"
                            );
                            Ok(())
                        }
                        Some(error) => {
                            tracing::error!(epoch, %error, "promotion failed: rolling back");
                            Err(error.clone())
                        }
                    };
                    record_promotion(consensus, me, epoch, outcome);
                    let _ = events.send(Event::Pipeline {
                        id: run_id,
                        event: HolderEvent::PromotionFinished { epoch, result },
                    });
                });
                *pipeline = Some(Running {
                    task,
                    kind: PipelineKind::Promotion { epoch },
                    id: run_id,
                });
            }
            HolderAction::StartDemotion {
                epoch,
                urgent,
                reason,
            } => {
                reconciler.yield_to_pipeline();
                if urgent {
                    tracing::warn!(epoch, %reason, "fencing: urgent demotion");
                    // Epoch 0 is the start-up cleanup; a retry was alerted the first time.
                    if epoch != 0 && !reason.starts_with("retrying") {
                        self.alerter
                            .send(mailherd_alerts::Event::lease_lost(epoch, &reason));
                    }
                } else {
                    tracing::info!(epoch, %reason, "demotion started");
                }
                if let Some(running) = pipeline.take() {
                    // Abandoning a promotion is safe: a command it ran is
                    // killed with its process group when dropped, and a
                    // mount still running on the blocking pool finishes
                    // before the demotion's unmount may start.
                    running.task.abort();
                    if let PipelineKind::Promotion { epoch } = running.kind {
                        let outcome = PromotionOutcome {
                            ok: false,
                            total_ms: 0,
                            steps: Vec::new(),
                            error: Some(format!("promotion abandoned: {reason}")),
                        };
                        alerting::promotion_finished(
                            &self.alerter,
                            &self.config,
                            &self.consensus.current_state(),
                            epoch,
                            &outcome,
                        );
                        record_promotion(self.consensus.clone(), me, epoch, outcome);
                    }
                }
                let drivers = self.drivers.clone();
                let events = events.clone();
                let task = tokio::spawn(async move {
                    let event = match pipelines::demote_until_clean(&drivers, urgent).await {
                        Ok(()) => {
                            tracing::info!(epoch, "demotion finished: nothing held");
                            HolderEvent::DemotionFinished { epoch }
                        }
                        Err(detail) => HolderEvent::DemotionIncomplete { epoch, detail },
                    };
                    let _ = events.send(Event::Pipeline { id: run_id, event });
                });
                *pipeline = Some(Running {
                    task,
                    kind: PipelineKind::Demotion,
                    id: run_id,
                });
            }
            HolderAction::ProposeRelease { epoch, reason } => {
                tracing::info!(epoch, reason = %reason.describe(), "releasing the role");
                *releases_in_flight += 1;
                let consensus = self.consensus.clone();
                let events = events.clone();
                let at_unix_ms = self.clock.unix_ms();
                tokio::spawn(async move {
                    let command = Command::Release {
                        node: me,
                        epoch,
                        reason,
                        at_unix_ms,
                    };
                    match propose_with_retries(&consensus, command, 20, Duration::from_millis(100))
                        .await
                    {
                        Some(Ok(())) => {}
                        Some(Err(rejection)) => {
                            tracing::info!(epoch, %rejection, "release not needed")
                        }
                        None => tracing::error!(
                            epoch,
                            "release never committed; the decider will wait out the lease"
                        ),
                    }
                    let _ = events.send(Event::ReleaseDone);
                });
            }
            HolderAction::DemotionIncomplete { epoch, detail } => {
                tracing::error!(
                    epoch,
                    %detail,
                    "demotion left resources held: keeping the role (not releasing) and retrying"
                );
            }
            HolderAction::LeaseEndedWhileHolding { epoch } => {
                tracing::error!(
                    epoch,
                    "SPLIT-BRAIN RISK: the lease ended while this node still held resources (demotion too slow)"
                );
                self.alerter.send(mailherd_alerts::Event::split_brain(
                    Some(epoch),
                    "the lease ended while this node still held resources (demotion too slow)",
                ));
            }
        }
    }

    /// Counts in `/metrics` every assignment applied since the last call.
    /// The watch may skip states, so the history says what happened.
    fn count_new_assignments(&self, state: &ClusterState, counted_to: &mut u64) {
        for record in state.history.iter().filter(|r| r.epoch > *counted_to) {
            self.metrics.failover_seen(record.kind);
        }
        *counted_to = (*counted_to).max(state.epoch);
    }

    /// Starts a reading of the host when a reconcile round is due and
    /// nothing else owns the host.
    fn start_reconcile_if_due(
        &self,
        now: Millis,
        reconciler: &mut Reconciler,
        pipeline_running: bool,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        if reconciler.interval_ms == 0
            || reconciler.observing
            || reconciler.acting.is_some()
            || pipeline_running
            || reconciler
                .last_started
                .is_some_and(|at| now.since(at) < reconciler.interval_ms)
        {
            return;
        }
        reconciler.last_started = Some(now);
        reconciler.observing = true;
        self.workers
            .started(RECONCILER_WORKER, self.clock.unix_ms());
        let drivers = self.drivers.clone();
        let events = events.clone();
        let generation = reconciler.generation;
        tokio::spawn(async move {
            let holdings = drivers.observe().await;
            let _ = events.send(Event::Observed {
                generation,
                holdings,
            });
        });
    }

    /// Decides on a reading of the host (`mailherd_core::reconcile`) with
    /// the holder as it is now, and starts the release or repair it calls
    /// for.
    #[allow(clippy::too_many_arguments)]
    fn reconcile(
        &self,
        now: Millis,
        generation: u64,
        holdings: pipelines::Holdings,
        holder: Option<&Holder>,
        pipeline_running: bool,
        reconciler: &mut Reconciler,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        use mailherd_core::reconcile::{describe, reconcile, ReconcileDecision, ReconcileView};
        if generation != reconciler.generation {
            self.workers.finished(
                RECONCILER_WORKER,
                Ok("skipped: a pipeline started while the host was read".into()),
            );
            return;
        }
        let backup = mailherd_core::Phase::Backup;
        let phase = holder.map_or(&backup, |h| h.phase());
        let lease = self.config.cluster.timing().lease;
        let view = ReconcileView {
            phase,
            pipeline_running: pipeline_running || reconciler.acting.is_some(),
            now,
            fence_at: holder
                .and_then(|h| h.lease_end())
                .map(|end| lease.fence_at(end)),
        };
        let drivers = self.drivers.clone();
        let done = events.clone();
        match reconcile(&view, &holdings) {
            ReconcileDecision::InOrder => {
                let held = holdings.held();
                self.workers.finished(
                    RECONCILER_WORKER,
                    Ok(if held.is_empty() {
                        format!("in order: {} holds nothing", phase.name())
                    } else {
                        format!("in order: {} holds {}", phase.name(), describe(&held))
                    }),
                );
            }
            ReconcileDecision::Skip { reason } => {
                self.workers
                    .finished(RECONCILER_WORKER, Ok(format!("skipped: {reason}")));
            }
            ReconcileDecision::Unreadable { errors } => {
                let detail = errors
                    .iter()
                    .map(|(resource, error)| format!("{resource}: {error}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::warn!(%detail, "reconciler could not read the host");
                self.workers
                    .finished(RECONCILER_WORKER, Err(format!("could not read: {detail}")));
            }
            ReconcileDecision::ReleaseStray { stray } => {
                let detail = format!(
                    "{} is {} but holds {}: released by the reconciler",
                    self.config.me().name,
                    phase.name(),
                    describe(&stray)
                );
                tracing::error!(
                    split_brain = true,
                    phase = phase.name(),
                    stray = %describe(&stray),
                    "SPLIT-BRAIN ALARM: this node holds what it must not; releasing it"
                );
                self.alerter
                    .send(mailherd_alerts::Event::split_brain(None, &detail));
                let task = tokio::spawn(async move {
                    // The same urgent demotion (kill, lazy unmount, drop the
                    // address) and read-back as the fence and the start-up
                    // cleanup use.
                    let result = match pipelines::demote_until_clean(&drivers, true).await {
                        Ok(()) => Ok(format!("released {}", describe(&stray))),
                        Err(left) => Err(format!("releasing {}: {left}", describe(&stray))),
                    };
                    let _ = done.send(Event::acted(generation, RECONCILER_WORKER, result));
                });
                reconciler.acting = Some((task, RECONCILER_WORKER));
            }
            ReconcileDecision::Repair {
                epoch,
                missing,
                plan,
            } => {
                tracing::warn!(
                    epoch,
                    missing = %describe(&missing),
                    "drift: the master lacks what its role requires; acquiring it again"
                );
                let alerter = self.alerter.clone();
                let task = tokio::spawn(async move {
                    let steps = pipelines::repair(&drivers, epoch, plan).await;
                    let failed: Vec<String> = steps
                        .iter()
                        .filter(|s| !s.ok)
                        .map(|s| format!("{}: {}", s.name, s.error.clone().unwrap_or_default()))
                        .collect();
                    let result = if failed.is_empty() {
                        tracing::warn!(epoch, missing = %describe(&missing), "drift repaired");
                        Ok(format!("re-acquired {}", describe(&missing)))
                    } else {
                        Err(format!(
                            "re-acquiring {}: {}",
                            describe(&missing),
                            failed.join("; ")
                        ))
                    };
                    let detail = match &result {
                        Ok(done) | Err(done) => done.clone(),
                    };
                    alerter.send(mailherd_alerts::Event::drift_repaired(
                        epoch,
                        &detail,
                        result.is_ok(),
                    ));
                    let _ = done.send(Event::acted(generation, RECONCILER_WORKER, result));
                });
                reconciler.acting = Some((task, RECONCILER_WORKER));
            }
        }
    }

    /// Starts a garbage collection pass (periodic, or asked for with
    /// `reply`) in the reconciler's action slot: one at a time, never beside
    /// a pipeline, aborted when one starts.
    fn start_gc(
        &self,
        dry_run: bool,
        reply: Option<tokio::sync::oneshot::Sender<Result<crate::gc::GcReport, String>>>,
        holder: Option<&Holder>,
        pipeline_running: bool,
        reconciler: &mut Reconciler,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        use crate::gc::GC_WORKER;
        if reconciler.acting.is_some() || pipeline_running {
            if let Some(reply) = reply {
                let _ = reply.send(Err(
                    "busy: a pipeline, a reconcile action or another pass runs; try again".into(),
                ));
            }
            return;
        }
        self.workers.started(GC_WORKER, self.clock.unix_ms());
        let phase = holder.map_or(mailherd_core::Phase::Backup, |h| h.phase().clone());
        let (config, drivers, consensus) = (
            self.config.clone(),
            self.drivers.clone(),
            self.consensus.clone(),
        );
        let now_unix_ms = self.clock.unix_ms();
        let generation = reconciler.generation;
        let done = events.clone();
        let task = tokio::spawn(async move {
            let report = crate::gc::run_pass(crate::gc::GcPass {
                config: &config,
                drivers: &drivers,
                consensus: Some(&consensus),
                phase: Some(&phase),
                pipeline_running: false,
                dry_run,
                now_unix_ms,
            })
            .await;
            let result = if report.failed() {
                Err(report.summary())
            } else {
                Ok(report.summary())
            };
            let acted = !report.dry_run && !report.found.is_empty();
            if let Some(reply) = reply {
                let _ = reply.send(Ok(report));
            }
            let _ = done.send(Event::ActionDone {
                generation,
                worker: GC_WORKER,
                result,
                acted,
            });
        });
        reconciler.acting = Some((task, GC_WORKER));
    }

    fn refresh_garp_if_due(&self, now: Millis, last_garp: &mut Millis) {
        let Some(section) = &self.config.floating_ip else {
            return;
        };
        if section.garp_refresh_ms == 0 || now.since(*last_garp) < section.garp_refresh_ms {
            return;
        }
        *last_garp = now;
        if let Some(fip) = self.drivers.floating_ip.clone() {
            tokio::spawn(async move {
                if let Err(error) = fip.refresh().await {
                    tracing::warn!(%error, "gratuitous ARP refresh failed");
                }
            });
        }
    }

    /// Which members the leader heard from lately: a follower that
    /// acknowledged within the window counts as alive; this node always does.
    /// Empty when this node is not the leader (only the leader knows).
    fn reachability(&self, state: &ClusterState) -> BTreeMap<u64, bool> {
        let me = self.config.me().id;
        if !self.consensus.leadership().is_me {
            return BTreeMap::new();
        }
        let timing = self.config.cluster.timing();
        let window =
            Duration::from_millis((timing.election_timeout_max_ms * 2).max(timing.lease.lease_ms));
        let ages = self.consensus.follower_ack_ages();
        self.config
            .effective_members(state)
            .iter()
            .map(|m| {
                let alive = m.id == me
                    || ages
                        .get(&m.id)
                        .copied()
                        .flatten()
                        .is_some_and(|age| age <= window);
                (m.id, alive)
            })
            .collect()
    }

    fn candidates(&self, state: &ClusterState) -> Vec<Candidate> {
        let reachable = self.reachability(state);
        self.config
            .effective_members(state)
            .iter()
            .filter(|m| m.role == MemberRole::Mail)
            .map(|m| Candidate {
                node: m.id,
                priority: m.priority,
                reachable: reachable.get(&m.id).copied().unwrap_or(false),
            })
            .collect()
    }

    fn run_decider(
        &self,
        now: Millis,
        state: &Arc<ClusterState>,
        decider: &mut DeciderClock,
        events: &mpsc::UnboundedSender<Event>,
        leaving: bool,
    ) {
        if decider.leader_since.is_none() {
            return;
        }
        if decider.assign_in_flight {
            return;
        }
        let me = self.config.me().id;
        // A node on its way out never assigns the role to itself.
        let candidates: Vec<Candidate> = self
            .candidates(state)
            .into_iter()
            .filter(|c| !(leaving && c.node == me))
            .collect();
        let view = DeciderView {
            now,
            last_progress_seen: decider.last_progress_seen,
            candidates: &candidates,
            timing: self.config.cluster.timing().lease,
            now_unix_ms: self.clock.unix_ms(),
            breaker: self.config.cluster.breaker(),
            preempt: self.config.cluster.preempt,
        };
        let decision = decide(state, &view);
        let blocked = match &decision {
            Decision::Blocked(blocked) => Some(blocked.clone()),
            _ => None,
        };
        if blocked != decider.blocked {
            // The alert: once per change, not once per tick.
            match &blocked {
                Some(Blocked::BreakerOpen {
                    failovers,
                    max_failovers,
                    window_ms,
                }) => {
                    tracing::error!(
                        failovers,
                        max_failovers,
                        window_s = window_ms / 1_000,
                        "CIRCUIT BREAKER OPEN: no automatic failover until `mailherd breaker reset` \
                         or the window passes; the cluster has no master"
                    );
                    self.alerter.send(mailherd_alerts::Event::breaker_opened(
                        *failovers,
                        *max_failovers,
                        window_ms / 1_000,
                    ));
                }
                Some(Blocked::Maintenance) => tracing::warn!(
                    "maintenance mode: the role needs a new master but no automatic failover happens"
                ),
                None => tracing::info!("the decider is no longer blocked"),
            }
            decider.blocked = blocked;
        }
        let (command, what) = match decision {
            Decision::Assign(command) => (command, "assignment"),
            Decision::Propose(command) => (command, "switchover request (preemption)"),
            Decision::Nothing | Decision::WaitUntil(_) | Decision::Blocked(_) => return,
        };
        decider.assign_in_flight = true;
        tracing::info!(?command, "decider proposes an {what}");
        let consensus = self.consensus.clone();
        let events = events.clone();
        tokio::spawn(async move {
            match consensus.propose(command, Duration::from_secs(1)).await {
                Ok(Ok(())) => {}
                Ok(Err(rejection @ Rejection::StateMoved { .. })) => {
                    tracing::info!(%rejection, "{what} superseded; deciding again");
                }
                Ok(Err(rejection)) => tracing::warn!(%rejection, "{what} rejected"),
                Err(error) => tracing::warn!(%error, "{what} did not commit"),
            }
            let _ = events.send(Event::AssignDone);
        });
    }

    /// Keeps the Raft leader on the master. The master renews through the
    /// leader, so with the leader elsewhere, losing that other node (or a
    /// leader election it causes) would cost the master its lease although
    /// the master itself is fine. With both on one node, only the master's
    /// own failure moves anything. Done by the leader once the master's
    /// promotion is recorded as complete, at most every few seconds, and
    /// only at a moment the handover's own gap in commits cannot cost the
    /// master its lease (see mailherd_core::handover).
    fn hand_leadership_to_master(
        &self,
        now: Millis,
        state: &ClusterState,
        decider: &DeciderClock,
        last_transfer: &mut Option<Millis>,
    ) {
        const RETRY_MS: u64 = 3_000;
        let me = self.config.me().id;
        if !self.consensus.leadership().is_me {
            return;
        }
        let Some(assignment) = state.assignment.filter(|a| a.node != me) else {
            return;
        };
        let promoted = state
            .history
            .iter()
            .rev()
            .find(|r| r.epoch == assignment.epoch)
            .and_then(|r| r.outcome.as_ref())
            .is_some_and(|o| o.ok);
        // Only to a live master that renews steadily, right after a renewal,
        // and that acknowledges the leader. Handing leadership to a dead
        // master (its history still says "promoted") would stall the
        // failover; handing it over while commits lag would end the lease.
        let timing = self.config.cluster.timing().lease;
        let due = handover_due(
            now,
            decider.last_progress_seen,
            assignment.epoch,
            &decider.cadence,
            &timing,
        );
        if !promoted || !due || last_transfer.is_some_and(|at| now.since(at) < RETRY_MS) {
            return;
        }
        // Heard from directly within an election timeout, not merely within
        // the decider's wider reachability window: a transfer to a master
        // this leader has just been cut off from never arrives, yet stops
        // this leader, and the master's renewals (relayed meanwhile) wait
        // for a whole election.
        let fresh = Duration::from_millis(self.config.cluster.timing().election_timeout_min_ms);
        let heard_lately = self
            .consensus
            .follower_ack_ages()
            .get(&assignment.node)
            .copied()
            .flatten()
            .is_some_and(|age| age <= fresh);
        if !heard_lately {
            return;
        }
        *last_transfer = Some(now);
        tracing::info!(
            to = assignment.node,
            "handing Raft leadership to the master"
        );
        let consensus = self.consensus.clone();
        tokio::spawn(async move {
            if let Err(error) = consensus.transfer_leadership(assignment.node).await {
                tracing::warn!(%error, "could not hand Raft leadership to the master");
            }
        });
    }

    /// A node marked not ready after a failure offers itself again once it
    /// has been a quiet backup for the cooldown.
    fn report_readiness(
        &self,
        now: Millis,
        state: &ClusterState,
        holder: &Holder,
        not_ready_since: &mut Option<Millis>,
        health_in_flight: &mut bool,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        let me = self.config.me().id;
        if state.is_ready(me) || *holder.phase() != mailherd_core::Phase::Backup {
            *not_ready_since = None;
            return;
        }
        let since = *not_ready_since.get_or_insert(now);
        // Marked at its own clean shutdown: ready as soon as it runs again.
        let after_shutdown = state
            .health
            .get(&me)
            .is_some_and(|h| h.detail == mailherd_core::ReleaseReason::Shutdown.describe());
        let cooldown = if after_shutdown {
            0
        } else {
            self.config.cluster.timing().fault_cooldown_ms
        };
        if *health_in_flight || now.since(since) < cooldown {
            return;
        }
        *health_in_flight = true;
        let consensus = self.consensus.clone();
        let events = events.clone();
        tokio::spawn(async move {
            let command = Command::Health {
                node: me,
                health: NodeHealth {
                    ready: true,
                    detail: if after_shutdown {
                        "ready again after a restart".to_string()
                    } else {
                        format!("ready again after a {cooldown} ms cooldown")
                    },
                },
            };
            if let Err(error) = consensus.propose(command, Duration::from_secs(1)).await {
                tracing::warn!(%error, "could not report readiness");
            }
            let _ = events.send(Event::HealthDone);
        });
    }

    fn publish_status(
        &self,
        now: Millis,
        state: &ClusterState,
        holder: Option<&Holder>,
        blocked: Option<&Blocked>,
        watchdog: Option<&WatchdogGuard>,
    ) {
        let me = self.config.me();
        let effective = self.config.effective_members(state);
        let name_of = |id: u64| {
            effective
                .iter()
                .find(|m| m.id == id)
                .map(|m| m.name.clone())
                .unwrap_or_else(|| format!("#{id}"))
        };
        let role = match holder.map(|h| h.phase()) {
            None => "witness",
            // From the start of its promotion to the end of its demotion a
            // node is entitled to (and may hold) the resources: it is the
            // master, whatever it is doing with them. `phase` says what.
            Some(mailherd_core::Phase::Promoting { .. } | mailherd_core::Phase::Master { .. }) => {
                "master"
            }
            Some(mailherd_core::Phase::Demoting { epoch, .. }) if *epoch != 0 => "master",
            Some(_) if !state.is_ready(me.id) => "fault",
            Some(_) => "backup",
        };
        let leadership = self.consensus.leadership();
        let reachable = self.reachability(state);
        let members = effective
            .iter()
            .map(|m| MemberStatus {
                id: m.id,
                name: m.name.clone(),
                kind: match m.role {
                    MemberRole::Mail => "mail".into(),
                    MemberRole::Witness => "witness".into(),
                },
                priority: m.priority,
                ready: state.is_ready(m.id),
                detail: state
                    .health
                    .get(&m.id)
                    .map(|h| h.detail.clone())
                    .unwrap_or_default(),
                reachable: reachable.get(&m.id).copied(),
                api: m.api.to_string(),
            })
            .collect();
        let history = state
            .history
            .iter()
            .rev()
            .take(STATUS_HISTORY)
            .rev()
            .map(|r| HistoryEntry {
                epoch: r.epoch,
                from: r.from.map(name_of),
                to: name_of(r.to),
                reason: r.reason.clone(),
                kind: r.kind,
                assigned_at_unix_ms: r.assigned_at_unix_ms,
                outcome: r.outcome.clone(),
            })
            .collect();
        let document = StatusDocument {
            cluster: self.config.cluster.name.clone(),
            node: me.name.clone(),
            id: me.id,
            role: role.into(),
            phase: holder.map(|h| h.phase().name()).unwrap_or("witness").into(),
            epoch: state.epoch,
            assignment: state.assignment.map(|a| AssignmentStatus {
                node: name_of(a.node),
                id: a.node,
                epoch: a.epoch,
            }),
            renewals: state.renewals,
            leader: leadership.leader.map(|id| LeaderStatus {
                id,
                name: name_of(id),
                term: leadership.term,
            }),
            lease_remaining_ms: holder
                .filter(|h| h.phase().holding_epoch().is_some())
                .and_then(|h| h.lease_end())
                .map(|end| end.since(now)),
            verdict: self.monitor.as_ref().map(|m| m.report()),
            members,
            history,
            maintenance_since_unix_ms: state.maintenance.as_ref().map(|m| m.since_unix_ms),
            breaker: Some({
                let policy = self.config.cluster.breaker();
                let failovers =
                    state.failovers_since(self.clock.unix_ms().saturating_sub(policy.window_ms));
                BreakerStatus {
                    open: failovers >= policy.max_failovers,
                    failovers_in_window: failovers,
                    max_failovers: policy.max_failovers,
                    window_s: policy.window_ms / 1_000,
                    reset_at_unix_ms: state.breaker_reset_at_unix_ms,
                }
            }),
            switchover_pending: state.switchover.as_ref().map(|request| match request.to {
                Some(to) => name_of(to),
                None => "best candidate".to_string(),
            }),
            watchdog: watchdog.map(WatchdogGuard::status),
            workers: self.workers.snapshot(),
            replication: self
                .replication
                .as_ref()
                .map(|r| r.report())
                .unwrap_or_default(),
            decider_blocked: blocked.map(|b| match b {
                Blocked::Maintenance => "maintenance mode".to_string(),
                Blocked::BreakerOpen {
                    failovers,
                    max_failovers,
                    window_ms,
                } => format!(
                    "circuit breaker open: {failovers} failovers in {} s (at most {max_failovers})",
                    window_ms / 1_000
                ),
            }),
            updated_unix_ms: self.clock.unix_ms(),
        };
        self.metrics.observe_status(&document, leadership.is_me);
        self.status_tx.send_replace(document);
    }
}

/// The pipeline run in progress (at most one at a time).
struct Running {
    task: JoinHandle<()>,
    kind: PipelineKind,
    /// Matches the run's report to the run; see [`Event::Pipeline`].
    id: u64,
}

#[derive(Debug, Clone, Copy)]
enum PipelineKind {
    Promotion { epoch: u64 },
    Demotion,
}

/// Records a promotion's outcome in the replicated history. Retried a few
/// times; a failure is logged (the failover itself does not depend on it).
fn record_promotion(consensus: Consensus, me: u64, epoch: u64, outcome: PromotionOutcome) {
    tokio::spawn(async move {
        let command = Command::RecordPromotion {
            node: me,
            epoch,
            outcome,
        };
        if propose_with_retries(&consensus, command, 5, Duration::from_millis(200))
            .await
            .is_none()
        {
            tracing::warn!(epoch, "could not record the promotion outcome");
        }
    });
}

/// Proposes `command` until it commits (whatever the state machine said)
/// or `attempts` one-second tries have failed; `None` in that case.
async fn propose_with_retries(
    consensus: &Consensus,
    command: Command,
    attempts: u32,
    pause: Duration,
) -> Option<mailherd_core::CommandResult> {
    for attempt in 1..=attempts {
        match consensus
            .propose(command.clone(), Duration::from_secs(1))
            .await
        {
            Ok(result) => return Some(result),
            Err(error) => {
                tracing::warn!(attempt, attempts, %error, "proposal did not commit; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    }
    None
}
