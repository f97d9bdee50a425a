//! [`DbError`]: what went wrong, always naming the node and its address.

/// Why a replication operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The config cannot be used (a password file, a node not listed).
    #[error("{0}")]
    Config(String),
    /// A server could not be reached or refused the login.
    #[error("{node} ({address}): cannot connect: {reason}")]
    Connect {
        node: String,
        address: String,
        reason: String,
    },
    /// A statement failed on a server.
    #[error("{node} ({address}): {what}: {reason}")]
    Statement {
        node: String,
        address: String,
        what: String,
        reason: String,
    },
    /// The server is not fit for replication as configured (binary log
    /// off, an unknown answer).
    #[error("{node} ({address}): {reason}")]
    Unfit {
        node: String,
        address: String,
        reason: String,
    },
    /// The new master did not apply its relay log within the bound.
    #[error(
        "{node} ({address}): relay log not applied within {waited_ms} ms \
         (max_promotion_lag_ms): applied {applied}, received {received}, \
         {behind} transactions behind"
    )]
    LagExceeded {
        node: String,
        address: String,
        waited_ms: u64,
        applied: String,
        received: String,
        behind: u64,
    },
    /// A server holds transactions its new master lacks.
    #[error(
        "{node} ({address}): has transactions the master {master} lacks ({gtids}): \
         following it would lose them; rebuild {node} from {master} (or save those \
         transactions first)"
    )]
    Diverged {
        node: String,
        address: String,
        master: String,
        gtids: String,
    },
}
