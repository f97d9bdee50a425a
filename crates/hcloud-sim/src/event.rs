//! [`SimEvent`]: what changed in the world when an action completed, for
//! whoever must make the network agree (the lab routes the floating IP and
//! exposes the volume's device to the server it is attached to).

use std::sync::Arc;

use serde::Serialize;

/// A change of the world, reported once per successful action that changed
/// something (an assign to the server already holding the address reports
/// nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SimEvent {
    /// The floating IP is now routed to `server` (`None`: to no server).
    FloatingIpAssigned {
        floating_ip: u64,
        ip: String,
        server: Option<u64>,
    },
    /// The volume is now attached to `server` (`None`: detached).
    VolumeAttached {
        volume: u64,
        server: Option<u64>,
        linux_device: String,
    },
}

/// Called with each [`SimEvent`] before the action reports success and
/// before the API shows the change, so that by the time a client sees
/// `success` the network already matches. It runs on a blocking thread
/// (`spawn_blocking`): it may run a command and wait for it.
pub type EventHook = Arc<dyn Fn(SimEvent) + Send + Sync>;
