//! `mailherd-lab`: a real multi-node mailherd cluster on one Linux machine.
//!
//! Each node is its own network, mount and PID namespace running a real
//! `mailherd agent`; a bridge in a switch namespace joins the nodes and a
//! client namespace; one loop device plays the shared SAN volume; the mail
//! stack is either a tiny banner server or real Postfix and Dovecot with
//! their queue and mail store on that volume. Faults (power cut, mail stack
//! crash, network partition) are injected from outside, the way they happen
//! to real servers. Needs root. With `--manager keepalived` (or
//! `keepalived-tuned`) stock keepalived runs on the nodes instead of the
//! agent, for the benchmark's comparison in the same lab.
//!
//! Exit codes: 0 success; 1 failure (the reason on stderr); 2 bad usage.
//!
//! # Layout
//! - [`topology`]: names, addresses, ports and paths of a lab (`mh-` prefix,
//!   10.77.0.0/24, `/var/lib/mailherd-lab`);
//! - [`state`]: `state.json`, what `down`, `fail`, `heal` and `status` read;
//! - [`host`]: running host tools, preflight checks naming Debian packages;
//! - [`netns`]: namespaces, veths, the bridge; running code inside a namespace;
//! - [`volume`]: image file, loop device, ext4, one-time preparation;
//! - [`stack`]: per-node files of the banner and mail stacks;
//! - [`agent_config`]: each node's agent TOML, built with the config crate;
//! - [`cloud`]: `--cloud hetzner-sim`: the router namespace and the Hetzner
//!   Cloud API simulator that programs it (`hcloud-sim`);
//! - [`front`]: `up --haproxy` and `--gateway`: HAProxy and a Postfix mail
//!   gateway in namespaces of their own, configured by `mailherd render`;
//! - [`node`]: booting and powering off nodes; `node-init`, PID 1 of a node;
//! - [`keepalived`]: `--manager keepalived|keepalived-tuned`: each node's
//!   keepalived.conf, notify and track scripts, keepalived's processes;
//! - [`banner`]: the banner server;
//! - [`probe`]: SMTP banner probes and `watch`;
//! - [`mail`]: SMTP sending and the small IMAP client;
//! - [`mariadb`]: `up --mariadb`: each mail node's own mariadbd, its
//!   my.cnf, `db setup-replication`, the servers in `status`;
//! - [`invariants`]: the sampler of who holds the address, mount and stack;
//! - [`bench`]: what `bench` and `nemesis` share (prober, mail load,
//!   settling, the agent's footprint);
//! - [`commands`]: one module per subcommand family.

mod agent_config;
mod banner;
mod bench;
mod cloud;
mod commands;
mod front;
mod host;
mod invariants;
mod keepalived;
mod mail;
mod mariadb;
mod netns;
mod node;
mod probe;
mod stack;
mod state;
mod topology;
mod volume;
mod watchdog;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::commands::fault::FailMode;
use crate::commands::up::Cloud;
use crate::state::{Manager, Stack, Storage};

