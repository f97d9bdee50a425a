//! The mailherd agent: one per node.
//!
//! [`run`] wires the parts together and returns when `shutdown` resolves
//! and the node has let go of everything it held.
//!
//! # Layout
//! - [`alerting`]: what the control loop tells the alerter (failover
//!   started/completed/failed, breaker, lease loss, maintenance, node
//!   down/up, degraded checks), one alert per change.
//! - [`clock`]: the agent's monotonic clock in [`mailherd_core::Millis`].
//! - [`control`]: the control loop. It owns the pure [`mailherd_core::Holder`]
//!   and runs the decider while this node is Raft leader; it turns their
//!   actions into proposals and pipeline runs and feeds the results back.
//! - [`pipelines`]: executes promotion and demotion plans with the drivers,
//!   each step with a timeout and a recorded outcome.
//! - [`monitor`]: the check worker: probes on their intervals, rise/fall,
//!   the stack verdict.
//! - The reconciler (design invariant 4) runs inside [`control`]: it reads
//!   the host on `[reconciler] interval_ms` and releases what a non-master
//!   holds (split-brain alarm) or re-acquires what a master lacks; its
//!   rules are `mailherd_core::reconcile`.
//! - [`gc`]: the garbage collector's pass (stale mounts, stray addresses
//!   and stacks on non-masters, stale agent files, old history), run by the
//!   control loop periodically and for `POST /v1/gc`.
//! - [`workers`]: every worker's state, last run and result, for `/status`.
//! - [`api`]: the HTTP API (`/health`, `/status`, `/master`, `/backup`,
//!   `/metrics`, the dashboard at `/`, and the token-protected
//!   `/v1/switchover`, `/v1/maintenance`, `/v1/breaker/reset`).
//! - [`status`]: the status document shared by the API and the CLI.
//! - [`metrics`]: the Prometheus metrics, fed by the control loop, the
//!   check worker and the alerter where things happen.
//! - [`dashboard`]: the HTML page at `/`, rendered from the status
//!   document (askama template `templates/dashboard.html`).
//! - The Uptime Kuma push worker (`mailherd_alerts::KumaPush`), started
//!   here with `[uptime_kuma]`: up while this node is fit for its role.
//! - [`database`]: keeps a backup's database a read-only replica of the
//!   current master's (`[mariadb]`).
//! - [`tls`]: mutual TLS on the peer channel (cluster CA, node
//!   certificates, the TLS listener), also used by `mailherd tls` and the lab.
//!
//! Tear-down order on shutdown: the control loop demotes and releases the
//! role (so a backup takes over at once instead of waiting out the lease),
//! then the HTTP servers stop, then consensus shuts down.

pub mod alerting;
pub mod api;
pub mod clock;
pub mod control;
pub mod dashboard;
pub mod database;
pub mod gc;
pub mod metrics;
pub mod monitor;
pub mod pipelines;
pub mod status;
pub mod storage;
pub mod tls;
pub mod watchdog;
pub mod workers;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use mailherd_config::{Config, MemberRole};
use mailherd_consensus::{Consensus, ConsensusConfig, ConsensusOptions};
use tokio::sync::watch;

pub use status::StatusDocument;

