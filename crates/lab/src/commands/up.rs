//! `up`: build a lab and return once a master serves the floating IP.
//!
//! Order: refuse if a lab (or its leftovers) exists; check the host; write
//! the state file first (so `down` after a crash knows the lab); network;
//! volume; the cluster CA and node certificates (mTLS between agents); node
//! files and configs; prepare the volume; boot every node; wait
//! until the floating IP answers with an SMTP banner from the client
//! namespace. Any failure after the checks tears everything down again
//! (the same code as `down`), unless `--keep-on-failure` asks to keep it
//! for a post-mortem.
//!
//! With `--haproxy` and `--gateway`, HAProxy and a Postfix mail gateway
//! start in namespaces of their own once a master serves (see
//! [`crate::front`]); `up` returns when both greet clients too.
//!
//! With `--manager keepalived|keepalived-tuned` the nodes run keepalived
//! (see [`crate::keepalived`]): no certificates, no agent configs, and
//! each node's keepalived.conf checked by `keepalived -t` before any node
//! boots.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::distr::{Alphanumeric, SampleString};

use crate::state::{
    ClientState, LabState, MailAccount, Manager, NodeState, Stack, Storage, VolumeState,
    STATE_VERSION,
};
use crate::topology::{self, NodeKind};

/// Where the lab runs its "cloud".
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cloud {
    /// The nodes share a segment: the `local` drivers (address + GARP, a
    /// loop device every node sees).
    Local,
    /// A simulated Hetzner Cloud (see `crate::cloud`): the `hetzner`
    /// drivers, a router that routes the floating IP to its server, the
    /// volume's device only on the server it is attached to.
    HetznerSim,
}

pub struct UpOptions {
    pub nodes: usize,
    pub witnesses: usize,
    pub stack: Stack,
    pub cloud: Cloud,
    pub manager: Manager,
    /// `--agent-bin` as given on the command line.
    pub agent_bin: Option<PathBuf>,
    pub wait: Duration,
    pub keep_on_failure: bool,
    /// HAProxy in front of the nodes.
    pub haproxy: bool,
    /// A Postfix mail gateway relaying to the floating IP.
    pub gateway: bool,
    /// Run `mailherd signup` on every mail node.
    pub signup: bool,
    /// Shared volume or per-node btrfs copies.
    pub storage: Storage,
    /// A mariadbd of its own on every mail node (`crate::mariadb`).
    pub mariadb: bool,
}

pub fn run(options: UpOptions) -> Result<()> {
    if !topology::MAIL_NODES.contains(&options.nodes) {
        bail!(
            "--nodes must be between {} and {}, not {}",
            topology::MAIL_NODES.start(),
            topology::MAIL_NODES.end(),
            options.nodes
        );
    }
    if !topology::WITNESSES.contains(&options.witnesses) {
        bail!(
            "--witness must be between {} and {}, not {}",
            topology::WITNESSES.start(),
            topology::WITNESSES.end(),
            options.witnesses
        );
    }
    refuse_unsupported_combinations(&options)?;
    refuse_if_up()?;
    crate::host::preflight(options.stack, options.manager)?;
    if options.haproxy {
        crate::host::preflight_haproxy()?;
    }
    if options.mariadb {
        crate::mariadb::preflight()?;
    }
    let agent_bin = if options.manager.is_keepalived() {
        crate::host::resolve_keepalived_bin()?
    } else {
        let from_environment = std::env::var_os("MAILHERD_BIN")
            .filter(|path| !path.is_empty())
            .map(PathBuf::from);
        crate::host::resolve_agent_bin(
            options.agent_bin.as_deref().or(from_environment.as_deref()),
        )?
    };
    let lab_bin = crate::host::lab_bin()?;

    let state = plan(&options, agent_bin, lab_bin);
    validate_configs(&state)?;

    let started = Instant::now();
    match build(state, options.wait) {
        Ok(state) => {
            println!("lab up in {:.1} s; state in {}", started.elapsed().as_secs_f64(), topology::state_file().display());
            crate::commands::status::print_table(&state, &crate::commands::status::query_all(&state));
            Ok(())
        }
        Err(error) if options.keep_on_failure => {
            Err(error.context("up failed; the lab is kept (--keep-on-failure): inspect it, then run `mailherd-lab down`"))
        }
        Err(error) => {
            eprintln!("up failed; tearing down what it made");
            if let Err(teardown_error) = crate::commands::down::teardown() {
                eprintln!("error: {teardown_error:#}");
            }
            Err(error)
        }
    }
}