#[derive(Parser)]
#[command(
    name = "mailherd-lab",
    version,
    about = "A real multi-node mailherd cluster on one Linux machine (needs root)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a lab and wait until a master serves SMTP on the floating IP.
    Up {
        /// Mail nodes (n1..nN).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Witness nodes (w1..wW): they vote but never hold the role.
        #[arg(long, default_value_t = 0)]
        witness: usize,
        #[arg(long, value_enum, default_value = "banner")]
        stack: Stack,
        #[arg(long, value_enum, default_value = "local")]
        cloud: Cloud,
        /// What runs on the mail nodes: the mailherd agent, or stock
        /// keepalived (`--stack banner` only, no witnesses, `--cloud local`)
        /// at its default or its fastest timing.
        #[arg(long, value_enum, default_value = "mailherd")]
        manager: Manager,
        /// The agent binary (default: $MAILHERD_BIN, else `mailherd` next to
        /// this executable). A keepalived lab runs `keepalived` from PATH.
        #[arg(long)]
        agent_bin: Option<PathBuf>,
        /// How long to wait for the first banner on the floating IP.
        #[arg(long, default_value_t = 60)]
        wait_secs: u64,
        /// Keep what was built when `up` fails (for a post-mortem).
        #[arg(long)]
        keep_on_failure: bool,
        /// Also HAProxy in front of the nodes (namespace `<prefix>-haproxy`,
        /// 10.77.0.3), configured by `mailherd render haproxy`.
        #[arg(long)]
        haproxy: bool,
        /// Also a Postfix mail gateway relaying to the floating IP
        /// (namespace `<prefix>-gw`, 10.77.0.4; `--stack mail`), configured
        /// by `mailherd render postfix-gateway`.
        #[arg(long)]
        gateway: bool,
        /// Run the self-service signup service (`mailherd signup`, dovecot
        /// backend) on every mail node; its URL on the floating IP is
        /// `signup` in `status --json` (`--stack mail` only).
        #[arg(long)]
        signup: bool,
        /// Where the mail data lives: one shared ext4 volume, or a btrfs
        /// disk per mail node with the master shipping snapshots to the
        /// others every 2 s (`driver = "btrfs"`; `--cloud local`).
        #[arg(long, value_enum, default_value = "shared")]
        storage: Storage,
        /// Run a mariadbd of its own on every mail node (datadir in the
        /// node's directory, port 3306 in its namespace), replicated by the
        /// agents (`[mariadb]`) and set up with `mailherd db
        /// setup-replication` once a master is elected.
        #[arg(long)]
        mariadb: bool,
    },
    /// Show every node's role (asked from inside the node's namespace).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Inject a fault into a node.
    Fail {
        node: String,
        #[arg(long, value_enum)]
        mode: FailMode,
        /// With `--mode partition`: cut only the traffic with these peers
        /// (comma-separated names, or `peers` for all of them); clients
        /// still reach the node.
        #[arg(long, value_delimiter = ',')]
        from: Vec<String>,
        /// With `--from`: drop only what arrives from those peers (an
        /// asymmetric partition).
        #[arg(long)]
        one_way: bool,
    },
    /// Undo injected faults: boot powered-off nodes, reattach partitioned ones,
    /// continue frozen agents.
    Heal {
        /// Only this node (default: all nodes).
        node: Option<String>,
    },
    /// Remove everything a lab made; also after a crash; fine with nothing up.
    Down,
    /// Read one SMTP banner from the floating IP, from the client namespace.
    Probe {
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// Through HAProxy or the gateway instead of the floating IP.
        #[arg(long, value_enum, default_value = "floating-ip")]
        via: commands::client::Via,
    },
    /// Probe the floating IP repeatedly and print every change (a failover, live).
    Watch {
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
        #[arg(long, default_value_t = 30_000)]
        duration_ms: u64,
        /// Timeout of one probe.
        #[arg(long, default_value_t = 250)]
        timeout_ms: u64,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Add a node to the running cluster (`mailherd members add`).
    AddNode {
        /// A witness instead of a mail node.
        #[arg(long)]
        witness: bool,
    },
    /// Remove a node from the running cluster and the lab (`mailherd
    /// members remove`; not the master).
    RemoveNode { node: String },
    /// Sample which nodes hold the floating IP, the mounted volume and the
    /// running stack, and measure any time two held one at once.
    Invariants {
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
        #[arg(long, default_value_t = 10_000)]
        duration_ms: u64,
        #[arg(long)]
        json: bool,
    },
    /// Measure failovers as a client sees them, mailherd against stock
    /// keepalived in the same lab (builds and removes its own labs).
    Bench {
        #[arg(long)]
        json: bool,
        #[arg(long, value_enum, default_value_t = Stack::Banner)]
        stack: Stack,
        /// Failovers per mode and manager.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Mail nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Failure modes (comma-separated).
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "power,service,partition,agent-kill,agent-freeze"
        )]
        modes: Vec<FailMode>,
        /// What manages the address and the stack (comma-separated).
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "mailherd,keepalived,keepalived-tuned"
        )]
        managers: Vec<Manager>,
        /// Seconds over which the idle master agent's CPU share is
        /// measured (0: skip).
        #[arg(long, default_value_t = 60)]
        footprint_secs: u64,
        /// Leave the last lab up afterwards (for a post-mortem).
        #[arg(long)]
        keep_lab: bool,
    },
    /// A random, reproducible sequence of faults under mail load, checking
    /// the invariants throughout (builds and removes its own lab); fails
    /// when two nodes held at once or accepted mail was lost.
    Nemesis {
        #[arg(long, default_value_t = 20)]
        faults: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        json: bool,
        #[arg(long, value_enum, default_value_t = Stack::Mail)]
        stack: Stack,
        /// Mail nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
    },
    /// Run a command inside a node (its network, mount and PID namespaces).
    Exec {
        /// A node, or `gw` (the mail gateway's Postfix, e.g. `-- postqueue -f`).
        node: String,
        /// The command (default: /bin/sh).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Send to or list the lab mailbox over the floating IP (`--stack mail`).
    Mail {
        #[command(subcommand)]
        command: MailCommand,
    },
    /// PID 1 of a node (started by `up` and `heal`).
    #[command(hide = true)]
    NodeInit {
        #[arg(long)]
        node: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        agent_bin: PathBuf,
        #[arg(long)]
        config: PathBuf,
        /// What `--agent-bin` is: the mailherd agent or keepalived.
        #[arg(long, value_enum, default_value = "mailherd")]
        manager: Manager,
        /// Omitted on witnesses.
        #[arg(long, value_enum)]
        stack: Option<Stack>,
        #[arg(long, default_value_t = 1000)]
        agent_restart_delay_ms: u64,
        /// Also run `mailherd signup` with the agent's config.
        #[arg(long)]
        signup: bool,
        /// `--storage btrfs`: the node's own btrfs disk, mounted on
        /// `<dir>/pool-fs` in the node's mount namespace.
        #[arg(long)]
        pool_device: Option<PathBuf>,
        /// Also run the node's mariadbd (`up --mariadb`), before the agent.
        #[arg(long)]
        mariadb: bool,
    },
    /// The banner server of `--stack banner` (started by the node's stack.sh).
    #[command(hide = true)]
    Banner {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        name: String,
        #[arg(long)]
        pidfile: Option<PathBuf>,
        #[arg(long)]
        log: Option<PathBuf>,
        /// Fork into the background once listening.
        #[arg(long)]
        daemon: bool,
    },
    /// Exit 0 when ADDRESS greets with a ready SMTP banner in time (the
    /// track script of `--manager keepalived`, run inside a node).
    #[command(hide = true)]
    CheckBanner {
        #[arg(long)]
        address: SocketAddr,
        #[arg(long, default_value_t = 500)]
        timeout_ms: u64,
    },
    /// The Hetzner Cloud API simulator of `--cloud hetzner-sim` (started by
    /// `up` in the router namespace).
    #[command(hide = true)]
    HcloudSim {
        /// The lab's state file.
        #[arg(long)]
        state: PathBuf,
    },
}

