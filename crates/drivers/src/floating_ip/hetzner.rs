//! The `hetzner` floating IP driver: Hetzner routes the address to one
//! server, the one it is assigned to through the API; the server must then
//! configure the address itself (`ip addr add FIP/32 dev eth0`).
//!
//! Acquire assigns the floating IP to this server and waits for the action,
//! reads the assignment back and, if the API still shows another server
//! (an in-place reassign that did not take, hcloud-fip-controller #36),
//! says so in a warning and falls back to unassign, then assign (the steps
//! of the move, logged when it ends, show the fallback); only then adds
//! the /32 locally and sends a gratuitous ARP (harmless on Hetzner, useful
//! on a routed lab segment).
//! Release only removes the local address: the next master's assign moves
//! the route, and a node being fenced must not need the API to let go.
//! `is_held` is the local address.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use async_trait::async_trait;
use mailherd_config::{FloatingIpSection, HetznerSection};

use super::netlink::NetlinkSession;
use super::{garp, FloatingIp};
use crate::hetzner::{HetznerApi, MoveError, Progress};
use crate::DriverError;

/// Hetzner routes a floating IP to a server as a single address.
const PREFIX_LEN: u8 = 32;

/// Actions a move may need: assign, then unassign and assign again.
const MOVE_ACTIONS: u32 = 3;

/// What the API shows a floating IP assigned to, for messages: `server 7`
/// or `no server`.
fn server_shown(server: Option<u64>) -> String {
    match server {
        Some(server) => format!("server {server}"),
        None => "no server".to_string(),
    }
}

/// A Hetzner Cloud floating IP.
#[derive(Debug)]
pub struct HetznerFloatingIp {
    api: HetznerApi,
    floating_ip_id: u64,
    address: Ipv4Addr,
    interface: String,
}

impl HetznerFloatingIp {
    pub fn new(
        api: HetznerApi,
        floating_ip_id: u64,
        address: Ipv4Addr,
        interface: impl Into<String>,
    ) -> Self {
        HetznerFloatingIp {
            api,
            floating_ip_id,
            address,
            interface: interface.into(),
        }
    }

    pub fn from_config(
        section: &FloatingIpSection,
        hetzner: Option<&HetznerSection>,
    ) -> Result<Self, DriverError> {
        let invalid = |reason: String| DriverError::InvalidConfig {
            section: "floating_ip",
            reason,
        };
        let hetzner = hetzner.ok_or(DriverError::NotConfigured {
            what: "[hetzner] (needed by the hetzner floating ip driver)",
        })?;
        let floating_ip_id = section
            .floating_ip_id
            .ok_or_else(|| invalid("floating_ip_id is missing".to_string()))?;
        let text = section.address.as_str();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address = match address.parse::<IpAddr>() {
            Ok(IpAddr::V4(address)) => address,
            Ok(IpAddr::V6(_)) => {
                return Err(DriverError::Unsupported {
                    driver: "hetzner floating ip",
                    what: format!("IPv6 address {text}"),
                })
            }
            Err(_) => return Err(invalid(format!("address {text:?} is not an IP address"))),
        };
        if prefix.is_some_and(|prefix| prefix != "32") {
            return Err(invalid(format!(
                "address {text:?}: a hetzner floating ip is added as /32"
            )));
        }
        if section.interface.is_empty() {
            return Err(invalid("interface is empty".to_string()));
        }
        Ok(HetznerFloatingIp::new(
            HetznerApi::from_config(hetzner)?,
            floating_ip_id,
            address,
            section.interface.clone(),
        ))
    }

    fn resource(&self) -> String {
        format!(
            "hetzner floating ip {} ({})",
            self.floating_ip_id, self.address
        )
    }

    fn open(&self) -> Result<NetlinkSession, DriverError> {
        NetlinkSession::open(&format!("{}/{PREFIX_LEN}", self.address), &self.interface)
    }

