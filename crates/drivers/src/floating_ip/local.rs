//! The `local` floating IP driver: the address lives on a local interface of
//! a segment all nodes share; taking over means adding it here and
//! announcing it with gratuitous ARP.
//!
//! Only IPv4: an IPv6 takeover would need unsolicited neighbour
//! advertisements and DAD handling, which this driver does not do, so it
//! refuses an IPv6 address at construction instead of half-working.

use std::net::{IpAddr, Ipv4Addr};

use async_trait::async_trait;
use mailherd_config::FloatingIpSection;

use super::netlink::{Interface, NetlinkSession};
use super::{garp, FloatingIp};
use crate::DriverError;

/// A floating IPv4 address on a local interface.
#[derive(Debug, Clone)]
pub struct LocalFloatingIp {
    address: Ipv4Addr,
    prefix_len: u8,
    interface: String,
}

impl LocalFloatingIp {
    pub fn new(address: Ipv4Addr, prefix_len: u8, interface: impl Into<String>) -> Self {
        LocalFloatingIp {
            address,
            prefix_len,
            interface: interface.into(),
        }
    }

    pub fn from_config(section: &FloatingIpSection) -> Result<Self, DriverError> {
        let (address, prefix_len) = parse_address_with_prefix(&section.address)?;
        let address = match address {
            IpAddr::V4(address) => address,
            IpAddr::V6(_) => {
                return Err(DriverError::Unsupported {
                    driver: "local floating ip",
                    what: format!("IPv6 address {}", section.address),
                })
            }
        };
        if section.interface.is_empty() {
            return Err(DriverError::InvalidConfig {
                section: "floating_ip",
                reason: "interface is empty".to_string(),
            });
        }
        Ok(LocalFloatingIp::new(
            address,
            prefix_len,
            section.interface.clone(),
        ))
    }

    fn open(&self) -> Result<NetlinkSession, DriverError> {
        NetlinkSession::open(&self.address_with_prefix(), &self.interface)
    }

    fn address_with_prefix(&self) -> String {
        format!("{}/{}", self.address, self.prefix_len)
    }

    async fn announce(&self, interface: &Interface) -> Result<(), DriverError> {
        let garp_error = |reason: String| DriverError::Garp {
            address: self.address.to_string(),
            interface: self.interface.clone(),
            reason,
        };
        let mac = interface
            .mac
            .ok_or_else(|| garp_error("interface has no ethernet address".to_string()))?;
        garp::announce(interface.index, mac, self.address)
            .await
            .map_err(|error| garp_error(error.to_string()))
    }
}

/// Splits `10.77.0.100/24` into address and prefix length.
pub fn parse_address_with_prefix(text: &str) -> Result<(IpAddr, u8), DriverError> {
    let invalid = |reason: String| DriverError::InvalidConfig {
        section: "floating_ip",
        reason,
    };
    let (address, prefix) = text
        .split_once('/')
        .ok_or_else(|| invalid(format!("address {text:?} has no /prefix length")))?;
    let address: IpAddr = address
        .parse()
        .map_err(|_| invalid(format!("address {text:?} is not an IP address")))?;
    let prefix_len: u8 = prefix
        .parse()
        .map_err(|_| invalid(format!("prefix length of {text:?} is not a number")))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    if prefix_len > max {
        return Err(invalid(format!("prefix length of {text:?} is over {max}")));
    }
    Ok((address, prefix_len))
}

#[async_trait]
impl FloatingIp for LocalFloatingIp {
    fn describe(&self) -> String {
        format!("local {} on {}", self.address_with_prefix(), self.interface)
    }

    async fn acquire(&self) -> Result<(), DriverError> {
        let session = self.open()?;
        let interface = session.interface(&self.interface).await?;
        let present = session
            .addresses(&interface, self.address)
            .await?
            .iter()
            .any(|entry| entry.header.prefix_len == self.prefix_len);
        if !present {
            session
                .add_address(&interface, self.address, self.prefix_len)
                .await?;
        }
        // Announce even when the address was already there: acquire runs on
        // promotion, when the neighbours most need to hear about us.
        self.announce(&interface).await
    }

    async fn refresh(&self) -> Result<(), DriverError> {
        let session = self.open()?;
        let interface = session.interface(&self.interface).await?;
        self.announce(&interface).await
    }

    async fn release(&self) -> Result<(), DriverError> {
        let session = self.open()?;
        let interface = match session.interface(&self.interface).await {
            Ok(interface) => interface,
            // No interface, no address on it: nothing to release.
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailherd_config::FloatingIpDriver;

    fn section(address: &str, interface: &str) -> FloatingIpSection {
        FloatingIpSection {
            driver: FloatingIpDriver::Local,
            address: address.to_string(),
            interface: interface.to_string(),
            garp_refresh_ms: 5_000,
            floating_ip_id: None,
        }
    }

    #[test]
    fn describe_names_address_prefix_and_interface() {
        let driver = LocalFloatingIp::from_config(&section("10.77.0.100/24", "eth0")).unwrap();
        assert_eq!(driver.describe(), "local 10.77.0.100/24 on eth0");
    }

    #[test]
    fn config_errors_name_what_is_wrong() {
        for (address, interface, expected) in [
            ("10.77.0.100", "eth0", "no /prefix"),
            ("10.77.0/24", "eth0", "not an IP address"),
            ("10.77.0.100/x", "eth0", "not a number"),
            ("10.77.0.100/33", "eth0", "over 32"),
            ("10.77.0.100/24", "", "interface is empty"),
            ("2001:db8::1/64", "eth0", "does not support IPv6"),
        ] {
            let error = LocalFloatingIp::from_config(&section(address, interface)).unwrap_err();
            assert!(
                error.to_string().contains(expected),
                "{address} {interface:?}: {error}"
            );
        }
    }
}
