//! Address add/remove/list over rtnetlink, in the calling thread's network
//! namespace.
//!
//! A connection is opened per driver call rather than kept: calls are rare
//! (promotion, demotion, reconcile), a fresh socket never carries a stale
//! state after a namespace or interface change, and the netlink socket is
//! created in the namespace of the thread that makes the call.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{AddressMessageBuilder, Handle};
use tokio::task::JoinHandle;

use crate::DriverError;

/// An interface as the address code needs it.
#[derive(Debug, Clone)]
pub(crate) struct Interface {
    pub(crate) name: String,
    pub(crate) index: u32,
    /// The hardware address; `None` for interfaces without one (tun, lo
    /// reports zeros, which callers also reject for ARP).
    pub(crate) mac: Option<[u8; 6]>,
}

/// One open rtnetlink connection.
pub(crate) struct NetlinkSession {
    handle: Handle,
    /// Drives the socket; aborted on drop so no task outlives the call.
    connection_task: JoinHandle<()>,
}

impl Drop for NetlinkSession {
    fn drop(&mut self) {
        self.connection_task.abort();
    }
}

/// The errno inside an rtnetlink error, as a positive number.
fn errno_of(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
        _ => None,
    }
}

fn describe_rtnetlink_error(error: &rtnetlink::Error) -> String {
    match error {
        rtnetlink::Error::NetlinkError(message) => message.to_io().to_string(),
        other => other.to_string(),
    }
}

impl NetlinkSession {
    /// Opens a connection in the calling thread's network namespace.
    /// `address` and `interface` only name things in the error.
    pub(crate) fn open(address: &str, interface: &str) -> Result<NetlinkSession, DriverError> {
        let (connection, handle, _unsolicited) =
            rtnetlink::new_connection().map_err(|error| DriverError::Netlink {
                op: "open",
                address: address.to_string(),
                interface: interface.to_string(),
                reason: error.to_string(),
            })?;
        let connection_task = tokio::spawn(connection);
        Ok(NetlinkSession {
            handle,
            connection_task,
        })
    }

    pub(crate) async fn interface(&self, name: &str) -> Result<Interface, DriverError> {
        let not_found = |reason: String| DriverError::InterfaceNotFound {
            interface: name.to_string(),
            reason,
        };
        let link: LinkMessage = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await
            .map_err(|error| not_found(describe_rtnetlink_error(&error)))?
            .ok_or_else(|| not_found("no such link".to_string()))?;
        let mac = link
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                LinkAttribute::Address(bytes)
                    if bytes.len() == 6 && bytes.iter().any(|b| *b != 0) =>
                {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(bytes);
                    Some(mac)
                }
                _ => None,
            });
        Ok(Interface {
            name: name.to_string(),
            index: link.header.index,
            mac,
        })
    }

    /// Every entry of `address` on the interface, whatever its prefix.
    pub(crate) async fn addresses(
        &self,
        interface: &Interface,
        address: Ipv4Addr,
    ) -> Result<Vec<AddressMessage>, DriverError> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(interface.index)
            .set_address_filter(address.into())
            .execute()
            .try_collect()
            .await
            .map_err(|error| DriverError::Netlink {
                op: "list",
                address: address.to_string(),
                interface: interface.name.clone(),
                reason: describe_rtnetlink_error(&error),
            })
    }

    /// Adds `address/prefix_len`; an identical entry already there is fine.
    pub(crate) async fn add_address(
        &self,
        interface: &Interface,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), DriverError> {
        match self
            .handle
            .address()
            .add(interface.index, address.into(), prefix_len)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(error) if errno_of(&error) == Some(libc::EEXIST) => Ok(()),
            Err(error) => Err(DriverError::Netlink {
                op: "add",
                address: format!("{address}/{prefix_len}"),
                interface: interface.name.clone(),
                reason: describe_rtnetlink_error(&error),
            }),
        }
    }

    /// Removes every entry of `address` on the interface, whatever prefix it
    /// was added with (a hand-added /32 is as much a second holder as ours).
    pub(crate) async fn remove_address(
        &self,
        interface: &Interface,
        address: Ipv4Addr,
    ) -> Result<(), DriverError> {
        for entry in self.addresses(interface, address).await? {
            let prefix_len = entry.header.prefix_len;
            // A fresh message: the dumped one carries read-only attributes
            // (cache info, flags) that have no business in a delete.
            let message = AddressMessageBuilder::<Ipv4Addr>::new()
                .index(interface.index)
                .address(address, prefix_len)
                .build();
            match self.handle.address().del(message).execute().await {
                Ok(()) => {}
                // Someone removed it between the dump and the delete.
                Err(error) if errno_of(&error) == Some(libc::EADDRNOTAVAIL) => {}
                Err(error) => {
                    return Err(DriverError::Netlink {
                        op: "delete",
                        address: format!("{address}/{prefix_len}"),
                        interface: interface.name.clone(),
                        reason: describe_rtnetlink_error(&error),
                    })
                }
            }
        }
        Ok(())
    }
}
