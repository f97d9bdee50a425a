//! The pure core of mailherd.
//!
//! Everything here is plain Rust with no I/O: no sockets, no files, no clocks.
//! Time comes in as [`Millis`] values that the caller reads from its own
//! monotonic clock (or that a test invents), so every decision the cluster
//! makes can be replayed and checked in thousands of simulated scenarios.
//!
//! # Layout
//! - [`state`]: the replicated cluster state and the commands that change it
//!   (the Raft state machine's `apply` lives here, deterministic).
//! - [`lease`]: lease timing and its validation.
//! - [`decider`]: what the Raft leader does: who gets the master role, when.
//! - [`holder`]: what every mail node does about its own role: renew, promote,
//!   demote, release, self-fence before the lease runs out.
//! - [`checks`]: rise/fall counters and the Operational/Degraded/Down verdict.
//! - [`pipeline`]: records of promotion and demotion steps.
//! - [`reconcile`]: what the reconciler and the garbage collector do about
//!   what the host really holds (invariant 4), and which history entries
//!   may go.
//! - [`watchdog`]: when the master arms and pets its watchdog, so that a
//!   killed or frozen agent's node is reset before its lease ends.
//! - [`sim`]: a simulated cluster (decider + holders + a lossy log) used by the
//!   property tests to check "never two holders".

pub mod checks;
pub mod decider;
pub mod handover;
pub mod holder;
pub mod lease;
pub mod pipeline;
pub mod reconcile;
pub mod state;
pub mod watchdog;

#[cfg(test)]
mod sim;

pub use checks::{CheckCounter, CheckState, Verdict};
pub use decider::{Candidate, DeciderView, Decision};
pub use holder::{Holder, HolderAction, HolderEvent, Phase, RenewalOutcome};
pub use lease::LeaseTiming;
pub use state::{
    Assignment, AssignmentKind, ClusterState, Command, CommandResult, Epoch, FailoverRecord,
    MemberInfo, NodeHealth, NodeId, Rejection, ReleaseReason,
};

/// A point on a monotonic clock, in milliseconds since an arbitrary origin
/// chosen by whoever owns the clock. Never compared across processes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Millis(pub u64);

impl Millis {
    pub fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
    pub fn minus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_sub(ms))
    }
    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}
