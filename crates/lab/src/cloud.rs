//! `--cloud hetzner-sim`: the lab's Hetzner Cloud.
//!
//! A `router` namespace joins the bridge (10.77.0.1) and plays Hetzner's
//! network: it forwards the floating IP to whichever server the simulator
//! says it is assigned to (`ip route replace FIP/32 via NODE`), and the
//! client namespace reaches the floating IP through it (a /32 route via
//! the router), as an Internet client reaches a Hetzner floating IP. The
//! simulator of the API (`mailherd-hcloud-sim`, as a library) runs in the
//! router namespace as `mailherd-lab hcloud-sim`, started detached like a
//! node, with its own tokio runtime; the agents reach it on the bridge.
//!
//! Its event hook programs the world into the lab before an action reports
//! success: the route above for a floating IP; for a volume, the lab's loop
//! device appears as a device node at `linux_device` only inside the mount
//! namespace of the server it is attached to (a private tmpfs on the device
//! directory in that node, made on first use) and disappears from the
//! others. A node that is powered off has no mount namespace: nothing to
//! remove there.
//!
//! The world is written back to `cloud/world.json` after every change, so
//! tests and operators can read what the API shows.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::host::ip;
use crate::state::{LabState, NodeState};

/// The router's address on the bridge; the simulator listens there.
pub const ROUTER_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// Switch-side veth of the router namespace.
pub const ROUTER_SWITCH_VETH: &str = "v-router";
pub const API_PORT: u16 = 8080;
pub const FLOATING_IP_ID: u64 = 41;
pub const VOLUME_ID: u64 = 7;
/// Every simulated server and volume lives here.
const LOCATION: &str = "fsn1";
/// Simulated server ids: 100 + the node's Raft id, so the two never get
/// mistaken for each other.
const SERVER_ID_BASE: u64 = 100;
/// How long a simulated action runs (± the jitter): Hetzner's take
/// seconds, the lab's are short so a failover stays quick to watch.
const ACTION_MS: u64 = 200;
const JITTER_MS: u64 = 100;
/// The agents' `[hetzner]` timing.
pub const AGENT_ACTION_TIMEOUT_MS: u64 = 10_000;
pub const AGENT_POLL_INTERVAL_MS: u64 = 50;
/// How long `up` waits for the simulator to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What the lab's cloud is, kept in the lab's state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudState {
    pub router_namespace: String,
    pub router_address: Ipv4Addr,
    pub router_switch_veth: String,
    /// `http://10.77.0.1:8080/v1`.
    pub api_url: String,
    /// The bearer token the simulator accepts (a lab secret, shown by
    /// `status --json` as design §7 asks).
    pub token: String,
    pub token_file: PathBuf,
    pub floating_ip_id: u64,
    pub volume_ids: Vec<u64>,
    /// Node name → simulated server id.
    pub servers: BTreeMap<String, u64>,
    /// Where the attached volume's device node appears inside a node.
    pub linux_device: PathBuf,
    /// The world as the API shows it, rewritten after every change.
    pub world_file: PathBuf,
    pub log: PathBuf,
}

impl CloudState {
    pub fn plan(lab_dir: &Path, nodes: &[NodeState], token: String) -> CloudState {
        let dir = cloud_dir(lab_dir);
        CloudState {
            router_namespace: router_namespace(),
            router_address: ROUTER_ADDRESS,
            router_switch_veth: ROUTER_SWITCH_VETH.to_string(),
            api_url: format!("http://{ROUTER_ADDRESS}:{API_PORT}/v1"),
            token,
            token_file: dir.join("token"),
            floating_ip_id: FLOATING_IP_ID,
            volume_ids: vec![VOLUME_ID],
            servers: nodes
                .iter()
                .filter(|node| node.is_mail())
                .map(|node| (node.name.clone(), SERVER_ID_BASE + node.id))
                .collect(),
            linux_device: dir.join("dev").join(format!("scsi-0HC_Volume_{VOLUME_ID}")),
            world_file: dir.join("world.json"),
            log: dir.join("hcloud-sim.log"),
        }
    }

    pub fn server_of(&self, node: &str) -> Option<u64> {
        self.servers.get(node).copied()
    }

    fn node_of_server(&self, server: u64) -> Option<&str> {
        self.servers
            .iter()
            .find(|(_, id)| **id == server)
            .map(|(name, _)| name.as_str())
    }

    fn listen(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.router_address, API_PORT))
    }
}

/// The router's namespace: `<prefix>router`.
pub fn router_namespace() -> String {
    format!("{}router", crate::topology::name_prefix())
}

pub fn cloud_dir(lab_dir: &Path) -> PathBuf {
    lab_dir.join("cloud")
}

