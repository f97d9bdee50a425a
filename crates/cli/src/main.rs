//! `mailherd`: the agent and its command line.
//!
//! `main` only parses arguments, sets up logging and signal handling and
//! calls into the library crates.
//!
//! Exit codes: 0 success; 1 an error (the message says what and where);
//! 2 a usage error (from the argument parser). `mailherd check` has its
//! own: 0 fit for the role, 1 degraded, 2 down or not ready (and when it
//! cannot check at all).
//!
//! # Layout
//! - this file: the commands, the agent, `status` and the control commands;
//! - [`check`]: `mailherd check`, the node's fitness for its role;
//! - [`db`]: `mailherd db ...`, MariaDB GTID replication;
//! - [`gc`]: `mailherd gc`, the garbage collector (through the agent, or
//!   on its own when the agent is down);
//! - [`notify`]: `mailherd notify`, keepalived's notify handler;
//! - [`render`]: `mailherd render keepalived|haproxy|postfix-gateway|dns`;
//! - [`docs`]: `mailherd man` and `mailherd completions` (for packaging).

mod check;
mod db;
mod docs;
mod gc;
mod notify;
mod render;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use mailherd_agent::StatusDocument;
use mailherd_config::{Config, ConfigError, DEFAULT_CONFIG_PATH};

