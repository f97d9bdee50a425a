//! `[alerts]` with its `[[alerts.channels]]`, and `[uptime_kuma]`: where the
//! agent tells people (and monitors) what happens to the cluster.
//!
//! The schema only; validation is in `validate/alerts.rs`, delivery in the
//! `mailherd-alerts` crate. Secrets (tokens, passwords) are named by file,
//! never written in the config.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[alerts]`: the rules every channel follows, and the channels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// An alert identical to one sent less than this many seconds ago (same
    /// kind, node and text) is suppressed and counted; 0 turns this off.
    #[serde(default = "default_window_s")]
    pub window_s: u64,
    /// Per channel: alerts per minute once the burst is spent (a token
    /// bucket). Failover started/completed/failed alerts are exempt: one
    /// per epoch at most, and the breaker bounds the epochs.
    #[serde(default = "default_rate_per_minute")]
    pub rate_per_minute: u32,
    /// Per channel: how many alerts may go out at once before the rate
    /// applies.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Per channel: alerts waiting for delivery; when full, new alerts are
    /// dropped and counted (the caller never waits).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// How often a failed delivery is tried again before it counts as failed.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The pause before the first retry, doubled for each further one
    /// (capped at 30 s).
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// How long one delivery attempt may take (a hanging receiver).
    #[serde(default = "default_delivery_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub channels: Vec<ChannelSection>,
}

fn default_window_s() -> u64 {
    300
}
fn default_rate_per_minute() -> u32 {
    10
}
fn default_burst() -> u32 {
    5
}
fn default_queue() -> usize {
    64
}
fn default_retries() -> u32 {
    3
}
fn default_retry_backoff_ms() -> u64 {
    1_000
}
fn default_delivery_timeout_ms() -> u64 {
    10_000
}

impl Default for AlertsSection {
    fn default() -> Self {
        AlertsSection {
            window_s: default_window_s(),
            rate_per_minute: default_rate_per_minute(),
            burst: default_burst(),
            queue: default_queue(),
            retries: default_retries(),
            retry_backoff_ms: default_retry_backoff_ms(),
            timeout_ms: default_delivery_timeout_ms(),
            channels: Vec::new(),
        }
    }
}

/// One `[[alerts.channels]]` entry. The keys after `name` apply to some
/// kinds only; validation refuses a key the kind does not use and names
/// the ones it needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSection {
    pub kind: ChannelKind,
    /// Unique among the channels; names the channel in logs and counters.
    pub name: String,

    /// webhook, ntfy, slack: where alerts are POSTed (ntfy: the topic URL,
    /// e.g. `https://ntfy.sh/mailherd-alerts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// ntfy: an access token (sent as `Authorization: Bearer`);
    /// telegram: the bot token. A file, trailing newline ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,

    /// telegram: the chat the bot writes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<String>,
    /// telegram: the Bot API root (default `https://api.telegram.org`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,

    /// email: the SMTP relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// email: the relay's port (default 587).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// email: STARTTLS required (default true); false sends in clear text,
    /// for a relay on the same host or network only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starttls: Option<bool>,
    /// email: log in as this user (needs `password_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// email: a file holding the relay password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// email: the sender, e.g. `mailherd <alerts@example.net>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// email: the recipients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<String>>,

    /// This channel's own `[alerts]` rate and burst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// The Bot API of a telegram channel without `api_url`.
pub const DEFAULT_TELEGRAM_API_URL: &str = "https://api.telegram.org";
/// The relay port of an email channel without `port` (submission).
pub const DEFAULT_SMTP_PORT: u16 = 587;

impl ChannelSection {
    /// A channel of `kind` without kind-specific keys; set them with struct
    /// update syntax.
    pub fn new(name: impl Into<String>, kind: ChannelKind) -> ChannelSection {
        ChannelSection {
            kind,
            name: name.into(),
            url: None,
            token_file: None,
            chat_id: None,
            api_url: None,
            host: None,
            port: None,
            starttls: None,
            username: None,
            password_file: None,
            from: None,
            to: None,
            rate_per_minute: None,
            burst: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// POST the alert as JSON.
    Webhook,
    /// POST the text to an ntfy topic, with Title, Priority and Tags headers.
    Ntfy,
    /// POST `{"text": ...}` (Slack, Mattermost, Rocket.Chat and others).
    Slack,
    /// The Telegram Bot API's `sendMessage`.
    Telegram,
    /// A mail through an SMTP relay.
    Email,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Ntfy => "ntfy",
            ChannelKind::Slack => "slack",
            ChannelKind::Telegram => "telegram",
            ChannelKind::Email => "email",
        }
    }
}

/// `[uptime_kuma]`: heartbeats to a Kuma push monitor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UptimeKumaSection {
    /// The monitor's push URL as Kuma shows it
    /// (`https://kuma.example.net/api/push/<token>`; a `?status=...` part
    /// is replaced at every push). It holds the monitor's token: never
    /// logged.
    pub push_url: String,
    /// Seconds between pushes; keep it below the monitor's heartbeat
    /// interval (Kuma marks the monitor down after interval + 1 s without one).
    #[serde(default = "default_kuma_interval_s")]
    pub interval_s: u64,
    /// How long one push may take.
    #[serde(default = "default_kuma_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_kuma_interval_s() -> u64 {
    30
}
fn default_kuma_timeout_ms() -> u64 {
    5_000
}
