//! [`World`]: the servers, floating IPs and volumes of the simulated
//! project. The same type seeds a simulator (from Rust or a JSON file) and
//! reports its current state (`GET /_sim/world`, [`crate::SimHandle::world`]).
//!
//! A seed may leave out what has an obvious default (names, the device
//! path, the status); [`World::normalized`] fills them in and checks that
//! the seed does not contradict itself, so the simulator never has to.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::SimError;

/// The simulated project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct World {
    #[serde(default)]
    pub servers: Vec<WorldServer>,
    #[serde(default)]
    pub floating_ips: Vec<WorldFloatingIp>,
    #[serde(default)]
    pub volumes: Vec<WorldVolume>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldServer {
    pub id: u64,
    /// Unique: the metadata service finds a server by name.
    pub name: String,
    /// A location name (`fsn1`, `nbg1`, `hel1`, ...).
    pub location: String,
    /// `running` or `off` (see `POST /_sim/servers/{id}/power`).
    #[serde(default = "running")]
    pub status: String,
    /// The server's primary IPv4 address, shown in `public_net`.
    #[serde(default)]
    pub ipv4: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldFloatingIp {
    pub id: u64,
    pub ip: String,
    /// Defaults to `floating-ip-<id>`.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub home_location: String,
    /// The server it is routed to.
    #[serde(default)]
    pub server: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorldVolume {
    pub id: u64,
    /// Defaults to `volume-<id>`.
    #[serde(default)]
    pub name: String,
    pub location: String,
    /// In GB.
    #[serde(default = "ten")]
    pub size: u64,
    /// The server it is attached to.
    #[serde(default)]
    pub server: Option<u64>,
    /// Defaults to `/dev/disk/by-id/scsi-0HC_Volume_<id>`.
    #[serde(default)]
    pub linux_device: String,
    /// The file system the API made on it; `null` for none.
    #[serde(default)]
    pub format: Option<String>,
}

fn running() -> String {
    "running".to_string()
}

fn ten() -> u64 {
    10
}

impl World {
    pub fn from_json_str(json: &str) -> Result<World, serde_json::Error> {
        serde_json::from_str(json)
    }

    pub fn from_json_file(path: impl AsRef<Path>) -> Result<World, SimError> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path).map_err(|source| SimError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        World::from_json_str(&json).map_err(|source| SimError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The world with its defaults filled in and sorted by id, or why it
    /// cannot be simulated.
    pub fn normalized(mut self) -> Result<World, SimError> {
        let invalid = |reason: String| Err(SimError::InvalidWorld(reason));

        self.servers.sort_by_key(|server| server.id);
        self.floating_ips.sort_by_key(|floating_ip| floating_ip.id);
        self.volumes.sort_by_key(|volume| volume.id);

        let mut names = BTreeSet::new();
        for pair in self.servers.windows(2) {
            if pair[0].id == pair[1].id {
                return invalid(format!("server id {} appears twice", pair[0].id));
            }
        }
        for server in &self.servers {
            if server.id == 0 {
                return invalid("server id 0: ids start at 1".to_string());
            }
            if !names.insert(server.name.clone()) {
                return invalid(format!("server name {:?} appears twice", server.name));
            }
            if server.status != "running" && server.status != "off" {
                return invalid(format!(
                    "server {} has status {:?}: only running and off are simulated",
                    server.id, server.status
                ));
            }
        }
        let server_location = |id: u64| {
            self.servers
                .iter()
                .find(|server| server.id == id)
                .map(|server| server.location.clone())
        };

        for pair in self.floating_ips.windows(2) {
            if pair[0].id == pair[1].id {
                return invalid(format!("floating ip id {} appears twice", pair[0].id));
            }
        }
        for floating_ip in &mut self.floating_ips {
            if floating_ip.ip.is_empty() {
                return invalid(format!("floating ip {} has no ip", floating_ip.id));
            }
            if let Some(server) = floating_ip.server {
                if server_location(server).is_none() {
                    return invalid(format!(
                        "floating ip {} is assigned to server {server}, which does not exist",
                        floating_ip.id
                    ));
                }
            }
            if floating_ip.name.is_empty() {
                floating_ip.name = format!("floating-ip-{}", floating_ip.id);
            }
        }

        for pair in self.volumes.windows(2) {
            if pair[0].id == pair[1].id {
                return invalid(format!("volume id {} appears twice", pair[0].id));
            }
        }
        for volume in &mut self.volumes {
            if let Some(server) = volume.server {
                match server_location(server) {
                    None => {
                        return invalid(format!(
                            "volume {} is attached to server {server}, which does not exist",
                            volume.id
                        ))
                    }
                    Some(location) if location != volume.location => {
                        return invalid(format!(
                            "volume {} ({}) is attached to server {server} ({location}): they must share a location",
                            volume.id, volume.location
                        ))
                    }
                    Some(_) => {}
                }
            }
            if volume.name.is_empty() {
                volume.name = format!("volume-{}", volume.id);
            }
            if volume.linux_device.is_empty() {
                volume.linux_device = format!("/dev/disk/by-id/scsi-0HC_Volume_{}", volume.id);
            }
        }
        Ok(self)
    }

    pub fn server(&self, id: u64) -> Option<&WorldServer> {
        self.servers.iter().find(|server| server.id == id)
    }

    pub fn server_by_name(&self, name: &str) -> Option<&WorldServer> {
        self.servers.iter().find(|server| server.name == name)
    }

    pub fn floating_ip(&self, id: u64) -> Option<&WorldFloatingIp> {
        self.floating_ips
            .iter()
            .find(|floating_ip| floating_ip.id == id)
    }

    pub fn volume(&self, id: u64) -> Option<&WorldVolume> {
        self.volumes.iter().find(|volume| volume.id == id)
    }

    pub(crate) fn server_mut(&mut self, id: u64) -> Option<&mut WorldServer> {
        self.servers.iter_mut().find(|server| server.id == id)
    }

    pub(crate) fn floating_ip_mut(&mut self, id: u64) -> Option<&mut WorldFloatingIp> {
        self.floating_ips
            .iter_mut()
            .find(|floating_ip| floating_ip.id == id)
    }

    pub(crate) fn volume_mut(&mut self, id: u64) -> Option<&mut WorldVolume> {
        self.volumes.iter_mut().find(|volume| volume.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(json: &str) -> Result<World, SimError> {
        World::from_json_str(json).unwrap().normalized()
    }

    #[test]
    fn defaults_are_filled_in() {
        let world = world(
            r#"{"servers":[{"id":2,"name":"n2","location":"fsn1"},{"id":1,"name":"n1","location":"fsn1"}],
                "floating_ips":[{"id":5,"ip":"10.0.0.5","home_location":"fsn1","server":1}],
                "volumes":[{"id":9,"location":"fsn1"}]}"#,
        )
        .unwrap();
        assert_eq!(world.servers[0].id, 1);
        assert_eq!(world.servers[0].status, "running");
        assert_eq!(world.floating_ips[0].name, "floating-ip-5");
        assert_eq!(
            world.volumes[0].linux_device,
            "/dev/disk/by-id/scsi-0HC_Volume_9"
        );
        assert_eq!(world.volumes[0].size, 10);
    }

    #[test]
    fn contradictions_are_refused() {
        for (json, expected) in [
            (
                r#"{"servers":[{"id":1,"name":"a","location":"fsn1"},{"id":1,"name":"b","location":"fsn1"}]}"#,
                "server id 1 appears twice",
            ),
            (
                r#"{"servers":[{"id":1,"name":"a","location":"fsn1"},{"id":2,"name":"a","location":"fsn1"}]}"#,
                "server name \"a\" appears twice",
            ),
            (
                r#"{"floating_ips":[{"id":1,"ip":"10.0.0.1","home_location":"fsn1","server":3}]}"#,
                "assigned to server 3, which does not exist",
            ),
            (
                r#"{"servers":[{"id":1,"name":"a","location":"nbg1"}],"volumes":[{"id":1,"location":"fsn1","server":1}]}"#,
                "must share a location",
            ),
        ] {
            let error = world(json).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
