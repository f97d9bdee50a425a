//! What a consensus node is told at start, how it is checked, and how it
//! becomes an openraft [`openraft::Config`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use mailherd_core::NodeId;

use crate::error::ConsensusError;

/// Identity, peers, storage location and Raft timing of one node.
#[derive(Debug, Clone)]
pub struct ConsensusConfig {
    pub node_id: u64,
    /// Every voter (this node included): id -> its peer endpoint address (host:port).
    pub voters: BTreeMap<u64, SocketAddr>,
    /// Created if missing; holds the redb file.
    pub data_dir: PathBuf,
    /// How often the leader sends heartbeats, e.g. 50.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomised election timeout, e.g. 150.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomised election timeout, e.g. 300. openraft
    /// also uses it as the leader lease: followers refuse votes for this long
    /// after the last heartbeat, and a leader stops accepting proposals this
    /// long after its last quorum acknowledgement.
    pub election_timeout_max_ms: u64,
    /// A node added to a running cluster: it never initialises a cluster of
    /// its own, it waits to be added (`Consensus::add_voter` on the leader).
    pub join: bool,
}

impl ConsensusConfig {
    /// A config with the default LAN timings (50 / 150–300 ms).
    pub fn new(
        node_id: u64,
        voters: BTreeMap<u64, SocketAddr>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        ConsensusConfig {
            node_id,
            voters,
            data_dir: data_dir.into(),
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            join: false,
        }
    }

    /// Checks what openraft would reject later with a less helpful message,
    /// plus what only this crate knows (the voter map).
    pub fn validate(&self) -> Result<(), ConsensusError> {
        let invalid = |reason: String| Err(ConsensusError::Config { reason });
        if self.voters.is_empty() {
            return invalid("voters is empty".into());
        }
        if !self.voters.contains_key(&self.node_id) {
            return invalid(format!(
                "node_id {} is not among the voters {:?}",
                self.node_id,
                self.voters.keys().collect::<Vec<_>>()
            ));
        }
        for (id, addr) in &self.voters {
            // Peers dial these addresses; a wildcard or port 0 would only
            // ever work by accident.
            if addr.ip().is_unspecified() || addr.port() == 0 {
                return invalid(format!(
                    "voter {id} has address {addr}, which peers cannot dial"
                ));
            }
        }
        if self.heartbeat_interval_ms == 0 {
            return invalid("heartbeat_interval_ms is 0".into());
        }
        if self.election_timeout_min_ms <= self.heartbeat_interval_ms {
            return invalid(format!(
                "election_timeout_min_ms ({}) must be greater than heartbeat_interval_ms ({})",
                self.election_timeout_min_ms, self.heartbeat_interval_ms
            ));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return invalid(format!(
                "election_timeout_max_ms ({}) must be greater than election_timeout_min_ms ({})",
                self.election_timeout_max_ms, self.election_timeout_min_ms
            ));
        }
        Ok(())
    }

    /// The peer endpoint of `node`, if it is a voter.
    pub(crate) fn peer_addr(&self, node: NodeId) -> Option<SocketAddr> {
        self.voters.get(&node).copied()
    }
}

/// Knobs with sensible defaults that the agent rarely touches; tests use
/// them to make snapshots happen after a handful of entries.
#[derive(Debug, Clone)]
pub struct ConsensusOptions {
    /// Build a snapshot once this many entries were applied since the last
    /// one. The replicated state is small, so a snapshot is cheap.
    pub snapshot_every_logs: u64,
    /// Entries kept in the log behind a snapshot, so that a follower that is
    /// briefly behind catches up from the log instead of a snapshot.
    pub logs_kept_after_snapshot: u64,
    /// HTTP client for peer traffic. `None` builds a plain one; the agent
    /// passes its mTLS client here (invariant 7: inter-node traffic is
    /// mutually authenticated).
    pub peer_client: Option<reqwest::Client>,
    /// URL scheme of the peer endpoints, "http" or "https".
    pub peer_scheme: &'static str,
}

impl Default for ConsensusOptions {
    fn default() -> Self {
        ConsensusOptions {
            snapshot_every_logs: 1000,
            logs_kept_after_snapshot: 100,
            peer_client: None,
            peer_scheme: "http",
        }
    }
}

impl ConsensusOptions {
    pub(crate) fn validate(&self) -> Result<(), ConsensusError> {
        if self.snapshot_every_logs == 0 {
            return Err(ConsensusError::Config {
                reason: "snapshot_every_logs is 0".into(),
            });
        }
        if self.peer_scheme != "http" && self.peer_scheme != "https" {
            return Err(ConsensusError::Config {
                reason: format!(
                    "peer_scheme {:?} is neither \"http\" nor \"https\"",
                    self.peer_scheme
                ),
            });
        }
        Ok(())
    }
}