#[derive(Subcommand)]
enum MailCommand {
    /// SMTP to the floating IP, to the lab mailbox.
    Send {
        #[arg(long)]
        subject: String,
        #[arg(long)]
        body: Option<String>,
        /// Through HAProxy or the mail gateway instead of the floating IP.
        #[arg(long, value_enum, default_value = "floating-ip")]
        via: commands::client::Via,
        /// Another recipient (an account made through the signup service).
        #[arg(long)]
        to: Option<String>,
    },
    /// IMAP on the floating IP: the subjects in the lab mailbox's INBOX.
    List {
        #[arg(long)]
        json: bool,
        /// Log in as another account (with --password).
        #[arg(long, requires = "password")]
        user: Option<String>,
        #[arg(long, requires = "user")]
        password: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match topology::check_environment().and_then(|()| run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    let ms = Duration::from_millis;
    match command {
        Command::Up {
            nodes,
            witness,
            stack,
            cloud,
            manager,
            agent_bin,
            wait_secs,
            keep_on_failure,
            haproxy,
            gateway,
            signup,
            storage,
            mariadb,
        } => commands::up::run(commands::up::UpOptions {
            nodes,
            witnesses: witness,
            stack,
            cloud,
            manager,
            agent_bin,
            wait: Duration::from_secs(wait_secs),
            keep_on_failure,
            haproxy,
            gateway,
            signup,
            storage,
            mariadb,
        }),
        Command::Status { json } => commands::status::run(json),
        Command::Fail {
            node,
            mode,
            from,
            one_way,
        } => commands::fault::fail(&node, mode, commands::fault::Cut { from, one_way }),
        Command::Heal { node } => commands::fault::heal(node.as_deref()),
        Command::Down => commands::down::run(),
        Command::Probe { timeout_ms, via } => commands::client::probe(ms(timeout_ms), via),
        Command::Watch {
            interval_ms,
            duration_ms,
            timeout_ms,
            json,
        } => commands::client::watch(ms(interval_ms), ms(duration_ms), ms(timeout_ms), json),
        Command::AddNode { witness } => commands::members::add_node(witness),
        Command::RemoveNode { node } => commands::members::remove_node(&node),
        Command::Invariants {
            interval_ms,
            duration_ms,
            json,
        } => invariants::run(ms(interval_ms.max(1)), ms(duration_ms), json),
        Command::Bench {
            json,
            stack,
            rounds,
            nodes,
            modes,
            managers,
            footprint_secs,
            keep_lab,
        } => commands::bench::run(commands::bench::BenchOptions {
            json,
            stack,
            rounds,
            nodes,
            modes,
            managers,
            footprint: Duration::from_secs(footprint_secs),
            keep_lab,
        }),
        Command::Nemesis {
            faults,
            seed,
            json,
            stack,
            nodes,
        } => commands::nemesis::run(commands::nemesis::NemesisOptions {
            faults,
            seed,
            json,
            stack,
            nodes,
        }),
        Command::Exec { node, command } => commands::exec::run(&node, &command),
        Command::Mail {
            command:
                MailCommand::Send {
                    subject,
                    body,
                    via,
                    to,
                },
        } => commands::client::send(&subject, body.as_deref(), via, to.as_deref()),
        Command::Mail {
            command:
                MailCommand::List {
                    json,
                    user,
                    password,
                },
        } => commands::client::list(json, user.zip(password)),
        Command::NodeInit {
            node,
            dir,
            agent_bin,
            config,
            manager,
            stack,
            agent_restart_delay_ms,
            signup,
            pool_device,
            mariadb,
        } => node::node_init(node::NodeInit {
            node,
            dir,
            agent_bin,
            config,
            manager,
            stack,
            agent_restart_delay: ms(agent_restart_delay_ms),
            signup,
            pool_device,
            mariadb,
        }),
        Command::Banner {
            listen,
            name,
            pidfile,
            log,
            daemon,
        } => banner::run(banner::BannerOptions {
            listen,
            name,
            pidfile,
            log,
            daemon,
        }),
        Command::CheckBanner {
            address,
            timeout_ms,
        } => probe::check_banner(address, ms(timeout_ms)),
        Command::HcloudSim { state } => cloud::run_simulator(&state),
    }
}
