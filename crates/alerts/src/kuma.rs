//! The Uptime Kuma push worker: every interval, `GET push_url?status=up|
//! down&msg=...&ping=<ms>` with what the agent says about this node.
//!
//! Kuma answers 200 `{"ok":true}`, or 404 `{"ok":false,"msg":"Monitor not
//! found or not active."}` when the token is wrong or the monitor paused.
//! That is a configuration problem, so it is logged once (and once more
//! when it is fixed), not at every beat. The push URL holds the monitor's
//! token: it is never logged.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailherd_config::UptimeKumaSection;
use serde::{Deserialize, Serialize};

use crate::AlertsError;

/// What one push reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KumaStatus {
    /// Up: this node is fit for its role.
    pub up: bool,
    /// Kuma shows it next to the beat.
    pub msg: String,
}

/// The worker's state, for `/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KumaState {
    /// Pushes Kuma accepted.
    pub pushes_ok: u64,
    /// Pushes that failed (unreachable, an error status, `ok: false`).
    pub pushes_failed: u64,
    /// Kuma said the monitor does not exist or is not active (404).
    pub monitor_not_found: bool,
    pub last_error: Option<String>,
    /// The last push's round trip, sent as `ping` with the next one.
    pub last_ping_ms: Option<u64>,
}

/// Kuma's answer.
#[derive(Deserialize)]
struct PushAnswer {
    ok: bool,
    #[serde(default)]
    msg: Option<String>,
}

/// The running worker; dropping it stops it.
pub struct KumaPush {
    state: Arc<Mutex<KumaState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KumaPush {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KumaPush {
    /// Starts pushing as `[uptime_kuma]` says; `status` is asked before
    /// every push.
    pub fn start(
        section: &UptimeKumaSection,
        status: impl Fn() -> KumaStatus + Send + Sync + 'static,
    ) -> Result<KumaPush, AlertsError> {
        KumaPush::start_with(
            &section.push_url,
            Duration::from_secs(section.interval_s),
            Duration::from_millis(section.timeout_ms),
            status,
        )
    }

    /// As [`KumaPush::start`], with the values given directly.
    pub fn start_with(
        push_url: &str,
        interval: Duration,
        timeout: Duration,
        status: impl Fn() -> KumaStatus + Send + Sync + 'static,
    ) -> Result<KumaPush, AlertsError> {
        let base = reqwest::Url::parse(push_url)
            // The parser's message does not repeat the URL (and its token).
            .map_err(|error| AlertsError::KumaUrl(error.to_string()))?;
        let client = crate::channel::http_client(timeout)?;
        let state = Arc::new(Mutex::new(KumaState::default()));
        let task = tokio::spawn(work(base, interval, client, status, state.clone()));
        Ok(KumaPush { state, task })
    }

    pub fn state(&self) -> KumaState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// `base` with `status`, `msg` and `ping` set, replacing those Kuma's
/// displayed URL already carries (`?status=up&msg=OK&ping=`).
pub fn push_url(base: &reqwest::Url, status: &KumaStatus, ping_ms: Option<u64>) -> reqwest::Url {
    let mut url = base.clone();
    let kept: Vec<(String, String)> = base
        .query_pairs()
        .filter(|(key, _)| !matches!(key.as_ref(), "status" | "msg" | "ping"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    {
        let mut query = url.query_pairs_mut();
        query.clear();
        for (key, value) in &kept {
            query.append_pair(key, value);
        }
        query.append_pair("status", if status.up { "up" } else { "down" });
        query.append_pair("msg", &status.msg);
        query.append_pair("ping", &ping_ms.map(|p| p.to_string()).unwrap_or_default());
    }
    url
}

async fn work(
    base: reqwest::Url,
    interval: Duration,
    client: reqwest::Client,
    status: impl Fn() -> KumaStatus + Send + Sync + 'static,
    state: Arc<Mutex<KumaState>>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the last push failed, so that a streak is logged once.
    let mut failing = false;
    loop {
        ticker.tick().await;
        let ping_ms = state.lock().unwrap_or_else(|p| p.into_inner()).last_ping_ms;
        let url = push_url(&base, &status(), ping_ms);
        let started = Instant::now();
        let result = push_once(&client, url).await;
        let round_trip_ms = started.elapsed().as_millis() as u64;
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => {
                if state.monitor_not_found {
                    tracing::info!(
                        "Uptime Kuma: the push monitor exists again; heartbeats accepted"
                    );
                } else if failing {
                    tracing::info!("Uptime Kuma: pushes accepted again");
                }
                failing = false;
                state.monitor_not_found = false;
                state.pushes_ok += 1;
                state.last_error = None;
                state.last_ping_ms = Some(round_trip_ms);
            }
            Err(PushError::NotFound(msg)) => {
                if !state.monitor_not_found {
                    tracing::error!(
                        kuma = %msg,
                        "Uptime Kuma: push monitor not found or not active (404): check \
                         uptime_kuma.push_url's token and that the monitor is not paused; \
                         not repeated at every beat"
                    );
                }
                failing = true;
                state.monitor_not_found = true;
                state.pushes_failed += 1;
                state.last_error = Some(format!("monitor not found: {msg}"));
            }
            Err(PushError::Other(error)) => {
                if !failing {
                    tracing::warn!(%error, "Uptime Kuma push failed (further failures in a row are not logged)");
                }
                failing = true;
                state.pushes_failed += 1;
                state.last_error = Some(error);
            }
        }
    }
}

enum PushError {
    NotFound(String),
    Other(String),
}

async fn push_once(client: &reqwest::Client, url: reqwest::Url) -> Result<(), PushError> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|error| PushError::Other(error.without_url().to_string()))?;
    let status = response.status();
    let answer = response.json::<PushAnswer>().await.ok();
    let msg = answer
        .as_ref()
        .and_then(|a| a.msg.clone())
        .unwrap_or_default();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(PushError::NotFound(msg));
    }
    if !status.is_success() {
        return Err(PushError::Other(format!("Kuma answered {status}: {msg}")));
    }
    match answer {
        Some(PushAnswer { ok: true, .. }) => Ok(()),
        Some(PushAnswer { ok: false, .. }) => {
            Err(PushError::Other(format!("Kuma said ok: false: {msg}")))
        }
        None => Err(PushError::Other("Kuma's answer is not its JSON".into())),
    }
}