/// What a keepalived lab cannot do, refused before anything is made.
fn refuse_unsupported_combinations(options: &UpOptions) -> Result<()> {
    if options.gateway && options.stack != Stack::Mail {
        bail!(
            "--gateway needs --stack mail: the gateway relays mail, which the banner stack \
             does not take"
        );
    }
    if options.signup && (options.stack != Stack::Mail || options.manager.is_keepalived()) {
        bail!(
            "--signup needs --stack mail and --manager mailherd: the signup service makes \
             Dovecot accounts on the shared volume of a mailherd cluster"
        );
    }
    if options.storage == Storage::Btrfs && options.cloud != Cloud::Local {
        bail!(
            "--storage btrfs does not go with --cloud hetzner-sim: the simulated cloud moves \
             one shared volume; replicated btrfs copies need no cloud volume, use --cloud local"
        );
    }
    if options.mariadb && options.manager.is_keepalived() {
        bail!(
            "--mariadb does not go with --manager {}: keepalived does not make the master's \
             database writable nor repoint the replicas (the agent's promotion does); use \
             --manager mailherd",
            options.manager.name()
        );
    }
    if !options.manager.is_keepalived() {
        return Ok(());
    }
    let manager = options.manager.name();
    if options.storage != Storage::Shared {
        bail!(
            "--storage {} does not go with --manager {manager}: keepalived does not replicate \
             storage; use --manager mailherd",
            options.storage.name()
        );
    }
    if options.haproxy || options.gateway {
        bail!(
            "--haproxy and --gateway do not go with --manager {manager}: they are configured \
             by `mailherd render` and HAProxy checks the agents' /master; use --manager mailherd"
        );
    }
    if options.witnesses > 0 {
        bail!(
            "--witness does not go with --manager {manager}: keepalived has no witnesses \
             (VRRP elects among the mail nodes alone); drop --witness or use --manager mailherd"
        );
    }
    if options.stack != Stack::Banner {
        bail!(
            "--stack {} does not go with --manager {manager}: the keepalived lab runs the \
             banner stack only (its scripts do not move the shared volume); use --stack banner",
            options.stack.name()
        );
    }
    if options.cloud != Cloud::Local {
        bail!(
            "--cloud hetzner-sim does not go with --manager {manager}: stock keepalived moves \
             the address on a shared segment only, not through the Hetzner API; use --cloud local"
        );
    }
    if options.agent_bin.is_some() {
        bail!(
            "--agent-bin names the mailherd agent; --manager {manager} runs `keepalived` \
             from PATH (Debian package keepalived)"
        );
    }
    Ok(())
}

/// A lab is up when its state file exists; leftovers of a crashed lab (its
/// namespaces, its directory) also block a new one until `down` clears them.
fn refuse_if_up() -> Result<()> {
    let state_file = topology::state_file();
    if state_file.exists() {
        bail!(
            "lab already up (state in {}); run `mailherd-lab down` first",
            state_file.display()
        );
    }
    let namespaces = crate::netns::list_lab_namespaces()?;
    if !namespaces.is_empty() {
        bail!(
            "leftovers of an earlier lab exist (namespaces {}); run `mailherd-lab down` first",
            namespaces.join(", ")
        );
    }
    if topology::lab_dir().exists() {
        bail!(
            "leftovers of an earlier lab exist ({}); run `mailherd-lab down` first",
            topology::lab_dir().display()
        );
    }
    Ok(())
}

fn plan(options: &UpOptions, agent_bin: PathBuf, lab_bin: PathBuf) -> LabState {
    let lab_dir = topology::lab_dir();
    let mail = (options.stack == Stack::Mail).then(|| MailAccount {
        user: topology::MAIL_USER.to_string(),
        password: Alphanumeric.sample_string(&mut rand::rng(), 16),
    });
    let mut nodes: Vec<NodeState> = topology::plan_nodes(options.nodes, options.witnesses)
        .iter()
        .map(|plan| NodeState::from_plan(plan, &lab_dir))
        .collect();
    if options.manager.is_keepalived() {
        for node in &mut nodes {
            node.config = crate::keepalived::config_path(&node.dir);
        }
    }
    let (haproxy, gateway) = crate::front::plan(options.haproxy, options.gateway);
    LabState {
        version: STATE_VERSION,
        stack: options.stack,
        manager: options.manager,
        cloud: match options.cloud {
            Cloud::Local => "local",
            Cloud::HetznerSim => "hetzner-sim",
        }
        .to_string(),
        hetzner_sim: (options.cloud == Cloud::HetznerSim).then(|| {
            let nodes: Vec<NodeState> = topology::plan_nodes(options.nodes, options.witnesses)
                .iter()
                .map(|plan| NodeState::from_plan(plan, &lab_dir))
                .collect();
            crate::cloud::CloudState::plan(
                &lab_dir,
                &nodes,
                Alphanumeric.sample_string(&mut rand::rng(), 32),
            )
        }),
        floating_ip: topology::FLOATING_IP,
        prefix_len: topology::PREFIX_LEN,
        switch_namespace: topology::switch_namespace(),
        bridge: topology::BRIDGE.to_string(),
        client: ClientState {
            namespace: topology::client_namespace(),
            address: topology::CLIENT_ADDRESS,
            switch_veth: topology::CLIENT_SWITCH_VETH.to_string(),
        },
        haproxy,
        gateway,
        storage: options.storage,
        volume: VolumeState {
            image: topology::volume_image(&lab_dir),
            loop_device: None,
            mount_point: topology::volume_mount_point(&lab_dir),
        },
        agent_bin,
        lab_bin,
        mail,
        signup: options.signup,
        mariadb: options.mariadb.then(|| crate::mariadb::MariadbLab {
            app_password: Alphanumeric.sample_string(&mut rand::rng(), 16),
        }),
        nodes,
        lab_dir,
    }
}