#[derive(Parser)]
#[command(
    name = "mailherd",
    version,
    about = "High-availability orchestrator for self-hosted mail servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent of this node (until SIGTERM or SIGINT).
    Agent {
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
    },
    /// Show the cluster as this node sees it.
    Status {
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Ask this API instead of the one in the config (e.g. http://10.0.0.1:7401).
        #[arg(long)]
        api: Option<String>,
        /// Print the whole status document as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hand the master role over: to NODE, or to the best candidate. The
    /// master demotes cleanly first; not counted by the breaker.
    Switchover {
        #[arg(long, value_name = "NODE")]
        to: Option<String>,
        #[command(flatten)]
        target: ControlTarget,
    },
    /// Maintenance mode: while on, no automatic failover happens and the
    /// master keeps its role even if its stack fails.
    Maintenance {
        #[arg(value_enum)]
        mode: OnOff,
        #[command(flatten)]
        target: ControlTarget,
    },
    /// The failover circuit breaker.
    Breaker {
        #[command(subcommand)]
        command: BreakerCommand,
    },
    /// Change the running cluster's membership (on the Raft leader; any
    /// node's API will point the way).
    Members {
        #[command(subcommand)]
        command: MembersCommand,
    },
    /// Work with config files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Make the cluster CA and node certificates for mutual TLS between
    /// agents (the `[tls]` section).
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// Probe every check once and say whether this node is fit for its
    /// role: exit 0 fit, 1 degraded, 2 down or not ready (a keepalived
    /// track script).
    Check(check::CheckArgs),
    /// keepalived's notify handler: `notify TYPE NAME STATE PRIORITY`
    /// runs the promotion (MASTER) or demotion (BACKUP, FAULT, STOP)
    /// pipeline.
    Notify(notify::NotifyArgs),
    /// MariaDB GTID replication between the nodes' servers ([mariadb]).
    Db {
        #[command(subcommand)]
        command: db::DbCommand,
    },
    /// Find (and remove) what nobody should hold: stale mounts, stray
    /// floating addresses and stacks on non-masters, stale agent pid/lock
    /// files, failover history older than the retention. Refuses to touch
    /// a node whose agent says it is the master; with the agent down it
    /// only reports, unless --force.
    Gc(gc::GcArgs),
    /// Write configuration for other programs, matching this node's config.
    Render {
        #[command(subcommand)]
        command: RenderCommand,
    },
    /// Run the self-service signup web service of the config's [signup]
    /// section (a form at /, POST /api/signup), until SIGTERM or SIGINT.
    Signup {
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
    },
    /// Print the man page mailherd(1), in roff (`man -l -` reads it).
    #[command(hide = true)]
    Man,
    /// Print shell completions for SHELL.
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum RenderCommand {
    /// keepalived.conf: the floating IP's vrrp_instance, `mailherd check`
    /// as its track script, `mailherd notify` as its notify script.
    Keepalived(render::KeepalivedArgs),
    /// haproxy.cfg: webmail (and mail services in TCP mode) sent to the
    /// node whose agent answers `GET /master` ([haproxy]).
    Haproxy(render::FileArgs),
    /// main.cf and transport map of a Postfix mail gateway relaying the
    /// cluster's domains to the floating IP ([gateway]).
    PostfixGateway(render::GatewayArgs),
    /// Zone-file records: MX with priorities (the floating IP's host, the
    /// gateway as backup), address records, SPF ([dns]).
    Dns(render::FileArgs),
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Make a new cluster CA: DIR/ca.pem (every node's tls.ca_file) and
    /// DIR/ca.key (0600; keep it off the nodes). Never overwrites.
    InitCa {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Issue a node certificate signed by the CA in CA_DIR: OUT_DIR/NAME.pem
    /// and OUT_DIR/NAME.key (0600), for server and client authentication,
    /// with NAME and every --ip (the node's peer address) as names. Never
    /// overwrites.
    Issue {
        #[arg(long, value_name = "CA_DIR")]
        ca_dir: PathBuf,
        /// The node's name, as in its [[members]] entry.
        #[arg(long)]
        name: String,
        /// An IP address the node's peers dial (members[].peer); repeatable.
        #[arg(long = "ip", value_name = "ADDRESS", required = true)]
        ips: Vec<std::net::IpAddr>,
        #[arg(long, value_name = "OUT_DIR")]
        out_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum BreakerCommand {
    /// Close the breaker: earlier failovers no longer count.
    Reset {
        #[command(flatten)]
        target: ControlTarget,
    },
}

#[derive(Subcommand)]
enum MembersCommand {
    /// Add a node: start its agent first with `[node] join = true` and
    /// every member (itself included) in its `[[members]]`.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long)]
        id: u64,
        #[arg(long, value_enum, default_value = "mail")]
        role: RoleArg,
        #[arg(long, default_value_t = 100)]
        priority: u32,
        /// Its peer endpoint (Raft), as its config's members[].peer.
        #[arg(long)]
        peer: std::net::SocketAddr,
        /// Its HTTP API, as its config's members[].api.
        #[arg(long)]
        member_api: std::net::SocketAddr,
        #[command(flatten)]
        target: ControlTarget,
    },
    /// Remove a node (not the master: `mailherd switchover` first).
    Remove {
        name: String,
        #[command(flatten)]
        target: ControlTarget,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Mail,
    Witness,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// Which agent a control command talks to, and with which token.
#[derive(clap::Args)]
pub(crate) struct ControlTarget {
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    pub(crate) config: PathBuf,
    /// Ask this API instead of the one in the config.
    #[arg(long)]
    pub(crate) api: Option<String>,
    /// The token file; default: the config's api.token_file, or the
    /// MAILHERD_TOKEN environment variable.
    #[arg(long)]
    pub(crate) token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a config file; print every problem with file, line and key.
    Validate { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent { config, log_json } => run_agent(&config, log_json),
        Command::Status { config, api, json } => status(&config, api.as_deref(), json),
        Command::Config {
            command: ConfigCommand::Validate { file },
        } => validate(&file),
        Command::Switchover { to, target } => {
            control(&target, "/v1/switchover", serde_json::json!({ "to": to }))
        }
        Command::Maintenance { mode, target } => control(
            &target,
            "/v1/maintenance",
            serde_json::json!({ "on": matches!(mode, OnOff::On) }),
        ),
        Command::Breaker {
            command: BreakerCommand::Reset { target },
        } => control(&target, "/v1/breaker/reset", serde_json::json!({})),
        Command::Members {
            command:
                MembersCommand::Add {
                    name,
                    id,
                    role,
                    priority,
                    peer,
                    member_api,
                    target,
                },
        } => control(
            &target,
            "/v1/members",
            serde_json::json!({
                "name": name,
                "id": id,
                "role": match role { RoleArg::Mail => "mail", RoleArg::Witness => "witness" },
                "priority": priority,
                "peer": peer,
                "api": member_api,
            }),
        ),
        Command::Members {
            command: MembersCommand::Remove { name, target },
        } => control(
            &target,
            "/v1/members/remove",
            serde_json::json!({ "name": name }),
        ),
        Command::Tls { command } => tls(command),
        Command::Check(args) => return check::run(&args),
        Command::Notify(args) => notify::run(&args),
        Command::Gc(args) => gc::run(&args),
        Command::Db { command } => db::run(command),
        Command::Render { command } => match command {
            RenderCommand::Keepalived(args) => render::keepalived(&args),
            RenderCommand::Haproxy(args) => render::haproxy(&args),
            RenderCommand::PostfixGateway(args) => render::postfix_gateway(&args),
            RenderCommand::Dns(args) => render::dns(&args),
        },
        Command::Signup { config, log_json } => run_signup(&config, log_json),
        Command::Man => docs::man(&mut <Cli as clap::CommandFactory>::command()),
        Command::Completions { shell } => {
            docs::completions(shell, &mut <Cli as clap::CommandFactory>::command())
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mailherd: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn tls(command: TlsCommand) -> anyhow::Result<ExitCode> {
    use mailherd_agent::tls;
    match command {
        TlsCommand::InitCa { dir } => {
            let files = tls::init_ca(&dir).context("cannot make the cluster CA")?;
            println!("wrote {} and {}", files.cert.display(), files.key.display());
        }
        TlsCommand::Issue {
            ca_dir,
            name,
            ips,
            out_dir,
        } => {
            let files = tls::issue(&ca_dir, &name, &ips, &out_dir)
                .with_context(|| format!("cannot issue the certificate of {name}"))?;
            println!("wrote {} and {}", files.cert.display(), files.key.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn load(path: &Path) -> anyhow::Result<Config> {
    match Config::load(path) {
        Ok(config) => Ok(config),
        Err(ConfigError::Invalid(problems)) => bail!("invalid config:\n{problems}"),
        Err(error) => Err(error.into()),
    }
}

fn validate(path: &Path) -> anyhow::Result<ExitCode> {
    match Config::load(path) {
        Ok(config) => {
            println!(
                "{}: ok (node {}, {} members, cluster {})",
                path.display(),
                config.node.name,
                config.members.len(),
                config.cluster.name
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ConfigError::Invalid(problems)) => {
            for problem in &problems.0 {
                println!("{problem}");
            }
            eprintln!("{}: {} problem(s)", path.display(), problems.len());
            Ok(ExitCode::FAILURE)
        }
        Err(error) => Err(error.into()),
    }
}

/// openraft logs every failed heartbeat to an unreachable peer as a
/// warning (20 a second per peer); the agent reports what matters
/// (leadership changes, lost leases) itself, so openraft is kept to errors
/// unless RUST_LOG says otherwise.
fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run_agent(path: &Path, log_json: bool) -> anyhow::Result<ExitCode> {
    let config = load(path).with_context(|| format!("loading {}", path.display()))?;
    init_logging(log_json);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async move {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            }
            exit_if_still_running_after(mailherd_agent::control::SHUTDOWN_LIMIT * 2);
        };
        mailherd_agent::run(config, shutdown).await
    });
    // A blocking task still running (a probe stuck in a syscall) must not
    // keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(2));
    result?;
    Ok(ExitCode::SUCCESS)
}

fn run_signup(path: &Path, log_json: bool) -> anyhow::Result<ExitCode> {
    let config = load(path).with_context(|| format!("loading {}", path.display()))?;
    let Some(section) = &config.signup else {
        bail!(
            "{}: no [signup] section: `mailherd signup` needs one (listen, backend, domains)",
            path.display()
        );
    };
    let listen = section.listen;
    init_logging(log_json);
    let service = mailherd_signup::Service::from_config(&config)
        .with_context(|| format!("starting the signup service of {}", path.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (signup.listen)"))?;
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            }
        };
        mailherd_signup::run(service, listener, shutdown).await?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}

/// The backstop behind the agent's own bounded shutdown: whatever is
/// stuck, a stop request ends the process within `limit` (the control loop
/// has killed what the node held well before).
fn exit_if_still_running_after(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        tracing::error!(
            limit_s = limit.as_secs(),
            "still running after the stop request: exiting"
        );
        std::process::exit(1);
    });
}

fn status(path: &Path, api: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let base = match api {
        Some(api) => api.trim_end_matches('/').to_string(),
        None => {
            let config = load(path).with_context(|| format!("loading {}", path.display()))?;
            format!("http://{}", config.me().api)
        }
    };
    let url = format!("{base}/status");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let value: serde_json::Value = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .context("building the HTTP client")?;
        let response = client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("asking the agent at {url} (is it running?)"))?;
        if !response.status().is_success() {
            bail!("{url} answered {}", response.status());
        }
        response
            .json()
            .await
            .with_context(|| format!("reading the answer of {url}"))
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    let doc: StatusDocument =
        serde_json::from_value(value).context("decoding the status document")?;
    print_status(&doc);
    Ok(ExitCode::SUCCESS)
}

/// The API base URL and token for a control command.
pub(crate) fn control_endpoint(target: &ControlTarget) -> anyhow::Result<(String, String)> {
    let config = match (&target.api, &target.token_file) {
        (Some(_), Some(_)) => None,
        _ => Some(
            load(&target.config).with_context(|| format!("loading {}", target.config.display()))?,
        ),
    };
    let base = match (&target.api, &config) {
        (Some(api), _) => api.trim_end_matches('/').to_string(),
        (None, Some(config)) => format!("http://{}", config.me().api),
        (None, None) => unreachable!("the config is loaded when --api is missing"),
    };
    let token = if let Some(path) = &target.token_file {
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?
            .trim()
            .to_string()
    } else if let Some(token) = config
        .as_ref()
        .map(|c| c.api.read_token())
        .transpose()
        .context("reading the config's api.token_file")?
        .flatten()
    {
        token
    } else if let Ok(token) = std::env::var("MAILHERD_TOKEN") {
        token.trim().to_string()
    } else {
        bail!(
            "no token: set api.token_file in the config, pass --token-file, or set MAILHERD_TOKEN"
        );
    };
    Ok((base, token))
}

fn control(
    target: &ControlTarget,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<ExitCode> {
    let (base, token) = control_endpoint(target)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let post = |url: String| {
        let token = &token;
        let body = &body;
        async move {
            let client = reqwest::Client::builder()
                // Adding a member waits for its log to catch up.
                .timeout(Duration::from_secs(40))
                .build()
                .context("building the HTTP client")?;
            let response = client
                .post(&url)
                .bearer_auth(token)
                .json(body)
                .send()
                .await
                .with_context(|| format!("asking the agent at {url} (is it running?)"))?;
            let status = response.status();
            let answer: serde_json::Value =
                response.json().await.unwrap_or(serde_json::Value::Null);
            anyhow::Ok((url, status, answer))
        }
    };
    let (url, status, answer) = runtime.block_on(async {
        let first = post(format!("{base}{path}")).await?;
        // A membership change asked of a node that is not the leader: it
        // names the leader's API; ask there once.
        match first.2["leader_api"].as_str() {
            Some(leader) if first.1 == reqwest::StatusCode::CONFLICT => {
                post(format!("{}{path}", leader.trim_end_matches('/'))).await
            }
            _ => Ok(first),
        }
    })?;
    if status.is_success() {
        println!("{answer}");
        Ok(ExitCode::SUCCESS)
    } else {
        let reason = answer["error"].as_str().unwrap_or("no reason given");
        bail!("{url} answered {status}: {reason}");
    }
}

fn print_status(doc: &StatusDocument) {
    println!(
        "cluster {}  (as seen by {}, {})",
        doc.cluster, doc.node, doc.role
    );
    match &doc.assignment {
        Some(a) => println!("master  {} (epoch {})", a.node, a.epoch),
        None => println!("master  none (epoch {})", doc.epoch),
    }
    match &doc.leader {
        Some(l) => println!("decider {} (Raft leader, term {})", l.name, l.term),
        None => println!("decider none (no Raft leader)"),
    }
    if let Some(ms) = doc.lease_remaining_ms {
        println!("lease   {ms} ms left");
    }
    if doc.maintenance_since_unix_ms.is_some() {
        println!("MAINTENANCE MODE: no automatic failover (mailherd maintenance off)");
    }
    if let Some(breaker) = &doc.breaker {
        println!(
            "breaker {} ({} of at most {} failovers in {} s)",
            if breaker.open {
                "OPEN: no automatic failover (mailherd breaker reset)"
            } else {
                "closed"
            },
            breaker.failovers_in_window,
            breaker.max_failovers,
            breaker.window_s
        );
    }
    if let Some(to) = &doc.switchover_pending {
        println!("switchover to {to} pending");
    }
    if let Some(blocked) = &doc.decider_blocked {
        println!("decider blocked: {blocked}");
    }
    if let Some(verdict) = &doc.verdict {
        println!("verdict {:?}: {}", verdict.verdict, verdict.detail);
        for check in &verdict.checks {
            println!(
                "  check {:<10} {:<5} {:?} {} ({} ms)",
                check.name, check.kind, check.state, check.last_detail, check.last_latency_ms
            );
        }
    }
    println!(
        "{:<10} {:>4} {:<8} {:>8} {:<6} detail",
        "member", "id", "kind", "priority", "ready"
    );
    for m in &doc.members {
        println!(
            "{:<10} {:>4} {:<8} {:>8} {:<6} {}",
            m.name, m.id, m.kind, m.priority, m.ready, m.detail
        );
    }
    if !doc.workers.is_empty() {
        println!("workers:");
        for w in &doc.workers {
            let last = w
                .last_run_unix_ms
                .map(|at| {
                    let now = mailherd_agent::clock::Clock::new().unix_ms();
                    format!("{:.1} s ago", now.saturating_sub(at) as f64 / 1_000.0)
                })
                .unwrap_or_else(|| "-".into());
            let outcome = match (&w.last_error, &w.last_result) {
                (Some(error), _) => format!("error: {error}"),
                (None, Some(result)) => result.clone(),
                (None, None) => String::new(),
            };
            println!(
                "  {:<16} {:<8} {:>10}  {}",
                w.name,
                format!("{:?}", w.state).to_lowercase(),
                last,
                outcome
            );
        }
    }
    if !doc.history.is_empty() {
        println!("recent failovers:");
        for h in doc.history.iter().rev().take(5) {
            let outcome = match &h.outcome {
                Some(o) if o.ok => format!("ok in {} ms", o.total_ms),
                Some(o) => format!("failed: {}", o.error.clone().unwrap_or_default()),
                None => "in progress".into(),
            };
            println!(
                "  epoch {:>3}: {} -> {} ({}) {}",
                h.epoch,
                h.from.clone().unwrap_or_else(|| "-".into()),
                h.to,
                h.reason,
                outcome
            );
        }
    }
}