/// Creates the router on the bridge, makes it forward (without redirects:
/// a client told to go straight to the old server would keep doing so
/// after a failover), and routes the client's floating IP through it.
pub fn create_router(state: &LabState, cloud: &CloudState) -> Result<()> {
    crate::netns::create_attached(
        &cloud.router_namespace,
        &cloud.router_switch_veth,
        cloud.router_address,
    )
    .context("cannot create the router")?;
    for setting in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.send_redirects=0",
        "net.ipv4.conf.default.send_redirects=0",
        "net.ipv4.conf.eth0.send_redirects=0",
    ] {
        sysctl(&cloud.router_namespace, setting)?;
    }
    sysctl(
        &state.client.namespace,
        "net.ipv4.conf.all.accept_redirects=0",
    )?;
    sysctl(
        &state.client.namespace,
        "net.ipv4.conf.eth0.accept_redirects=0",
    )?;
    ip(&[
        "-n",
        &state.client.namespace,
        "route",
        "replace",
        &format!("{}/32", state.floating_ip),
        "via",
        &cloud.router_address.to_string(),
    ])
    .context("cannot route the floating IP through the router")?;
    Ok(())
}

fn sysctl(namespace: &str, setting: &str) -> Result<()> {
    crate::host::run(
        "ip",
        &["netns", "exec", namespace, "sysctl", "-q", "-w", setting],
    )
    .with_context(|| format!("cannot set {setting} in {namespace}"))?;
    Ok(())
}

/// Writes the token (0600) and the initial world: every mail node a server,
/// the floating IP and the volume assigned to none.
pub fn write_files(state: &LabState, cloud: &CloudState) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(cloud_dir(&state.lab_dir))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&cloud.token_file)
        .with_context(|| format!("cannot create {}", cloud.token_file.display()))?;
    std::io::Write::write_all(&mut file, cloud.token.as_bytes())?;
    let world = mailherd_hcloud_sim::World {
        servers: state
            .nodes
            .iter()
            .filter_map(|node| {
                Some(mailherd_hcloud_sim::WorldServer {
                    id: cloud.server_of(&node.name)?,
                    name: node.name.clone(),
                    location: LOCATION.to_string(),
                    status: "running".to_string(),
                    ipv4: Some(node.address.to_string()),
                })
            })
            .collect(),
        floating_ips: vec![mailherd_hcloud_sim::WorldFloatingIp {
            id: cloud.floating_ip_id,
            ip: state.floating_ip.to_string(),
            name: "mail".to_string(),
            description: Some("the lab's floating IP".to_string()),
            home_location: LOCATION.to_string(),
            server: None,
        }],
        volumes: vec![mailherd_hcloud_sim::WorldVolume {
            id: VOLUME_ID,
            name: crate::agent_config::VOLUME_NAME.to_string(),
            location: LOCATION.to_string(),
            size: 10,
            server: None,
            linux_device: cloud.linux_device.display().to_string(),
            format: Some("ext4".to_string()),
        }],
    };
    let json = serde_json::to_string_pretty(&world).expect("a world serialises");
    std::fs::write(&cloud.world_file, json + "\n")
        .with_context(|| format!("cannot write {}", cloud.world_file.display()))?;
    Ok(())
}

/// Starts `mailherd-lab hcloud-sim` in the router namespace, detached, and
/// waits until it accepts connections.
pub fn start_simulator(state: &LabState, cloud: &CloudState) -> Result<()> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cloud.log)
        .with_context(|| format!("cannot open {}", cloud.log.display()))?;
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &cloud.router_namespace])
        .arg(&state.lab_bin)
        .arg("hcloud-sim")
        .arg("--state")
        .arg(state.lab_dir.join(crate::topology::STATE_FILE_NAME))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own session, like a node: it outlives `up` and no terminal
    // signal reaches it; `down` kills it with the router's processes.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .context("cannot start the hcloud simulator")?;
    let deadline = Instant::now() + START_TIMEOUT;
    let listen = cloud.listen();
    loop {
        let up = crate::netns::run_in(&cloud.router_namespace, || {
            Ok(std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok())
        })?;
        if up {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the hcloud simulator exited ({status}); {} says:\n{}",
                cloud.log.display(),
                crate::host::tail(&cloud.log, 10)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the hcloud simulator did not answer on {listen} within {START_TIMEOUT:?}; {} says:\n{}",
                cloud.log.display(),
                crate::host::tail(&cloud.log, 10)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `mailherd-lab hcloud-sim --state FILE`: serves the simulated API in the
/// router namespace until SIGTERM, programming the lab on every change.
pub fn run_simulator(state_file: &Path) -> Result<()> {
    let state = LabState::load(state_file)?;
    let cloud = state
        .hetzner_sim
        .clone()
        .context("the lab has no hetzner-sim cloud")?;
    let world = mailherd_hcloud_sim::World::from_json_file(&cloud.world_file)?;
    let config = mailherd_hcloud_sim::SimConfig {
        action_duration: Duration::from_millis(ACTION_MS),
        jitter: Duration::from_millis(JITTER_MS),
        state_file: Some(cloud.world_file.clone()),
        ..mailherd_hcloud_sim::SimConfig::new(cloud.token.clone())
    };
    let device = state.loop_device()?.to_path_buf();
    let programmer = Arc::new(Programmer {
        state,
        cloud: cloud.clone(),
        device,
    });
    let hook = {
        let programmer = Arc::clone(&programmer);
        Arc::new(move |event: mailherd_hcloud_sim::SimEvent| programmer.apply(&event))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cloud.listen())
            .await
            .with_context(|| format!("cannot listen on {}", cloud.listen()))?;
        log(&format!(
            "serving {} (world in {})",
            cloud.api_url,
            cloud.world_file.display()
        ));
        let simulator = mailherd_hcloud_sim::Simulator::new(config, world)?.on_event(hook);
        simulator
            .run(listener, async {
                let mut terminate =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            })
            .await?;
        anyhow::Ok(())
    })
}