/// Renders every node's config before anything is built, so a lab shape the
/// agent would refuse (two voters, say) fails at once with the agent's reason.
fn validate_configs(state: &LabState) -> Result<()> {
    if let Some(timing) = state.manager.keepalived_timing() {
        for node in &state.nodes {
            crate::keepalived::render_config(state, node, timing)?;
        }
        return Ok(());
    }
    let mut planned = state.clone();
    // The real device is known only after `losetup`; any absolute path
    // validates the same way.
    planned.volume.loop_device = Some(PathBuf::from("/dev/loop0"));
    for node in &planned.nodes {
        let config = crate::agent_config::node_config(&planned, node)?;
        crate::agent_config::render(&config, node).with_context(|| {
            format!(
                "a lab of {} mail nodes and {} witnesses cannot run",
                mail_nodes(state),
                witnesses(state)
            )
        })?;
    }
    Ok(())
}

fn mail_nodes(state: &LabState) -> usize {
    state
        .nodes
        .iter()
        .filter(|node| node.kind == NodeKind::Mail)
        .count()
}

fn witnesses(state: &LabState) -> usize {
    state.nodes.len() - mail_nodes(state)
}

fn build(mut state: LabState, wait: Duration) -> Result<LabState> {
    std::fs::create_dir_all(&state.lab_dir)
        .with_context(|| format!("cannot create {}", state.lab_dir.display()))?;
    // Everything of the lab lives in memory: the agents' Raft logs fsync on
    // every entry, and on a host whose disk is busy (a build, the tests
    // next door) one fsync can take longer than a lease, which would turn
    // the host's load into failovers. A node's power cut still keeps its
    // files, as a disk would: the tmpfs belongs to the host, not the node.
    nix::mount::mount(
        Some("tmpfs"),
        &state.lab_dir,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .with_context(|| format!("cannot mount a tmpfs on {}", state.lab_dir.display()))?;
    state.save()?;

    crate::netns::create_switch().context("cannot create the switch")?;
    crate::netns::create_attached(
        &state.client.namespace,
        &state.client.switch_veth,
        state.client.address,
    )?;
    for front in [&state.haproxy, &state.gateway].into_iter().flatten() {
        crate::netns::create_attached(&front.namespace, &front.switch_veth, front.address)?;
    }
    for node in &state.nodes {
        crate::netns::create_attached(&node.namespace, &node.switch_veth, node.address)
            .with_context(|| format!("cannot create the network of node {}", node.name))?;
    }
    if let Some(cloud) = &state.hetzner_sim {
        crate::cloud::create_router(&state, cloud)?;
    }

    std::fs::create_dir_all(&state.volume.mount_point)?;
    match state.storage {
        Storage::Shared => {
            crate::volume::create_image(&state.volume.image, topology::VOLUME_SIZE_BYTES)?;
            let device = crate::volume::attach_loop(&state.volume.image)?;
            state.volume.loop_device = Some(device.clone());
            state.save()?;
            crate::volume::make_filesystem(&device)?;
        }
        Storage::Btrfs => crate::volume::create_pools(&mut state)?,
    }

    if !state.manager.is_keepalived() {
        write_tls_files(&state)?;
    }
    if state.mariadb.is_some() {
        crate::mariadb::write_password_files(&state)?;
    }
    for node in &state.nodes {
        write_node_files(&state, node)
            .with_context(|| format!("cannot write the files of node {}", node.name))?;
        if state.manager.is_keepalived() {
            crate::keepalived::check_config(&state.agent_bin, node)?;
        }
    }
    match state.storage {
        Storage::Shared => crate::volume::prepare(&state)?,
        Storage::Btrfs => crate::volume::prepare_pools(&state)?,
    }
    if state.mariadb.is_some() {
        crate::mariadb::install_all(&state)?;
    }
    if let Some(cloud) = &state.hetzner_sim {
        crate::cloud::write_files(&state, cloud)?;
        crate::cloud::start_simulator(&state, cloud)?;
    }

    for node in &state.nodes {
        crate::node::boot(&state, node)?;
    }
    wait_for_banner(&state, wait)?;
    if state.mariadb.is_some() {
        set_up_replication(&state)?;
    }
    crate::front::build(&state)?;
    crate::front::wait_ready(&state, wait)?;
    Ok(state)
}

/// Once a master serves (its promotion made its database writable), the
/// real `mailherd db setup-replication` on it: the replication account,
/// and every other server a GTID replica of the master's. Then the
/// application's empty database, on the master.
fn set_up_replication(state: &LabState) -> Result<()> {
    let answers = crate::commands::status::query_all(state);
    let masters: Vec<&NodeState> = state
        .nodes
        .iter()
        .zip(&answers)
        .filter(|(_, answer)| answer.role == "master")
        .map(|(node, _)| node)
        .collect();
    let [master] = masters[..] else {
        bail!(
            "cannot set up MariaDB replication: {} nodes say they are master (need exactly one)",
            masters.len()
        );
    };
    crate::mariadb::setup_replication(state, master)?;
    crate::mariadb::create_app_database(state, master)
        .context("cannot create the application's database")?;
    println!(
        "MariaDB replication set up from {} (`mailherd db setup-replication`, output in {})",
        master.name,
        crate::mariadb::setup_log(&state.lab_dir).display()
    );
    Ok(())
}

/// Writes the lab's control token once (0600), for `mailherd switchover`,
/// `maintenance` and `breaker reset` against the lab's agents.
fn write_token(state: &LabState) -> Result<()> {
    crate::host::write_secret_file(&topology::token_file(&state.lab_dir), 32, "")
}

/// Makes the lab's cluster CA and one certificate per node (its name and
/// peer address), with the same code as `mailherd tls init-ca` and `issue`.
pub fn write_tls_files(state: &LabState) -> Result<()> {
    let dir = topology::tls_dir(&state.lab_dir);
    mailherd_agent::tls::init_ca(&dir).context("cannot make the lab's cluster CA")?;
    for node in &state.nodes {
        mailherd_agent::tls::issue(&dir, &node.name, &[node.peer.ip()], &dir)
            .with_context(|| format!("cannot issue the certificate of node {}", node.name))?;
    }
    Ok(())
}

pub fn write_node_files(state: &LabState, node: &NodeState) -> Result<()> {
    std::fs::create_dir_all(node.run_dir())?;
    if node.kind == NodeKind::Mail {
        crate::stack::write_node_files(state, node)?;
        if let Some(lab) = &state.mariadb {
            crate::mariadb::write_node_files(state, lab, node)?;
        }
    }
    if let Some(timing) = state.manager.keepalived_timing() {
        return crate::keepalived::write_node_files(state, node, timing);
    }
    write_token(state)?;
    std::fs::create_dir_all(node.dir.join("data"))?;
    let config = crate::agent_config::node_config(state, node)?;
    let text = crate::agent_config::render(&config, node)?;
    std::fs::write(&node.config, text)
        .with_context(|| format!("cannot write {}", node.config.display()))?;
    Ok(())
}

/// Waits until the floating IP serves a ready SMTP banner in the client
/// namespace; on timeout the error carries the tail of every node's logs.
fn wait_for_banner(state: &LabState, wait: Duration) -> Result<()> {
    let address = topology::smtp_address();
    let deadline = Instant::now() + wait;
    let mut last = String::from("no probe yet");
    while Instant::now() < deadline {
        let probe = crate::netns::run_in(&state.client.namespace, || {
            Ok(crate::probe::read_banner(
                address,
                Duration::from_millis(500),
            ))
        })?;
        match probe {
            Ok(banner) if crate::probe::is_ready_banner(&banner) => return Ok(()),
            Ok(banner) => last = format!("banner {banner:?}"),
            Err(reason) => last = reason,
        }
        // A node whose init died will not come back by waiting.
        for node in &state.nodes {
            if crate::node::init_pid(&node.namespace)?.is_none() {
                bail!(
                    "node {} stopped while the lab was starting; {}",
                    node.name,
                    logs_of(node)
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs: Vec<String> = state.nodes.iter().map(logs_of).collect();
    bail!(
        "no master served an SMTP banner on {address} within {} s (last probe: {last}); the nodes' logs say:\n{}",
        wait.as_secs(),
        logs.join("\n")
    )
}

fn logs_of(node: &NodeState) -> String {
    format!(
        "--- {} ({}):\n{}\n--- {} ({}):\n{}",
        node.name,
        node.node_log().display(),
        crate::host::tail(&node.node_log(), 5),
        node.name,
        node.agent_log().display(),
        crate::host::tail(&node.agent_log(), 15)
    )
}
