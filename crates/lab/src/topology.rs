//! The fixed shape of a lab: names, addresses, ports and paths.
//!
//! Everything the lab creates on the host carries the `mh-` prefix, so that
//! `down` can find leftovers of a lab that crashed before it wrote its state
//! file. The addresses live in 10.77.0.0/24 on a bridge inside the switch
//! namespace, never in the host namespace.
//!
//! Two labs can run side by side (a developer's and a test run, say): with
//! `MAILHERD_LAB_PREFIX=x` and `MAILHERD_LAB_DIR=/var/lib/x`, every
//! namespace starts with `x-` and every file lives under the other
//! directory. Their identical addresses never meet: each lab's bridge is in
//! its own switch namespace.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Root of everything the lab writes: state file, node dirs, volume image
/// (unless `MAILHERD_LAB_DIR` names another).
pub const LAB_DIR: &str = "/var/lib/mailherd-lab";
/// Environment variables that select another lab.
pub const LAB_DIR_ENV: &str = "MAILHERD_LAB_DIR";
pub const PREFIX_ENV: &str = "MAILHERD_LAB_PREFIX";
/// The state file inside [`LAB_DIR`].
pub const STATE_FILE_NAME: &str = "state.json";
/// Prefix of every namespace the lab creates (unless `MAILHERD_LAB_PREFIX`
/// names another).
pub const NAME_PREFIX: &str = "mh-";
/// The bridge inside the switch namespace.
pub const BRIDGE: &str = "br0";
/// The interface name on the node side of each veth pair.
pub const NODE_INTERFACE: &str = "eth0";
/// Prefix length of the lab subnet 10.77.0.0/24.
pub const PREFIX_LEN: u8 = 24;
pub const CLIENT_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// HAProxy's namespace (`up --haproxy`) and the mail gateway's (`up
/// --gateway`): in front of the nodes, like the client.
pub const HAPROXY_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
pub const GATEWAY_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 4);
/// The gateway's name (`myhostname`), under the lab's mail domain.
pub const GATEWAY_HOSTNAME: &str = "gw.lab.test";
/// The floating IP; the lab never configures it, the master's agent does.
pub const FLOATING_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
/// Mail nodes get .11, .12, ...; witnesses .31, .32, ...
const FIRST_MAIL_HOST: u8 = 11;
const FIRST_WITNESS_HOST: u8 = 31;
pub const PEER_PORT: u16 = 7400;
pub const API_PORT: u16 = 7401;
pub const SMTP_PORT: u16 = 25;
pub const IMAP_PORT: u16 = 143;
/// The signup service of `up --signup` (on every mail node; the floating
/// IP reaches the master's).
pub const SIGNUP_PORT: u16 = 8080;
/// Accepted `--nodes` and `--witness` ranges.
pub const MAIL_NODES: std::ops::RangeInclusive<usize> = 2..=7;
pub const WITNESSES: std::ops::RangeInclusive<usize> = 0..=2;
/// The mail domain and the one mailbox of a `--stack mail` lab.
pub const MAIL_DOMAIN: &str = "lab.test";
pub const MAIL_USER: &str = "alice@lab.test";
/// Owner of the mail store on the volume (Postfix `virtual` and Dovecot).
pub const VMAIL_UID: u32 = 5000;
/// Size of the sparse volume image.
pub const VOLUME_SIZE_BYTES: u64 = 256 * 1024 * 1024;

/// Whether a node can hold the master role or only votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Mail,
    Witness,
}

/// One planned node: everything that follows from its position in the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub name: String,
    pub kind: NodeKind,
    /// Raft id: mail nodes 1..=N, then witnesses.
    pub id: u64,
    pub namespace: String,
    pub address: Ipv4Addr,
    /// Switch-side end of the node's veth pair (inside the switch namespace).
    pub switch_veth: String,
}

impl NodePlan {
    pub fn peer(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.address, PEER_PORT))
    }
    pub fn api(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.address, API_PORT))
    }
}

/// The nodes of a lab with `mail_nodes` mail nodes and `witnesses` witnesses.
pub fn plan_nodes(mail_nodes: usize, witnesses: usize) -> Vec<NodePlan> {
    let mail = (1..=mail_nodes).map(|index| {
        (
            NodeKind::Mail,
            format!("n{index}"),
            FIRST_MAIL_HOST + index as u8 - 1,
        )
    });
    let witness = (1..=witnesses).map(|index| {
        (
            NodeKind::Witness,
            format!("w{index}"),
            FIRST_WITNESS_HOST + index as u8 - 1,
        )
    });
    mail.chain(witness)
        .enumerate()
        .map(|(position, (kind, name, host))| NodePlan {
            id: position as u64 + 1,
            namespace: format!("{}{name}", name_prefix()),
            address: Ipv4Addr::new(10, 77, 0, host),
            switch_veth: format!("v-{name}"),
            name,
            kind,
        })
        .collect()
}

/// Switch-side veth of the client namespace.
pub const CLIENT_SWITCH_VETH: &str = "v-client";

pub fn lab_dir() -> PathBuf {
    std::env::var_os(LAB_DIR_ENV)
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(LAB_DIR))
}

