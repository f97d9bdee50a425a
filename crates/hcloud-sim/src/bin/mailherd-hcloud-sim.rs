//! `mailherd-hcloud-sim`: the Hetzner Cloud API simulator on its own.
//!
//! ```text
//! mailherd-hcloud-sim --listen 127.0.0.1:8080 --state world.json --token-file token
//! ```
//!
//! Seeds the world from `--state` and, unless `--no-persist`, writes it back
//! there after every change. Prints `listening on http://ADDR/v1` on stdout
//! once it accepts connections (useful with port 0), logs on stderr
//! (`RUST_LOG`), and stops on SIGINT or SIGTERM.
//!
//! Exit codes: 0 after a signal, 1 on any error (bad arguments: 2, from
//! clap).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mailherd_hcloud_sim::{RateLimitConfig, SimConfig, Simulator, World};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Simulates the Hetzner Cloud API subset mailherd uses"
)]
struct Args {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The world to simulate (JSON: servers, floating_ips, volumes).
    #[arg(long)]
    state: PathBuf,
    /// File holding the bearer token the API accepts.
    #[arg(long)]
    token_file: PathBuf,
    /// How long an action runs.
    #[arg(long, default_value_t = 3000)]
    action_duration_ms: u64,
    /// Actions run action_duration ± this, uniformly.
    #[arg(long, default_value_t = 1000)]
    jitter_ms: u64,
    /// Added before every API answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Size of the rate-limit bucket.
    #[arg(long, default_value_t = 3600)]
    rate_limit: u32,
    /// Rate-limit refill, requests per second.
    #[arg(long, default_value_t = 1.0)]
    refill_per_second: f64,
    /// Do not write the world back to --state.
    #[arg(long)]
    no_persist: bool,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(error) = run(Args::parse()).await {
        eprintln!("mailherd-hcloud-sim: {error:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("cannot read the token file {}", args.token_file.display()))?
        .trim()
        .to_string();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        args.token_file.display()
    );
    let world = World::from_json_file(&args.state)?;
    let config = SimConfig {
        token,
        action_duration: Duration::from_millis(args.action_duration_ms),
        jitter: Duration::from_millis(args.jitter_ms),
        latency: Duration::from_millis(args.latency_ms),
        rate_limit: RateLimitConfig {
            limit: args.rate_limit,
            refill_per_second: args.refill_per_second,
        },
        state_file: (!args.no_persist).then(|| args.state.clone()),
    };
    let simulator = Simulator::new(config, world)
        .with_context(|| format!("cannot simulate {}", args.state.display()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}/v1");
    std::io::stdout().flush()?;
    simulator.run(listener, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(terminate) => terminate,
            Err(error) => {
                tracing::warn!("cannot watch SIGTERM ({error}); only SIGINT stops the simulator");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping");
}
