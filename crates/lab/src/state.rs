//! The lab's state file, `/var/lib/mailherd-lab/state.json`.
//!
//! `up` writes it before it creates anything, then again as it learns more
//! (the loop device), so that `down` after a crash of `up` still knows what
//! to remove. `fail` and `heal` record each node's faults in it; `status`
//! reads everything it prints from it plus the agents' answers.
//!
//! Writes go to a temporary file renamed over the old one, so a crash never
//! leaves a half-written state file behind.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::topology::{NodeKind, NodePlan};

/// Which mail stack runs on the mail nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Stack {
    /// A tiny SMTP-like banner server: fast and fair for timing failovers.
    Banner,
    /// Real Postfix and Dovecot with queue and mail store on the shared volume.
    Mail,
}

impl Stack {
    pub fn name(self) -> &'static str {
        match self {
            Stack::Banner => "banner",
            Stack::Mail => "mail",
        }
    }
}

/// Where the mail nodes keep the mail data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// One ext4 loop device every mail node sees (a SAN volume); only the
    /// master mounts it.
    #[default]
    Shared,
    /// Every mail node has its own btrfs loop device; the master ships
    /// snapshots to the others (`driver = "btrfs"`): a failover loses what
    /// was written after the last shipped snapshot.
    Btrfs,
}

impl Storage {
    pub fn name(self) -> &'static str {
        match self {
            Storage::Shared => "shared",
            Storage::Btrfs => "btrfs",
        }
    }
}

/// What runs on the mail nodes, moves the floating IP and starts the stack:
/// mailherd, or stock keepalived for the benchmark's comparison.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Manager {
    /// The mailherd agent on every node (Raft, leases, pipelines).
    #[default]
    Mailherd,
    /// keepalived (Debian's) at its default timing: VRRPv2, adverts every
    /// second, the track script every second with fall 2 and rise 2.
    Keepalived,
    /// keepalived at the fastest timing that keepalived 2.2.7 accepts and
    /// that stays stable: VRRPv3 with 50 ms adverts, the track script every
    /// second (its minimum) with fall 1 and rise 1.
    KeepalivedTuned,
}

impl Manager {
    /// The `--manager` value.
    pub fn name(self) -> &'static str {
        match self {
            Manager::Mailherd => "mailherd",
            Manager::Keepalived => "keepalived",
            Manager::KeepalivedTuned => "keepalived-tuned",
        }
    }

    /// The software, whatever its timing: `mailherd` or `keepalived`.
    pub fn software(self) -> &'static str {
        match self {
            Manager::Mailherd => "mailherd",
            Manager::Keepalived | Manager::KeepalivedTuned => "keepalived",
        }
    }

    /// The keepalived timing, for the keepalived managers.
    pub fn keepalived_timing(self) -> Option<&'static crate::keepalived::Timing> {
        match self {
            Manager::Mailherd => None,
            Manager::Keepalived => Some(&crate::keepalived::STOCK),
            Manager::KeepalivedTuned => Some(&crate::keepalived::TUNED),
        }
    }

    pub fn is_keepalived(self) -> bool {
        self != Manager::Mailherd
    }

    /// What messages call the node's manager process.
    pub fn process_name(self) -> &'static str {
        match self {
            Manager::Mailherd => "agent",
            Manager::Keepalived | Manager::KeepalivedTuned => "keepalived",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    /// Format version of this file.
    pub version: u32,
    pub lab_dir: PathBuf,
    pub stack: Stack,
    /// What runs on the mail nodes (state files of older labs: mailherd).
    #[serde(default)]
    pub manager: Manager,
    /// `local` or `hetzner-sim`.
    pub cloud: String,
    /// The simulated Hetzner Cloud (`--cloud hetzner-sim` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hetzner_sim: Option<crate::cloud::CloudState>,
    pub floating_ip: Ipv4Addr,
    pub prefix_len: u8,
    pub switch_namespace: String,
    pub bridge: String,
    pub client: ClientState,
    /// HAProxy in front of the nodes (`up --haproxy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub haproxy: Option<ClientState>,
    /// A Postfix mail gateway relaying to the floating IP (`up --gateway`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<ClientState>,
    pub volume: VolumeState,
    /// Shared volume or per-node btrfs copies (state files of older labs:
    /// shared).
    #[serde(default)]
    pub storage: Storage,
    /// The agent binary every node runs (kept so `heal` boots the same one):
    /// `mailherd`, or `keepalived` with a keepalived manager.
    pub agent_bin: PathBuf,
    /// This lab binary (node-init and the banner server are subcommands of it).
    pub lab_bin: PathBuf,
    /// The lab mailbox (`--stack mail` only).
    pub mail: Option<MailAccount>,
    /// `up --signup`: every mail node runs `mailherd signup` (dovecot
    /// backend) beside its agent.
    #[serde(default)]
    pub signup: bool,
    /// `up --mariadb`: a mariadbd of its own on every mail node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mariadb: Option<crate::mariadb::MariadbLab>,
    pub nodes: Vec<NodeState>,
}

