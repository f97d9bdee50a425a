//! Storage replication between agents (volumes with `driver = "btrfs"` or
//! `"zfs"`): the master snapshots its live copy every `interval_ms` and
//! streams each snapshot to every other mail node over the peer channel
//! (mutual TLS when `[tls]` is set), incrementally from the newest snapshot
//! both sides hold.
//!
//! - [`Replication::peer_router`]: the receiving side, served on the peer
//!   endpoint beside Raft. `GET /storage/{volume}/snapshots` lists the
//!   complete snapshots; `POST /storage/{volume}/receive` takes one stream.
//!   A receiver refuses a sender that is not the holder of the newest
//!   assignment it knows (a stale master cannot overwrite the cluster's
//!   copies) and refuses while it holds the volume itself.
//! - [`Replication::run`]: the sending side, a worker on every mail node
//!   that acts only while its node is master with the volume mounted.
//! - [`Replication::report`]: what `/status` shows (`replication`), with
//!   the data age a promotion started from (the RPO of that failover).
//!
//! A stream is only ever made a complete snapshot after the receiving
//! command succeeded *and* the body ended cleanly: the sender turns a failed
//! `send` into a broken body, so a cut stream is thrown away, never kept.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use mailherd_config::{Config, MemberRole, ReplicationSection};
use mailherd_consensus::Consensus;
use mailherd_drivers::replication::{newest_common, to_prune, unix_ms, LiveOrigin, SnapshotName};
use mailherd_drivers::volume::replicated::ReplicatedVolume;
use mailherd_drivers::{DriverError, Volume};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::workers::{WorkerState, WorkerStatus};
use crate::StatusDocument;

/// Request headers naming the sender and the epoch it sends under.
const FROM_HEADER: &str = "x-mailherd-from";
const EPOCH_HEADER: &str = "x-mailherd-epoch";
/// Listing a peer's snapshots is one small request.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);
/// Stream chunks read from `send` and written to `receive`.
const CHUNK_BYTES: usize = 256 * 1024;

/// One replicated volume of this node.
#[derive(Clone)]
pub struct ReplicatedSet {
    pub volume: Arc<ReplicatedVolume>,
    pub settings: ReplicationSection,
}

/// What the last transfer to one peer did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerTransfer {
    pub peer: String,
    /// The snapshot the peer holds for sure (the last one sent or found
    /// there).
    pub snapshot: Option<String>,
    /// Incremental from this parent; `None` for a full stream.
    pub parent: Option<String>,
    pub bytes: u64,
    pub duration_ms: u64,
    pub at_unix_ms: u64,
    pub error: Option<String>,
}

/// `/status` → `replication[]`: one volume as this node sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeReplicationStatus {
    pub volume: String,
    pub describe: String,
    /// The newest complete snapshot on this node, and its age now.
    pub newest_snapshot: Option<String>,
    pub newest_age_ms: Option<u64>,
    pub snapshots: usize,
    /// Where this node's live copy came from at its last promotion, and
    /// how old that data was then: the RPO of that failover.
    pub opened_from: Option<String>,
    pub opened_data_age_ms: Option<u64>,
    pub opened_unix_ms: Option<u64>,
    /// The master's last transfers, by peer (empty on backups).
    pub peers: Vec<PeerTransfer>,
    /// The last stream this node received.
    pub last_received: Option<PeerTransfer>,
    /// Why the last snapshot round (master) or received stream (backup)
    /// failed; cleared by the next one that succeeds.
    pub last_error: Option<String>,
    /// Why this node's snapshots cannot be listed now; cleared by the next
    /// listing that works (every interval, on every node).
    #[serde(default)]
    pub listing_error: Option<String>,
    /// Live copies set aside on this node (btrfs `POOL/retired/`): they may
    /// hold writes no snapshot has; the operator checks and deletes them.
    #[serde(default)]
    pub retired: Vec<String>,
    /// Snapshot rounds this node ran as master since its agent started.
    pub rounds: u64,
}

#[derive(Clone)]
pub struct Replication {
    sets: Vec<ReplicatedSet>,
    config: Arc<Config>,
    consensus: Consensus,
    client: reqwest::Client,
    scheme: &'static str,
    report: Arc<Mutex<BTreeMap<String, VolumeReplicationStatus>>>,
    /// One receive at a time per volume.
    receiving: Arc<BTreeMap<String, tokio::sync::Mutex<()>>>,
    /// One send round at a time per volume (the timer's, a demotion's).
    sending: Arc<BTreeMap<String, tokio::sync::Mutex<()>>>,
}

