//! `mailherd`: the agent and its command line.
//!
//! `main` only parses arguments, sets up logging and signal handling and
//! calls into the library crates.
//!
//! Exit codes: 0 success; 1 an error (the message says what and where);
//! 2 a usage error (from the argument parser).

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
    /// Work with config files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
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
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mailherd: {error:#}");
            ExitCode::FAILURE
        }
    }
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
    runtime.block_on(async move {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            }
        };
        mailherd_agent::run(config, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
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