/// A namespace on the bridge that is not a node: the client, HAProxy, the
/// mail gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientState {
    pub namespace: String,
    pub address: Ipv4Addr,
    pub switch_veth: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeState {
    pub image: PathBuf,
    /// Set once `losetup` attached the image; `None` while `up` is before that.
    pub loop_device: Option<PathBuf>,
    pub mount_point: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailAccount {
    pub user: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub kind: NodeKind,
    pub id: u64,
    pub namespace: String,
    pub address: Ipv4Addr,
    pub switch_veth: String,
    pub dir: PathBuf,
    /// The agent's config file (`keepalived.conf` with a keepalived manager).
    pub config: PathBuf,
    pub api: SocketAddr,
    pub peer: SocketAddr,
    /// Set by `fail --mode power`, cleared by `heal`.
    pub powered_off: bool,
    /// Set by `fail --mode partition`, cleared by `heal`.
    pub partitioned: bool,
    /// Set by `fail --mode partition --from ...`: the peers whose traffic
    /// this node drops (only what arrives, with `one_way`).
    #[serde(default)]
    pub cut_from: Vec<String>,
    #[serde(default)]
    pub cut_one_way: bool,
    /// Set by `fail --mode agent-freeze`: the stopped agent's host PID.
    #[serde(default)]
    pub frozen_agent: Option<i32>,
    /// Added by `add-node` to the running cluster: its agent starts with
    /// `join = true`.
    #[serde(default)]
    pub joined: bool,
    /// `--storage btrfs`: the loop device of this node's own btrfs disk,
    /// mounted by node-init on [`NodeState::pool_fs`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_device: Option<PathBuf>,
}

impl NodeState {
    pub fn from_plan(plan: &NodePlan, lab_dir: &Path) -> NodeState {
        let dir = crate::topology::node_dir(lab_dir, &plan.name);
        NodeState {
            name: plan.name.clone(),
            kind: plan.kind,
            id: plan.id,
            namespace: plan.namespace.clone(),
            address: plan.address,
            switch_veth: plan.switch_veth.clone(),
            config: dir.join("agent.toml"),
            dir,
            api: plan.api(),
            peer: plan.peer(),
            powered_off: false,
            partitioned: false,
            cut_from: Vec::new(),
            cut_one_way: false,
            frozen_agent: None,
            joined: false,
            pool_device: None,
        }
    }

    /// `--storage btrfs`: the image of this node's own disk.
    pub fn pool_image(&self) -> PathBuf {
        self.dir.join("pool.img")
    }

    /// Where node-init mounts the node's own disk (in the node's mount
    /// namespace only).
    pub fn pool_fs(&self) -> PathBuf {
        self.dir.join("pool-fs")
    }

    /// The agent's replication pool on that disk.
    pub fn pool(&self) -> PathBuf {
        self.pool_fs().join("pool")
    }

    pub fn is_mail(&self) -> bool {
        self.kind == NodeKind::Mail
    }

    /// The node-init log (node boot, agent restarts).
    pub fn node_log(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// The agent's stdout and stderr (keepalived's, with a keepalived manager).
    pub fn agent_log(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// A tmpfs that node-init mounts per boot, like `/run`: pid files and
    /// sockets of the node's daemons vanish with a power failure.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
}

pub const STATE_VERSION: u32 = 1;

impl LabState {
    pub fn node(&self, name: &str) -> Result<&NodeState> {
        self.nodes
            .iter()
            .find(|node| node.name == name)
            .ok_or_else(|| self.unknown_node(name))
    }

    pub fn node_mut(&mut self, name: &str) -> Result<&mut NodeState> {
        let error = self.unknown_node(name);
        self.nodes
            .iter_mut()
            .find(|node| node.name == name)
            .ok_or(error)
    }

    fn unknown_node(&self, name: &str) -> anyhow::Error {
        let known: Vec<&str> = self.nodes.iter().map(|node| node.name.as_str()).collect();
        anyhow::anyhow!(
            "unknown node {name:?}; the lab's nodes are {}",
            known.join(", ")
        )
    }

    /// The device the agents mount; only missing in a state `up` left early.
    pub fn loop_device(&self) -> Result<&Path> {
        self.volume
            .loop_device
            .as_deref()
            .context("the state file has no loop device (the lab's `up` did not get that far)")
    }

    /// Every namespace of this lab (switch, client, HAProxy, gateway,
    /// router, nodes).
    pub fn namespaces(&self) -> Vec<String> {
        let mut names = vec![self.switch_namespace.clone(), self.client.namespace.clone()];
        names.extend(
            [&self.haproxy, &self.gateway]
                .into_iter()
                .flatten()
                .map(|front| front.namespace.clone()),
        );
        names.extend(
            self.hetzner_sim
                .iter()
                .map(|cloud| cloud.router_namespace.clone()),
        );
        names.extend(self.nodes.iter().map(|node| node.namespace.clone()));
        names
    }

    pub fn load(path: &Path) -> Result<LabState> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a lab state file", path.display()))
    }

    /// Loads the state of the lab that is up, with the message every command
    /// but `up` and `down` gives when there is none.
    pub fn load_current() -> Result<LabState> {
        let path = crate::topology::state_file();
        if !path.exists() {
            anyhow::bail!(
                "no lab is up ({} does not exist); start one with `mailherd-lab up`",
                path.display()
            );
        }
        LabState::load(&path)
    }

    pub fn save(&self) -> Result<()> {
        let path = self.lab_dir.join(crate::topology::STATE_FILE_NAME);
        let temporary = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).expect("the lab state always serialises");
        std::fs::write(&temporary, text + "\n")
            .with_context(|| format!("cannot write {}", temporary.display()))?;
        std::fs::rename(&temporary, &path).with_context(|| {
            format!(
                "cannot rename {} to {}",
                temporary.display(),
                path.display()
            )
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::topology::plan_nodes;

    /// A mail lab of n1, n2 and w1 with loop device /dev/loop3.
    pub fn sample(lab_dir: &Path) -> LabState {
        LabState {
            version: STATE_VERSION,
            lab_dir: lab_dir.to_path_buf(),
            stack: Stack::Mail,
            manager: Manager::Mailherd,
            cloud: "local".into(),
            hetzner_sim: None,
            floating_ip: crate::topology::FLOATING_IP,
            prefix_len: 24,
            switch_namespace: "mh-sw".into(),
            bridge: "br0".into(),
            client: ClientState {
                namespace: "mh-client".into(),
                address: crate::topology::CLIENT_ADDRESS,
                switch_veth: "v-client".into(),
            },
            haproxy: None,
            gateway: None,
            storage: Storage::Shared,
            volume: VolumeState {
                image: lab_dir.join("volume.img"),
                loop_device: Some("/dev/loop3".into()),
                mount_point: lab_dir.join("mnt"),
            },
            agent_bin: "/x/mailherd".into(),
            lab_bin: "/x/mailherd-lab".into(),
            mail: Some(MailAccount {
                user: "alice@lab.test".into(),
                password: "pw".into(),
            }),
            signup: false,
            mariadb: None,
            nodes: plan_nodes(2, 1)
                .iter()
                .map(|plan| NodeState::from_plan(plan, lab_dir))
                .collect(),
        }
    }

    #[test]
    fn saves_and_loads_the_same_state() {
        let dir =
            std::env::temp_dir().join(format!("mailherd-lab-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let state = sample(&dir);
        state.save().unwrap();
        let loaded = LabState::load(&dir.join("state.json")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(loaded, state);
    }

    #[test]
    fn unknown_node_error_lists_the_known_nodes() {
        let state = sample(Path::new("/nonexistent"));
        let message = state.node("n9").unwrap_err().to_string();
        assert!(message.contains("\"n9\""), "{message}");
        assert!(message.contains("n1, n2, w1"), "{message}");
        assert_eq!(
            state.node("w1").unwrap().address,
            std::net::Ipv4Addr::new(10, 77, 0, 31)
        );
    }
}