#[derive(Debug, thiserror::Error)]
enum TransferError {
    #[error("{0}")]
    Driver(#[from] DriverError),
    #[error("peer {peer}: {reason}")]
    Peer { peer: String, reason: String },
}

impl Replication {
    /// `None` when no volume replicates.
    pub fn new(
        config: Arc<Config>,
        consensus: Consensus,
        volumes: Vec<ReplicatedSet>,
        client: reqwest::Client,
        scheme: &'static str,
    ) -> Option<Replication> {
        if volumes.is_empty() {
            return None;
        }
        let locks = || {
            volumes
                .iter()
                .map(|set| (set.volume.name().to_string(), tokio::sync::Mutex::new(())))
                .collect()
        };
        let (receiving, sending) = (Arc::new(locks()), Arc::new(locks()));
        let report = volumes
            .iter()
            .map(|set| {
                (
                    set.volume.name().to_string(),
                    VolumeReplicationStatus {
                        volume: set.volume.name().to_string(),
                        describe: set.volume.describe(),
                        ..Default::default()
                    },
                )
            })
            .collect();
        Some(Replication {
            sets: volumes,
            config,
            consensus,
            client,
            scheme,
            report: Arc::new(Mutex::new(report)),
            receiving,
            sending,
        })
    }

    fn set(&self, volume: &str) -> Option<&ReplicatedSet> {
        self.sets.iter().find(|set| set.volume.name() == volume)
    }

    fn update(&self, volume: &str, change: impl FnOnce(&mut VolumeReplicationStatus)) {
        if let Some(entry) = self
            .report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(volume)
        {
            change(entry);
        }
    }

    /// Reads the store's listing into the report (every round, on every
    /// node).
    async fn refresh(&self, set: &ReplicatedSet) {
        let store = set.volume.store();
        let listing = match (store.snapshots().await, store.retired().await) {
            (Ok(names), Ok(retired)) => Ok((names, retired)),
            (Err(error), _) | (_, Err(error)) => Err(error),
        };
        self.update(set.volume.name(), |entry| match listing {
            Ok((names, retired)) => {
                entry.snapshots = names.len();
                entry.newest_snapshot = names.last().map(|n| n.to_string());
                entry.retired = retired;
                entry.listing_error = None;
            }
            Err(error) => entry.listing_error = Some(error.to_string()),
        });
    }

    /// What `/status` shows: the last listing and transfers, and where the
    /// live copy came from as the volume knows it now.
    pub fn report(&self) -> Vec<VolumeReplicationStatus> {
        let now = SystemTime::now();
        let report = self.report.lock().unwrap_or_else(|p| p.into_inner());
        self.sets
            .iter()
            .filter_map(|set| {
                let mut entry = report.get(set.volume.name())?.clone();
                entry.newest_age_ms = entry
                    .newest_snapshot
                    .as_deref()
                    .and_then(|n| n.parse::<SnapshotName>().ok())
                    .map(|n| n.age_at(now).as_millis() as u64);
                if let Some(opened) = set.volume.opened() {
                    entry.opened_from = Some(match &opened.origin {
                        LiveOrigin::Snapshot(name) => name.to_string(),
                        LiveOrigin::Kept => "kept".to_string(),
                        LiveOrigin::Empty => "empty".to_string(),
                    });
                    entry.opened_data_age_ms = opened.data_age_ms();
                    entry.opened_unix_ms = Some(opened.at_ms);
                }
                Some(entry)
            })
            .collect()
    }

    /// The worker's line in `/status` → `workers`.
    pub fn workers(&self) -> Vec<WorkerStatus> {
        let report = self.report.lock().unwrap_or_else(|p| p.into_inner());
        report
            .values()
            .map(|entry| {
                let last = entry.peers.iter().max_by_key(|p| p.at_unix_ms);
                let mut worker = WorkerStatus::new(&format!("replication:{}", entry.volume));
                let error = entry.listing_error.as_ref().or(entry.last_error.as_ref());
                worker.state = if error.is_some() {
                    WorkerState::Failed
                } else {
                    WorkerState::Idle
                };
                worker.last_run_unix_ms = last.map(|p| p.at_unix_ms);
                worker.last_result = last.map(|p| {
                    format!(
                        "sent {} to {} ({} bytes, {} ms)",
                        p.snapshot.as_deref().unwrap_or("-"),
                        p.peer,
                        p.bytes,
                        p.duration_ms
                    )
                });
                worker.last_error = error.cloned();
                worker.runs = entry.rounds;
                worker
            })
            .collect()
    }

    /// The receiving side's routes, merged into the peer endpoint.
    pub fn peer_router(&self) -> Router {
        Router::new()
            .route("/storage/{volume}/snapshots", get(list_snapshots))
            .route("/storage/{volume}/receive", post(receive))
            .with_state(self.clone())
    }