/// The openraft config for `config` and `options`, validated by openraft too.
pub(crate) fn raft_config(
    config: &ConsensusConfig,
    options: &ConsensusOptions,
) -> Result<openraft::Config, ConsensusError> {
    let raft_config = openraft::Config {
        cluster_name: "mailherd".to_string(),
        heartbeat_interval: config.heartbeat_interval_ms,
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        // A node that was cut off must not come back with an inflated term
        // and depose a healthy leader: that would cost a needless election
        // and, for the agent, a decider change.
        enable_pre_vote: Some(true),
        // When a leader loses its quorum it goes quiet for a while, so that
        // followers it can still reach stop honouring its lease and the
        // connected majority can elect (openraft issue #2080). openraft
        // requires at least leader_lease + election_timeout_max, and its
        // leader lease is election_timeout_max, so 200 ms is only possible
        // with very short timeouts.
        quorum_loss_probe_interval: Some(quorum_loss_probe_interval_ms(config)),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(options.snapshot_every_logs),
        max_in_snapshot_log_to_keep: options.logs_kept_after_snapshot,
        // Must exceed the snapshot interval, or a lagging follower is sent
        // a snapshot that does not help it catch up (openraft's advice).
        replication_lag_threshold: options.snapshot_every_logs.saturating_mul(2).max(100),
        // A snapshot is one JSON document of at most a few hundred KiB;
        // the timeout covers the transfer plus the follower's fsync.
        install_snapshot_timeout: config.election_timeout_max_ms.max(1000),
        // Purging one entry at a time would cost a transaction per apply.
        purge_batch_size: 16,
        // Recover quickly after a peer restarts: first retry after 50 ms,
        // never wait longer than 500 ms between attempts.
        backoff: "50ms 100ms ...500ms".to_string(),
        // These bound what one node keeps in memory for queued client
        // writes and replication; mailherd proposes a few commands a
        // second, so the defaults (64 Ki) are far beyond need.
        api_channel_size: Some(1024),
        notification_channel_size: Some(4096),
        max_payload_entries: 300,
        ..Default::default()
    };
    raft_config
        .validate()
        .map_err(|error| ConsensusError::Config {
            reason: format!("openraft rejects the timing: {error}"),
        })
}

/// The shortest probe interval openraft accepts, never below 200 ms.
pub(crate) fn quorum_loss_probe_interval_ms(config: &ConsensusConfig) -> u64 {
    (2 * config.election_timeout_max_ms).max(200)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(ids: &[u64]) -> BTreeMap<u64, SocketAddr> {
        ids.iter()
            .map(|id| (*id, SocketAddr::from(([127, 0, 0, 1], 7000 + *id as u16))))
            .collect()
    }

    fn check(config: ConsensusConfig, expected_error: Option<&str>) {
        let result = config
            .validate()
            .and_then(|()| raft_config(&config, &ConsensusOptions::default()).map(|_| ()));
        match (result, expected_error) {
            (Ok(()), None) => {}
            (Err(error), Some(fragment)) => {
                let message = error.to_string();
                assert!(
                    message.contains(fragment),
                    "{message:?} does not contain {fragment:?}"
                );
            }
            (result, expected) => panic!("got {result:?}, expected error {expected:?}"),
        }
    }

    #[test]
    fn validation_table() {
        let ok = ConsensusConfig::new(1, voters(&[1, 2, 3]), "/tmp/x");
        check(ok.clone(), None);
        check(
            ConsensusConfig {
                node_id: 4,
                ..ok.clone()
            },
            Some("node_id 4 is not among"),
        );
        check(
            ConsensusConfig {
                voters: BTreeMap::new(),
                ..ok.clone()
            },
            Some("voters is empty"),
        );
        let mut wildcard = ok.clone();
        wildcard.voters.insert(2, "0.0.0.0:7002".parse().unwrap());
        check(wildcard, Some("voter 2 has address 0.0.0.0:7002"));
        check(
            ConsensusConfig {
                heartbeat_interval_ms: 200,
                ..ok.clone()
            },
            Some("must be greater than heartbeat_interval_ms"),
        );
        check(
            ConsensusConfig {
                election_timeout_max_ms: 150,
                ..ok.clone()
            },
            Some("must be greater than election_timeout_min_ms"),
        );
        check(
            ConsensusConfig {
                heartbeat_interval_ms: 0,
                ..ok
            },
            Some("heartbeat_interval_ms is 0"),
        );
    }

    #[test]
    fn probe_interval_is_the_minimum_openraft_accepts() {
        let config = ConsensusConfig::new(1, voters(&[1]), "/tmp/x");
        assert_eq!(quorum_loss_probe_interval_ms(&config), 600);
        let raft = raft_config(&config, &ConsensusOptions::default()).unwrap();
        assert_eq!(raft.quorum_loss_probe_interval, Some(600));
        assert_eq!(raft.enable_pre_vote, Some(true));
        // One millisecond less is refused by openraft itself, which is why
        // the interval is not the 200 ms the design hoped for.
        let too_short = openraft::Config {
            quorum_loss_probe_interval: Some(599),
            ..raft
        };
        assert!(too_short.validate().is_err());
    }
}