fn log(message: &str) {
    eprintln!("{} hcloud-sim: {message}", crate::probe::wall_clock());
}

/// Makes the lab match the simulated world (the event hook).
struct Programmer {
    state: LabState,
    cloud: CloudState,
    /// The lab's loop device: the volume's contents.
    device: PathBuf,
}

impl Programmer {
    /// Panics on failure: the simulator then fails the action, which is
    /// what a real cloud does when it cannot make a change.
    fn apply(&self, event: &mailherd_hcloud_sim::SimEvent) {
        let result = match event {
            mailherd_hcloud_sim::SimEvent::FloatingIpAssigned { ip, server, .. } => {
                self.route_floating_ip(ip, *server)
            }
            mailherd_hcloud_sim::SimEvent::VolumeAttached {
                server,
                linux_device,
                ..
            } => self.expose_volume(Path::new(linux_device), *server),
        };
        match result {
            Ok(()) => log(&format!("applied {event:?}")),
            Err(error) => {
                log(&format!("cannot apply {event:?}: {error:#}"));
                panic!("cannot apply {event:?}: {error:#}");
            }
        }
    }

    fn node_of(&self, server: u64) -> Result<&NodeState> {
        let name = self
            .cloud
            .node_of_server(server)
            .with_context(|| format!("no lab node is server {server}"))?;
        self.state.node(name)
    }

    /// The router sends the floating IP to the server's lab address (this
    /// process runs in the router namespace).
    fn route_floating_ip(&self, ip_address: &str, server: Option<u64>) -> Result<()> {
        let destination = format!("{ip_address}/32");
        match server {
            Some(server) => {
                let node = self.node_of(server)?;
                ip(&[
                    "route",
                    "replace",
                    &destination,
                    "via",
                    &node.address.to_string(),
                    "dev",
                    crate::topology::NODE_INTERFACE,
                ])?;
            }
            None => {
                // Unassigned: routed nowhere.
                ip(&["route", "replace", "unreachable", &destination])?;
            }
        }
        Ok(())
    }

    /// The device node at `linux_device` in the attached server's mount
    /// namespace only.
    fn expose_volume(&self, linux_device: &Path, server: Option<u64>) -> Result<()> {
        let attached_node = server.map(|server| self.node_of(server)).transpose()?;
        for node in self.state.nodes.iter().filter(|node| node.is_mail()) {
            let Some(init) = crate::node::init_pid(&node.namespace)? else {
                continue; // powered off: its mount namespace is gone
            };
            let script = if attached_node.is_some_and(|attached| attached.name == node.name) {
                let metadata = std::fs::metadata(&self.device)
                    .with_context(|| format!("cannot stat {}", self.device.display()))?;
                let rdev = metadata.rdev();
                let directory = linux_device
                    .parent()
                    .context("linux_device has no directory")?;
                format!(
                    "mkdir -p '{dir}' && {{ mountpoint -q '{dir}' || mount -t tmpfs -o mode=0755 hcloud-dev '{dir}'; }} \
                     && rm -f '{dev}' && mknod '{dev}' b {major} {minor}",
                    dir = directory.display(),
                    dev = linux_device.display(),
                    major = nix::sys::stat::major(rdev),
                    minor = nix::sys::stat::minor(rdev),
                )
            } else {
                // Only where the node has its own device directory: the
                // host's must stay empty.
                let directory = linux_device
                    .parent()
                    .context("linux_device has no directory")?;
                format!(
                    "if mountpoint -q '{dir}'; then rm -f '{dev}'; fi",
                    dir = directory.display(),
                    dev = linux_device.display(),
                )
            };
            crate::host::run(
                "nsenter",
                &[
                    "-t",
                    &init.to_string(),
                    "-m",
                    "--",
                    "/bin/sh",
                    "-c",
                    &script,
                ],
            )
            .with_context(|| format!("cannot change the volume's device on {}", node.name))?;
        }
        Ok(())
    }
}
