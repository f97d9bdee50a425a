//! `mailherd gc --config F [--dry-run] [--json] [--force]`: one garbage
//! collection pass on this node.
//!
//! The agent owns the host, so the pass is asked of it (`POST /v1/gc`): it
//! runs inside the control loop, never beside a promotion or demotion.
//! First the agent's `/status` is read: on a node whose agent says it is
//! the master nothing is touched (a dry run still reports). When the agent
//! does not answer, the CLI runs the pass itself from the config — report
//! only, unless `--force` — and the replicated history is left alone (it
//! can only change through the cluster).
//!
//! Exit codes: 0 the pass ran and nothing failed; 1 an error, a refusal or
//! something found that could not be removed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use mailherd_agent::gc::{run_pass, GcPass, GcReport};
use mailherd_agent::pipelines::Drivers;

#[derive(clap::Args)]
pub struct GcArgs {
    #[arg(long, default_value = mailherd_config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Report what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// With the agent down: remove what is found anyway (the operator
    /// vouches that this node is not the master).
    #[arg(long)]
    pub force: bool,
    /// Ask this API instead of the one in the config.
    #[arg(long)]
    pub api: Option<String>,
    /// The token file; default: the config's api.token_file, or the
    /// MAILHERD_TOKEN environment variable.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// What the local agent said about itself, if it answered.
enum Agent {
    Answered { role: String, phase: String },
    Down(String),
}

pub fn run(args: &GcArgs) -> anyhow::Result<ExitCode> {
    let config =
        crate::load(&args.config).with_context(|| format!("loading {}", args.config.display()))?;
    let base = match &args.api {
        Some(api) => api.trim_end_matches('/').to_string(),
        None => format!("http://{}", config.me().api),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .connect_timeout(Duration::from_secs(3))
        .build()
        .context("building the HTTP client")?;

    let agent = runtime.block_on(ask_status(&client, &base));
    let report = match agent {
        Agent::Answered { role, phase } => {
            if role == "master" && !args.dry_run {
                bail!(
                    "the agent at {base} says this node ({}) is the master (phase {phase}): \
                     gc touches nothing on a master; switch over first, or use --dry-run",
                    config.me().name
                );
            }
            let target = crate::ControlTarget {
                config: args.config.clone(),
                api: args.api.clone(),
                token_file: args.token_file.clone(),
            };
            let (_, token) = crate::control_endpoint(&target)?;
            runtime.block_on(ask_pass(&client, &base, &token, args.dry_run))?
        }
        Agent::Down(reason) => {
            let dry_run = args.dry_run || !args.force;
            eprintln!(
                "mailherd: the agent at {base} does not answer ({reason}): {}",
                if dry_run {
                    "reporting only (--force removes what is found)"
                } else {
                    "--force: removing what is found"
                }
            );
            let drivers = Drivers::from_config(&config).context("building the drivers")?;
            runtime.block_on(run_pass(GcPass {
                config: &config,
                drivers: &drivers,
                consensus: None,
                phase: None,
                pipeline_running: false,
                dry_run,
                now_unix_ms: mailherd_agent::clock::Clock::new().unix_ms(),
            }))
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn ask_status(client: &reqwest::Client, base: &str) -> Agent {
    let url = format!("{base}/status");
    let answer = async {
        let response = client
            .get(&url)
            .timeout(Duration::from_secs(3))
            .send()
            .await?
            .error_for_status()?;
        response.json::<serde_json::Value>().await
    };
    match answer.await {
        Ok(doc) => Agent::Answered {
            role: doc["role"].as_str().unwrap_or("unknown").to_string(),
            phase: doc["phase"].as_str().unwrap_or("unknown").to_string(),
        },
        Err(error) => Agent::Down(without_url(&error)),
    }
}

/// A transport error without the URL (it is printed once, by the caller).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = std::error::Error::source(cause);
    }
    text
}

async fn ask_pass(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    dry_run: bool,
) -> anyhow::Result<GcReport> {
    let url = format!("{base}/v1/gc");
    let response = client
        .post(&url)
        .bearer_auth(token)
        .json(&serde_json::json!({ "dry_run": dry_run }))
        .send()
        .await
        .with_context(|| format!("asking the agent at {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let answer: serde_json::Value = response.json().await.unwrap_or_default();
        let reason = answer["error"].as_str().unwrap_or("no reason given");
        bail!("{url} answered {status}: {reason}");
    }
    response
        .json()
        .await
        .with_context(|| format!("reading the report of {url}"))
}