    /// The sending side: every `interval_ms`, while this node is master with
    /// the volume mounted, snapshot, ship to every other mail node, prune.
    pub async fn run(
        self,
        status: watch::Receiver<StatusDocument>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tasks = Vec::new();
        for set in self.sets.clone() {
            let (this, status, mut stop) = (self.clone(), status.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let interval = Duration::from_millis(set.settings.interval_ms);
                this.refresh(&set).await;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    let (role, epoch) = {
                        let doc = status.borrow();
                        (doc.role.clone(), doc.epoch)
                    };
                    if role == "master" && matches!(set.volume.is_mounted().await, Ok(true)) {
                        let result = this.replicate_once(&set, epoch).await;
                        this.update(set.volume.name(), |entry| {
                            entry.last_error = result.err().map(|e| e.to_string());
                            entry.rounds += 1;
                        });
                    }
                    // Once per interval on every node, after the master's
                    // round (which lists for itself).
                    this.refresh(&set).await;
                }
            }));
        }
        let _ = stop.wait_for(|s| *s).await;
        for task in tasks {
            task.abort();
        }
    }

    /// Whether `volume` is one of the replicated volumes.
    pub fn replicates(&self, volume: &str) -> bool {
        self.set(volume).is_some()
    }

    /// A planned demotion's last round, run after the stack stopped and
    /// before the unmount: one more snapshot then holds every write, and
    /// once it is shipped a switchover loses nothing. Only while this node
    /// still holds the role (it keeps renewing while it demotes).
    pub async fn final_sync(&self, volume: &str) -> Result<(), String> {
        let set = self
            .set(volume)
            .ok_or_else(|| format!("no replicated volume {volume:?}"))?
            .clone();
        let me = self.config.me().id;
        let epoch = match self.consensus.state().borrow().assignment {
            Some(assignment) if assignment.node == me => assignment.epoch,
            _ => return Err("this node no longer holds the role: nothing to ship".into()),
        };
        if !set.volume.is_mounted().await.map_err(|e| e.to_string())? {
            return Ok(());
        }
        let result = self.replicate_once(&set, epoch).await;
        self.refresh(&set).await;
        result.map_err(|e| e.to_string())
    }

    async fn replicate_once(&self, set: &ReplicatedSet, epoch: u64) -> Result<(), TransferError> {
        let _one_round = self
            .sending
            .get(set.volume.name())
            .expect("a lock per volume")
            .lock()
            .await;
        let store = set.volume.store();
        let me = self.config.me();
        let name = SnapshotName::now(epoch, &me.name);
        store.take(&name).await?;
        let ours = store.snapshots().await?;
        let peers: Vec<_> = self
            .config
            .members
            .iter()
            .filter(|m| m.role == MemberRole::Mail && m.id != me.id)
            .cloned()
            .collect();
        let sends = peers.iter().map(|peer| async {
            let started = Instant::now();
            let result = self.send_to(set, peer, epoch, &name, &ours).await;
            let mut transfer = PeerTransfer {
                peer: peer.name.clone(),
                duration_ms: started.elapsed().as_millis() as u64,
                at_unix_ms: unix_ms(SystemTime::now()),
                ..Default::default()
            };
            match &result {
                Ok((parent, bytes)) => {
                    transfer.snapshot = Some(name.to_string());
                    transfer.parent = parent.as_ref().map(|p| p.to_string());
                    transfer.bytes = *bytes;
                }
                Err(error) => {
                    tracing::warn!(volume = %set.volume.name(), peer = %peer.name, %error, "replication send failed");
                    transfer.error = Some(error.to_string());
                }
            }
            (transfer, result.is_ok())
        });
        let transfers = futures::future::join_all(sends).await;
        let failed = transfers.iter().filter(|(_, ok)| !ok).count();
        self.update(set.volume.name(), |entry| {
            entry.peers = transfers.into_iter().map(|(t, _)| t).collect();
        });
        // Keep the newest `keep`; the parent of the next send is among them
        // unless a peer missed `keep` rounds, and then it gets a full send.
        for old in to_prune(&ours, set.settings.keep) {
            store.remove(&old).await?;
        }
        if failed > 0 {
            return Err(TransferError::Peer {
                peer: format!("{failed} of {}", peers.len()),
                reason: "sends failed (see peers)".into(),
            });
        }
        Ok(())
    }

    fn peer_url(&self, peer: &mailherd_config::Member, volume: &str, what: &str) -> String {
        format!("{}://{}/storage/{volume}/{what}", self.scheme, peer.peer)
    }

    /// Ships `name` to `peer`; returns the parent used and the bytes sent.
    async fn send_to(
        &self,
        set: &ReplicatedSet,
        peer: &mailherd_config::Member,
        epoch: u64,
        name: &SnapshotName,
        ours: &[SnapshotName],
    ) -> Result<(Option<SnapshotName>, u64), TransferError> {
        let volume = set.volume.name();
        let failed = |reason: String| TransferError::Peer {
            peer: peer.name.clone(),
            reason,
        };
        let theirs: Vec<String> = self
            .client
            .get(self.peer_url(peer, volume, "snapshots"))
            .timeout(LIST_TIMEOUT)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| failed(format!("listing its snapshots: {e}")))?
            .json()
            .await
            .map_err(|e| failed(format!("reading its snapshot list: {e}")))?;
        let theirs: Vec<SnapshotName> = theirs.iter().filter_map(|n| n.parse().ok()).collect();
        if theirs.contains(name) {
            return Ok((None, 0));
        }
        let parent = newest_common(ours, &theirs).cloned();
        let argv = set.volume.store().send_argv(name, parent.as_ref());
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| DriverError::Spawn {
                what: "snapshot send",
                argv0: argv[0].clone(),
                source,
            })?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let body = send_stream(child, stdout, stderr, sent.clone(), argv[0].clone());
        // Snapshot names are [a-z0-9-] only: nothing to escape.
        let mut url = format!("{}?name={name}", self.peer_url(peer, volume, "receive"));
        if let Some(parent) = &parent {
            url.push_str(&format!("&parent={parent}"));
        }
        let response = self
            .client
            .post(url)
            .timeout(Duration::from_millis(set.settings.send_timeout_ms))
            .header(FROM_HEADER, self.config.me().id.to_string())
            .header(EPOCH_HEADER, epoch.to_string())
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .map_err(|e| failed(format!("streaming {name}: {e:#}")))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(failed(format!("refused {name}: {status}: {}", text.trim())));
        }
        Ok((parent, sent.load(std::sync::atomic::Ordering::Relaxed)))
    }
}