/// Runs the agent until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let me = config.me().clone();
    let timing = config.cluster.timing();
    let clock = clock::Clock::new();
    // Held until the agent exits; a second agent on this data_dir stops here.
    let (pid_file, pid_path) = gc::lock_pid_file(&config.node.data_dir)?;

    let voters: BTreeMap<u64, std::net::SocketAddr> =
        config.members.iter().map(|m| (m.id, m.peer)).collect();
    // Invariant 7: with [tls], peers talk HTTPS and must present a
    // certificate of the cluster CA in both directions.
    let peer_tls = match &config.tls {
        Some(section) => {
            let files = section
                .files()
                .context("[tls] needs ca_file, cert_file and key_file")?;
            let connect_timeout = std::time::Duration::from_millis(timing.election_timeout_min_ms);
            Some(
                tls::PeerTls::load(&files, connect_timeout)
                    .context("loading the peer TLS files")?,
            )
        }
        None => {
            tracing::warn!(
                "no [tls] section: the peer channel is plain HTTP and unauthenticated; \
                 anyone who reaches api.peer_listen can take part in consensus"
            );
            None
        }
    };
    let consensus_options = match &peer_tls {
        Some(peer_tls) => ConsensusOptions {
            peer_client: Some(peer_tls.client()),
            peer_scheme: "https",
            ..Default::default()
        },
        None => ConsensusOptions::default(),
    };
    let consensus = Consensus::open_with(
        ConsensusConfig {
            node_id: me.id,
            voters,
            data_dir: config.node.data_dir.join("raft"),
            heartbeat_interval_ms: timing.heartbeat_interval_ms,
            election_timeout_min_ms: timing.election_timeout_min_ms,
            election_timeout_max_ms: timing.election_timeout_max_ms,
            join: config.node.join,
        },
        consensus_options,
    )
    .await
    .context("opening the consensus store")?;
    // What storage says before any peer is heard: the assignment a previous
    // run of this agent may have held (the peer endpoint is not served yet,
    // so nothing new can have been applied).
    let stored_assignment = consensus.state().borrow().assignment;

    let peer_listener = tokio::net::TcpListener::bind(config.api.peer_listen)
        .await
        .with_context(|| format!("binding the peer endpoint on {}", config.api.peer_listen))?;
    let api_listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("binding the HTTP API on {}", config.api.listen))?;

    let drivers = pipelines::Drivers::from_config(&config).context("setting up the drivers")?;
    // Storage replication streams snapshots over the peer channel: the
    // same client, scheme and listener as Raft.
    let replication = {
        let (client, scheme) = match &peer_tls {
            Some(peer_tls) => (peer_tls.client(), "https"),
            None => (reqwest::Client::new(), "http"),
        };
        storage::Replication::new(
            config.clone(),
            consensus.clone(),
            drivers.replicated.clone(),
            client,
            scheme,
        )
    };

    let (servers_stop_tx, servers_stop_rx) = watch::channel(false);
    let peer_server = {
        let router = match &replication {
            Some(replication) => consensus.peer_router().merge(replication.peer_router()),
            None => consensus.peer_router(),
        };
        let mut stop = servers_stop_rx.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match &peer_tls {
            Some(peer_tls) => {
                let listener = tls::TlsListener::new(peer_listener, peer_tls.server_config())
                    .context("starting the TLS peer endpoint")?;
                tokio::spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(stopped)
                        .await
                })
            }
            None => tokio::spawn(async move {
                axum::serve(peer_listener, router)
                    .with_graceful_shutdown(stopped)
                    .await
            }),
        }
    };

    consensus
        .initialize_if_new()
        .await
        .context("initialising the Raft cluster")?;

    let (status_tx, status_rx) = watch::channel(StatusDocument::starting(&config));

    // Alerts: `send` only queues; one delivery task per channel.
    let alerter = match &config.alerts {
        Some(section) => mailherd_alerts::Alerter::start(&config.cluster.name, &me.name, section)
            .context("setting up the alert channels")?,
        None => mailherd_alerts::Alerter::disabled(&config.cluster.name, &me.name),
    };
    let metrics = metrics::Metrics::new(&config.cluster.name, &me.name, alerter.clone());
    let monitor = if me.role == MemberRole::Mail {
        Some(monitor::Monitor::start(
            &config.checks,
            Some(metrics.clone()),
        ))
    } else {
        None
    };
    let kuma = match &config.uptime_kuma {
        Some(section) => {
            let status = status_rx.clone();
            Some(Arc::new(
                mailherd_alerts::KumaPush::start(section, move || kuma_status(&status.borrow()))
                    .context("starting the Uptime Kuma push")?,
            ))
        }
        None => None,
    };

    // Every worker reports here; the ones that keep their own state are
    // read from it.
    let workers = workers::Workers::default();
    if let Some(monitor) = &monitor {
        let monitor = monitor.clone();
        workers.derive(move || vec![monitor_worker(&monitor.report())]);
    }
    {
        let alerter = alerter.clone();
        workers.derive(move || alert_workers(&alerter.counters()));
    }
    if let Some(kuma) = &kuma {
        let kuma = kuma.clone();
        workers.derive(move || vec![kuma_worker(&kuma.state())]);
    }
    if let Some(replication) = &replication {
        let _ = drivers.replication.set(replication.clone());
        let reader = replication.clone();
        workers.derive(move || reader.workers());
        tokio::spawn(
            replication
                .clone()
                .run(status_rx.clone(), servers_stop_rx.clone()),
        );
    }
    let (gc_tx, gc_rx) = tokio::sync::mpsc::channel(4);

    let api_server = {
        let token = config
            .api
            .read_token()
            .context("reading the API token")?
            .filter(|t| !t.is_empty())
            .map(Arc::from);
        if token.is_none() {
            tracing::warn!(
                "no api.token_file: the control endpoints (/v1/...) refuse every request"
            );
        }
        let router = api::router(api::ApiState {
            status: status_rx.clone(),
            drivers: drivers.clone(),
            consensus: consensus.clone(),
            config: config.clone(),
            token,
            alerter: alerter.clone(),
            kuma: kuma.clone(),
            metrics: metrics.clone(),
            gc: gc_tx,
        });
        let mut stop = servers_stop_rx.clone();
        tokio::spawn(async move {
            axum::serve(api_listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    };

    if let Some(database) = drivers.database.clone() {
        tokio::spawn(database::follow_master(
            config.clone(),
            consensus.clone(),
            database,
            status_rx.clone(),
            servers_stop_rx.clone(),
        ));
    }

    tracing::info!(node = %me.name, id = me.id, role = ?me.role, "agent started");
    let control = control::Control::new(
        config.clone(),
        consensus.clone(),
        drivers,
        monitor,
        clock,
        status_tx,
        alerter,
        metrics,
    )
    .with_workers(workers)
    .with_replication(replication);
    control.run(stored_assignment, gc_rx, shutdown).await;

    // The role is let go of by now; nothing below may keep a stopping
    // agent alive (a client holding a connection open, a stuck Raft task):
    // each part gets a bound, and what does not finish is left to the exit.
    let _ = servers_stop_tx.send(true);
    let servers = async {
        let _ = api_server.await;
        let _ = peer_server.await;
    };
    if tokio::time::timeout(TEARDOWN_STEP_LIMIT, servers)
        .await
        .is_err()
    {
        tracing::warn!("HTTP servers still draining connections at exit");
    }
    if tokio::time::timeout(TEARDOWN_STEP_LIMIT, consensus.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("consensus did not shut down in time");
    }
    // A clean exit leaves no pid file behind (a crash leaves an unlocked
    // one, which the garbage collector removes).
    let _ = std::fs::remove_file(&pid_path);
    drop(pid_file);
    tracing::info!(node = %me.name, "agent stopped");
    Ok(())
}

/// The check monitor as a worker: it probes all the time.
fn monitor_worker(report: &monitor::MonitorReport) -> workers::WorkerStatus {
    workers::WorkerStatus {
        state: workers::WorkerState::Running,
        last_run_unix_ms: report.last_probe_unix_ms,
        last_result: Some(format!("{:?}: {}", report.verdict, report.detail).to_lowercase()),
        ..workers::WorkerStatus::new("monitor")
    }
}

/// Each alert channel's delivery task as a worker: failed while alerts
/// were given up on and none delivered since the agent started, otherwise
/// idle (it waits for alerts); the counts say what it did.
fn alert_workers(counters: &mailherd_alerts::Counters) -> Vec<workers::WorkerStatus> {
    counters
        .channels
        .iter()
        .map(|(name, channel)| {
            let total = channel.total;
            let summary = format!(
                "sent {}, failed {}, retried {}, suppressed {}, rate-limited {}, dropped {}",
                total.sent,
                total.failed,
                total.retried,
                total.suppressed,
                total.rate_limited,
                total.dropped
            );
            let failing = total.failed > 0 && total.sent == 0;
            workers::WorkerStatus {
                state: if failing {
                    workers::WorkerState::Failed
                } else {
                    workers::WorkerState::Idle
                },
                last_error: failing.then(|| format!("{} alert(s) given up on", total.failed)),
                last_result: Some(summary),
                runs: total.sent + total.failed,
                ..workers::WorkerStatus::new(&format!("alerts:{name}"))
            }
        })
        .collect()
}

/// The Uptime Kuma push as a worker.
fn kuma_worker(state: &mailherd_alerts::KumaState) -> workers::WorkerStatus {
    let failing = state.last_error.is_some() || state.monitor_not_found;
    workers::WorkerStatus {
        state: if failing {
            workers::WorkerState::Failed
        } else {
            workers::WorkerState::Idle
        },
        last_run_unix_ms: None,
        last_result: Some(format!(
            "pushes ok {}, failed {}{}",
            state.pushes_ok,
            state.pushes_failed,
            state
                .last_ping_ms
                .map(|ms| format!(", last round trip {ms} ms"))
                .unwrap_or_default()
        )),
        last_error: state.last_error.clone().or_else(|| {
            state
                .monitor_not_found
                .then(|| "the push monitor is missing or paused (404)".to_string())
        }),
        runs: state.pushes_ok + state.pushes_failed,
        ..workers::WorkerStatus::new("uptime_kuma")
    }
}

/// What the Kuma monitor shows for this node: up while it is fit for its
/// role (an operational or degraded master, a ready backup, a witness).
fn kuma_status(doc: &StatusDocument) -> mailherd_alerts::KumaStatus {
    use mailherd_core::Verdict;
    let verdict = doc.verdict.as_ref().map(|v| v.verdict);
    let up = match doc.role.as_str() {
        "master" => {
            doc.phase != "master"
                || verdict.is_none_or(|v| matches!(v, Verdict::Operational | Verdict::Degraded))
        }
        "backup" | "witness" => doc.phase != "starting" || doc.role == "witness",
        _ => false,
    };
    let mut msg = format!("{} {} ({})", doc.node, doc.role, doc.phase);
    if let Some(report) = &doc.verdict {
        if !report.detail.is_empty() && doc.role == "master" {
            msg.push_str(&format!(": {}", report.detail));
        }
    }
    mailherd_alerts::KumaStatus { up, msg }
}

/// How long each tear-down step after the control loop may take.
const TEARDOWN_STEP_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);