    /// The API part of acquire: the floating IP routed to this server.
    async fn route_here(&self, progress: Progress) -> Result<(), MoveError> {
        let client = self.api.client();
        let id = self.floating_ip_id;
        let server = progress
            .run("finding this server's id", self.api.server_id())
            .await?;
        let current = progress
            .run("reading the floating ip", client.floating_ip(id))
            .await?;
        if current.ip != self.address.to_string() {
            return Err(MoveError::new(
                "checking the address",
                format!(
                    "the API says floating ip {id} is {}, the config says {}",
                    current.ip, self.address
                ),
            ));
        }
        if current.server == Some(server) {
            return Ok(());
        }
        let from = match current.server {
            Some(other) => format!(" (from server {other})"),
            None => String::new(),
        };
        let assign = format!("assigning to server {server}{from}");
        progress
            .run(assign.clone(), client.assign_and_wait(id, server))
            .await?;
        progress.done(assign);

        let after = progress
            .run("reading the assignment back", client.floating_ip(id))
            .await?;
        if after.server == Some(server) {
            return Ok(());
        }
        // The assign action succeeded, yet the API does not show the
        // address here: an in-place reassign that did not take
        // (hcloud-fip-controller #36, where unassign, then assign was
        // reliable). Said as a warning, and kept in the move's steps.
        let shown = server_shown(after.server);
        tracing::warn!(
            floating_ip = id,
            server,
            shown = ?after.server,
            "hcloud: the assign of floating ip {id} to server {server} succeeded but did not take \
             (the API shows {shown}); falling back to unassign, then assign"
        );
        progress.done(format!("the assign did not take (the API showed {shown})"));
        let unassign = format!("unassigning (from {shown})");
        progress
            .run(unassign.clone(), client.unassign_and_wait(id))
            .await?;
        progress.done(unassign);
        let reassign = format!("assigning to server {server} after the unassign");
        progress
            .run(reassign.clone(), client.assign_and_wait(id, server))
            .await?;
        progress.done(reassign);
        let last = progress
            .run(
                "reading the assignment back after the unassign",
                client.floating_ip(id),
            )
            .await?;
        if last.server != Some(server) {
            return Err(MoveError::new(
                "checking the assignment",
                format!(
                    "the API shows {} after unassign, then assign to server {server}",
                    server_shown(last.server)
                ),
            ));
        }
        Ok(())
    }

    /// Adds the /32 on the interface (already there is fine).
    async fn add_locally(&self) -> Result<(), DriverError> {
        let session = self.open()?;
        let interface = session.interface(&self.interface).await?;
        let present = session
            .addresses(&interface, self.address)
            .await?
            .iter()
            .any(|entry| entry.header.prefix_len == PREFIX_LEN);
        if !present {
            session
                .add_address(&interface, self.address, PREFIX_LEN)
                .await?;
        }
        self.announce(&session).await;
        Ok(())
    }

    /// A gratuitous ARP, best effort: Hetzner routes by the API, so a lost
    /// announcement does not lose the address.
    async fn announce(&self, session: &NetlinkSession) {
        let result = match session.interface(&self.interface).await {
            Ok(interface) => match interface.mac {
                Some(mac) => garp::announce(interface.index, mac, self.address)
                    .await
                    .map_err(|error| error.to_string()),
                None => Err("the interface has no ethernet address".to_string()),
            },
            Err(error) => Err(error.to_string()),
        };
        if let Err(reason) = result {
            tracing::debug!(address = %self.address, interface = %self.interface, %reason, "no gratuitous arp");
        }
    }
}

#[async_trait]
impl FloatingIp for HetznerFloatingIp {
    fn describe(&self) -> String {
        format!(
            "hetzner floating ip {} ({}/32 on {})",
            self.floating_ip_id, self.address, self.interface
        )
    }

    async fn acquire(&self) -> Result<(), DriverError> {
        let budget = self.api.move_budget(MOVE_ACTIONS);
        self.api
            .timed_move(&self.resource(), budget, |progress| {
                self.route_here(progress)
            })
            .await?;
        self.add_locally().await
    }

    /// Checks that the API still routes the address here, and assigns it
    /// again if not (drift repaired, with a warning); then announces.
    async fn refresh(&self) -> Result<(), DriverError> {
        let server = self
            .api
            .server_id()
            .await
            .map_err(|error| DriverError::Cloud {
                resource: self.resource(),
                step: "finding this server's id".to_string(),
                reason: error.to_string(),
                done: Vec::new(),
            })?;
        let current = self
            .api
            .client()
            .floating_ip(self.floating_ip_id)
            .await
            .map_err(|error| DriverError::Cloud {
                resource: self.resource(),
                step: "reading the floating ip".to_string(),
                reason: error.to_string(),
                done: Vec::new(),
            })?;
        if current.server != Some(server) {
            tracing::warn!(
                floating_ip = self.floating_ip_id,
                server,
                shown = ?current.server,
                "the API routes the floating ip elsewhere while this node is master: assigning it again"
            );
            self.acquire().await?;
        }
        let session = self.open()?;
        self.announce(&session).await;
        Ok(())
    }

    async fn release(&self) -> Result<(), DriverError> {
        let session = self.open()?;
        let interface = match session.interface(&self.interface).await {
            Ok(interface) => interface,
            Err(DriverError::InterfaceNotFound { .. }) => return Ok(()),
            Err(error) => return Err(error),
        };
        session.remove_address(&interface, self.address).await
    }

    async fn is_held(&self) -> Result<bool, DriverError> {
        let session = self.open()?;
        let interface = match session.interface(&self.interface).await {
            Ok(interface) => interface,
            Err(DriverError::InterfaceNotFound { .. }) => return Ok(false),
            Err(error) => return Err(error),
        };
        Ok(!session
            .addresses(&interface, self.address)
            .await?
            .is_empty())
    }

    fn api_budget(&self) -> Duration {
        self.api.move_budget(MOVE_ACTIONS)
    }

    fn last_api_ms(&self) -> Option<u64> {
        self.api.last_move_ms()
    }
}