/// Reads a command's stderr to its end in a task of its own, for the error
/// message once the command exited.
fn read_all(mut stderr: tokio::process::ChildStderr) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    })
}

/// The body of a send: `send`'s stdout, and at its end the command's exit.
/// A failed command ends the body with an error, which breaks the request,
/// so the receiver never takes a cut stream for a whole one.
fn send_stream(
    child: tokio::process::Child,
    stdout: tokio::process::ChildStdout,
    stderr: tokio::process::ChildStderr,
    sent: Arc<std::sync::atomic::AtomicU64>,
    argv0: String,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    let stderr_task = read_all(stderr);
    futures::stream::unfold(Some((child, stdout, stderr_task)), move |state| {
        let sent = sent.clone();
        let argv0 = argv0.clone();
        async move {
            let (mut child, mut stdout, stderr_task) = state?;
            let mut buffer = vec![0u8; CHUNK_BYTES];
            match stdout.read(&mut buffer).await {
                Ok(0) => {
                    let status = child.wait().await;
                    let stderr = stderr_task.await.unwrap_or_default();
                    match status {
                        Ok(status) if status.success() => None,
                        Ok(status) => Some((
                            Err(std::io::Error::other(format!(
                                "`{argv0}` failed ({status}): {}",
                                stderr.trim()
                            ))),
                            None,
                        )),
                        Err(error) => Some((Err(error), None)),
                    }
                }
                Ok(read) => {
                    buffer.truncate(read);
                    sent.fetch_add(read as u64, std::sync::atomic::Ordering::Relaxed);
                    Some((Ok(buffer), Some((child, stdout, stderr_task))))
                }
                Err(error) => Some((Err(error), None)),
            }
        }
    })
}

async fn list_snapshots(
    State(replication): State<Replication>,
    Path(volume): Path<String>,
) -> Result<Json<Vec<String>>, (StatusCode, String)> {
    let set = replication.set(&volume).ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            format!("no replicated volume {volume:?} here"),
        )
    })?;
    let names = set
        .volume
        .store()
        .snapshots()
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(names.iter().map(|n| n.to_string()).collect()))
}

#[derive(Debug, Deserialize)]
struct ReceiveQuery {
    name: String,
    parent: Option<String>,
}

