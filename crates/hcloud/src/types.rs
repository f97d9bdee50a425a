//! The resources as the API returns them.
//!
//! Only the fields mailherd reads or reports are here; serde ignores the
//! rest, so a new field in the API breaks nothing. Fields the API may send
//! as `null` (or leave out) read as their default instead of failing the
//! whole answer: a promotion must not stop because a description is null.
//! Timestamps stay the API's RFC 3339 strings: mailherd only shows them.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// Reads `null` (or a missing field, with `#[serde(default)]`) as the
/// type's default.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A floating IP: `GET /floating_ips/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloatingIp {
    pub id: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub ip: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub r#type: IpType,
    /// The server the address is routed to, `None` when unassigned.
    #[serde(default)]
    pub server: Option<u64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub dns_ptr: Vec<DnsPtr>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub home_location: Location,
    #[serde(default, deserialize_with = "null_as_default")]
    pub blocked: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub protection: Protection,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub created: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpType {
    Ipv4,
    Ipv6,
    #[default]
    #[serde(other)]
    Unknown,
}

/// A reverse DNS entry of an address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DnsPtr {
    #[serde(default, deserialize_with = "null_as_default")]
    pub ip: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub dns_ptr: String,
}

/// A location (`fsn1`, `nbg1`, `hel1`, ...). Volumes attach only to servers
/// of their own location.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Location {
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub description: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub country: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub city: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub latitude: f64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub longitude: f64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub network_zone: String,
}

/// What the API refuses to do to a resource until the protection is lifted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protection {
    #[serde(default, deserialize_with = "null_as_default")]
    pub delete: bool,
    /// Servers only.
    #[serde(default, deserialize_with = "null_as_default")]
    pub rebuild: bool,
}

/// A volume: `GET /volumes/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub id: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// The server it is attached to, `None` when detached.
    #[serde(default)]
    pub server: Option<u64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub status: VolumeStatus,
    #[serde(default, deserialize_with = "null_as_default")]
    pub location: Location,
    /// Size in GB.
    #[serde(default, deserialize_with = "null_as_default")]
    pub size: u64,
    /// The file system the API created on it, `None` if it made none.
    #[serde(default)]
    pub format: Option<String>,
    /// The device path on the server it is attached to, as the API spells
    /// it (the case varies: use it as given).
    #[serde(default)]
    pub linux_device: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub protection: Protection,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub created: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeStatus {
    Creating,
    Available,
    #[default]
    #[serde(other)]
    Unknown,
}

/// A server: `GET /servers/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    pub id: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub status: ServerStatus,
    #[serde(default, deserialize_with = "null_as_default")]
    pub created: String,
    #[serde(default)]
    pub datacenter: Option<Datacenter>,
    #[serde(default)]
    pub public_net: Option<PublicNet>,
    /// The ids of the volumes attached to it.
    #[serde(default, deserialize_with = "null_as_default")]
    pub volumes: Vec<u64>,
    /// Whether an action on it is running (new attach/assign calls answer
    /// `locked` until it ends).
    #[serde(default, deserialize_with = "null_as_default")]
    pub locked: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub protection: Protection,
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerStatus {
    Running,
    Initializing,
    Starting,
    Stopping,
    Off,
    Deleting,
    Migrating,
    Rebuilding,
    #[default]
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Datacenter {
    #[serde(default, deserialize_with = "null_as_default")]
    pub id: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub location: Location,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublicNet {
    #[serde(default)]
    pub ipv4: Option<PublicIpv4>,
    /// The ids of the floating IPs assigned to the server.
    #[serde(default, deserialize_with = "null_as_default")]
    pub floating_ips: Vec<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublicIpv4 {
    #[serde(default, deserialize_with = "null_as_default")]
    pub ip: String,
}

/// An asynchronous change the API is making: `GET /actions/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub id: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub command: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub status: ActionStatus,
    /// Percent done, 0 to 100.
    #[serde(default, deserialize_with = "null_as_default")]
    pub progress: u32,
    #[serde(default, deserialize_with = "null_as_default")]
    pub started: String,
    #[serde(default)]
    pub finished: Option<String>,
    #[serde(default)]
    pub error: Option<ActionError>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub resources: Vec<ActionResource>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionStatus {
    Running,
    Success,
    Error,
    /// A status this client does not know; waited on like `running`.
    #[default]
    #[serde(other)]
    Unknown,
}

/// Why an action ended in `error`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionError {
    #[serde(default, deserialize_with = "null_as_default")]
    pub code: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub message: String,
}

/// A resource an action works on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionResource {
    pub id: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub r#type: String,
}

/// `meta.pagination` of a list answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pagination {
    #[serde(default, deserialize_with = "null_as_default")]
    pub page: u64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub per_page: u64,
    #[serde(default)]
    pub previous_page: Option<u64>,
    #[serde(default)]
    pub next_page: Option<u64>,
    #[serde(default)]
    pub last_page: Option<u64>,
    #[serde(default)]
    pub total_entries: Option<u64>,
}

/// The rate-limit headers of the last answer that had them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// `RateLimit-Limit`: the size of the bucket.
    pub limit: u64,
    /// `RateLimit-Remaining`: requests left in it.
    pub remaining: u64,
    /// `RateLimit-Reset`: unix time at which the bucket is full again.
    pub reset_unix: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_and_unknown_values_are_tolerated() {
        let volume: Volume = serde_json::from_value(serde_json::json!({
            "id": 7, "name": null, "server": null, "status": "resizing",
            "location": null, "size": 10, "format": null, "linux_device": null,
            "labels": null, "protection": null, "created": null, "extra": {"new": true}
        }))
        .unwrap();
        assert_eq!(volume.status, VolumeStatus::Unknown);
        assert_eq!(volume.server, None);
        assert_eq!(volume.linux_device, None);

        let action: Action = serde_json::from_value(serde_json::json!({
            "id": 1, "command": "attach_volume", "status": "queued", "progress": 0,
            "started": "2024-01-01T00:00:00+00:00", "finished": null, "error": null,
            "resources": [{"id": 7, "type": "volume"}]
        }))
        .unwrap();
        assert_eq!(action.status, ActionStatus::Unknown);
        assert_eq!(action.resources[0].r#type, "volume");
    }
}