/// Prefix of this lab's namespaces: `mh-`, or `MAILHERD_LAB_PREFIX` and a dash.
pub fn name_prefix() -> String {
    match std::env::var(PREFIX_ENV) {
        Ok(prefix) if !prefix.is_empty() => format!("{prefix}-"),
        _ => NAME_PREFIX.to_string(),
    }
}

/// Checks the environment's lab selection before anything is made.
pub fn check_environment() -> anyhow::Result<()> {
    if let Ok(prefix) = std::env::var(PREFIX_ENV) {
        let valid = (1..=4).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            anyhow::bail!(
                "{PREFIX_ENV}={prefix:?}: must be 1 to 4 lowercase letters or digits \
                 (namespace names stay short)"
            );
        }
    }
    if let Some(dir) = std::env::var_os(LAB_DIR_ENV) {
        if !Path::new(&dir).is_absolute() {
            anyhow::bail!("{LAB_DIR_ENV}={dir:?}: must be an absolute path");
        }
    }
    Ok(())
}

/// The namespace holding the bridge. Keeping the bridge out of the host
/// namespace means the host's firewall (Docker sets FORWARD to DROP and loads
/// br_netfilter) never sees lab traffic, and nothing on the host changes.
pub fn switch_namespace() -> String {
    format!("{}sw", name_prefix())
}

/// The namespace from which clients (probes, `mail send`) reach the cluster.
pub fn client_namespace() -> String {
    format!("{}client", name_prefix())
}

/// HAProxy's namespace (`up --haproxy`).
pub fn haproxy_namespace() -> String {
    format!("{}haproxy", name_prefix())
}

/// The mail gateway's namespace (`up --gateway`).
pub fn gateway_namespace() -> String {
    format!("{}gw", name_prefix())
}

/// Switch-side veths of HAProxy's and the gateway's namespaces.
pub const HAPROXY_SWITCH_VETH: &str = "v-haproxy";
pub const GATEWAY_SWITCH_VETH: &str = "v-gw";

/// HAProxy's files (haproxy.cfg, pid file) and the gateway's (its
/// /etc/postfix, queue, log).
pub fn haproxy_dir(lab_dir: &Path) -> PathBuf {
    lab_dir.join("haproxy")
}

pub fn gateway_dir(lab_dir: &Path) -> PathBuf {
    lab_dir.join("gateway")
}

pub fn state_file() -> PathBuf {
    lab_dir().join(STATE_FILE_NAME)
}

/// The node's own directory: config, logs, data_dir, stack files.
pub fn node_dir(lab_dir: &Path, node: &str) -> PathBuf {
    lab_dir.join(node)
}

/// Where the master mounts the shared volume (in its private mount namespace).
pub fn volume_mount_point(lab_dir: &Path) -> PathBuf {
    lab_dir.join("mnt")
}

/// The control token every agent of the lab accepts (`api.token_file`).
pub fn token_file(lab_dir: &Path) -> PathBuf {
    lab_dir.join("api-token")
}

/// The lab's cluster CA and every node's certificate and key (`[tls]`).
pub fn tls_dir(lab_dir: &Path) -> PathBuf {
    lab_dir.join("tls")
}

pub fn volume_image(lab_dir: &Path) -> PathBuf {
    lab_dir.join("volume.img")
}

pub fn smtp_address() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(FLOATING_IP, SMTP_PORT))
}

pub fn imap_address() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(FLOATING_IP, IMAP_PORT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_mail_nodes_then_witnesses_with_distinct_ids_and_addresses() {
        let plan = plan_nodes(3, 2);
        let names: Vec<&str> = plan.iter().map(|node| node.name.as_str()).collect();
        assert_eq!(names, ["n1", "n2", "n3", "w1", "w2"]);
        let ids: Vec<u64> = plan.iter().map(|node| node.id).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        assert_eq!(plan[0].address, Ipv4Addr::new(10, 77, 0, 11));
        assert_eq!(plan[2].address, Ipv4Addr::new(10, 77, 0, 13));
        assert_eq!(plan[3].address, Ipv4Addr::new(10, 77, 0, 31));
        assert_eq!(plan[3].kind, NodeKind::Witness);
        assert_eq!(plan[4].namespace, "mh-w2");
        assert_eq!(plan[1].switch_veth, "v-n2");
        assert_eq!(plan[1].api().to_string(), "10.77.0.12:7401");
        assert_eq!(plan[1].peer().to_string(), "10.77.0.12:7400");
    }

    #[test]
    fn largest_lab_fits_below_the_witness_and_floating_addresses() {
        let plan = plan_nodes(*MAIL_NODES.end(), *WITNESSES.end());
        let mut addresses: Vec<Ipv4Addr> = plan.iter().map(|node| node.address).collect();
        addresses.push(CLIENT_ADDRESS);
        addresses.push(HAPROXY_ADDRESS);
        addresses.push(GATEWAY_ADDRESS);
        addresses.push(FLOATING_IP);
        let count = addresses.len();
        addresses.sort();
        addresses.dedup();
        assert_eq!(addresses.len(), count, "every address is distinct");
        // Veth names must fit IFNAMSIZ (15 characters).
        assert!(plan.iter().all(|node| node.switch_veth.len() <= 15));
    }
}