async fn receive(
    State(replication): State<Replication>,
    Path(volume): Path<String>,
    Query(query): Query<ReceiveQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, String), (StatusCode, String)> {
    let bad = |why: String| (StatusCode::BAD_REQUEST, why);
    let set = replication
        .set(&volume)
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!("no replicated volume {volume:?} here"),
            )
        })?
        .clone();
    let name: SnapshotName = query.name.parse().map_err(bad)?;
    let parent: Option<SnapshotName> = match &query.parent {
        Some(text) => Some(text.parse().map_err(bad)?),
        None => None,
    };
    let header = |key: &str| -> Result<u64, (StatusCode, String)> {
        headers
            .get(key)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                (
                    StatusCode::BAD_REQUEST,
                    format!("header {key} is missing or not a number"),
                )
            })
    };
    let (from, epoch) = (header(FROM_HEADER)?, header(EPOCH_HEADER)?);

    // Fencing: only the holder of the newest assignment this node knows may
    // write the cluster's copies.
    let me = replication.config.me().id;
    let state = replication.consensus.state().borrow().clone();
    let refuse = |why: String| {
        tracing::warn!(%volume, from, epoch, "refusing a snapshot stream: {why}");
        (StatusCode::CONFLICT, why)
    };
    if epoch < state.epoch {
        return Err(refuse(format!(
            "epoch {epoch} is older than the cluster's {}: node {from} is a stale master",
            state.epoch
        )));
    }
    if epoch == state.epoch && state.assignment.map(|a| a.node) != Some(from) {
        return Err(refuse(format!(
            "node {from} does not hold the role under epoch {epoch}"
        )));
    }
    if state.assignment.map(|a| a.node) == Some(me)
        || matches!(set.volume.is_mounted().await, Ok(true))
    {
        return Err(refuse("this node holds the volume itself".to_string()));
    }

    let _one_at_a_time = replication
        .receiving
        .get(&volume)
        .expect("a lock per volume")
        .lock()
        .await;
    let store = set.volume.store().clone();
    let started = Instant::now();
    let result = receive_stream(&set, &name, parent.as_ref(), body).await;
    let mut transfer = PeerTransfer {
        peer: format!("node {from}"),
        snapshot: Some(name.to_string()),
        parent: parent.as_ref().map(|p| p.to_string()),
        duration_ms: started.elapsed().as_millis() as u64,
        at_unix_ms: unix_ms(SystemTime::now()),
        ..Default::default()
    };
    match result {
        Ok(bytes) => {
            transfer.bytes = bytes;
            replication.update(&volume, |entry| {
                entry.last_received = Some(transfer);
                entry.last_error = None;
            });
            if let Ok(names) = store.snapshots().await {
                for old in to_prune(&names, set.settings.keep) {
                    if let Err(error) = store.remove(&old).await {
                        tracing::warn!(%volume, snapshot = %old, %error, "cannot prune a snapshot");
                    }
                }
            }
            tracing::info!(%volume, snapshot = %name, bytes, "snapshot received");
            Ok((
                StatusCode::CREATED,
                format!("received {name} ({bytes} bytes)"),
            ))
        }
        Err(error) => {
            let _ = store.abort_received(&name).await;
            transfer.error = Some(error.clone());
            replication.update(&volume, |entry| {
                entry.last_received = Some(transfer);
                entry.last_error = Some(error.clone());
            });
            tracing::warn!(%volume, snapshot = %name, %error, "snapshot stream failed; nothing kept");
            Err((StatusCode::INTERNAL_SERVER_ERROR, error))
        }
    }
}

/// Pipes `body` into the store's receive command; commits only when both
/// the body ended cleanly and the command succeeded.
async fn receive_stream(
    set: &ReplicatedSet,
    name: &SnapshotName,
    parent: Option<&SnapshotName>,
    body: Body,
) -> Result<u64, String> {
    let store = set.volume.store();
    let argv = store
        .prepare_receive(name, parent)
        .await
        .map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", argv.join(" ")))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stderr_task = read_all(child.stderr.take().expect("piped stderr"));
    let mut stream = body.into_data_stream();
    let mut bytes = 0u64;
    let mut body_error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                bytes += chunk.len() as u64;
                if let Err(error) = stdin.write_all(&chunk).await {
                    body_error = Some(format!("writing to `{}`: {error}", argv.join(" ")));
                    break;
                }
            }
            Err(error) => {
                body_error = Some(format!("the stream broke after {bytes} bytes: {error}"));
                break;
            }
        }
    }
    drop(stdin);
    if let Some(error) = body_error {
        let _ = child.kill().await;
        return Err(error);
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for `{}`: {e}", argv.join(" ")))?;
    let stderr = stderr_task.await.unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "`{}` failed ({status}): {}",
            argv.join(" "),
            stderr.trim()
        ));
    }
    store
        .commit_received(name)
        .await
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}
