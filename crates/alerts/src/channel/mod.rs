//! The channels: one file each behind [`Channel`], built from a
//! `[[alerts.channels]]` entry by [`build`].
//!
//! A channel only delivers one alert once; retries, timeouts, rules and
//! counting are the same for every channel and live in `crate::delivery`.

mod email;
mod ntfy;
mod slack;
mod telegram;
mod webhook;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use mailherd_config::{ChannelKind, ChannelSection};

pub use email::Email;
pub use ntfy::Ntfy;
pub use slack::Slack;
pub use telegram::Telegram;
pub use webhook::Webhook;

use crate::{Alert, AlertsError};

/// Why one delivery attempt failed. Never carries a secret: URLs that hold
/// tokens are left out of transport errors.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("the receiver answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("request failed: {0}")]
    Transport(String),
    #[error("the receiver refused it: {0}")]
    Refused(String),
    #[error("SMTP: {0}")]
    Smtp(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Delivers one alert, once.
pub trait Channel: Send + Sync + 'static {
    fn deliver(&self, alert: &Alert) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

/// A channel of any kind (the delivery task is generic over [`Channel`];
/// this picks the kind once, at start).
pub enum AnyChannel {
    Webhook(Webhook),
    Ntfy(Ntfy),
    Slack(Slack),
    Telegram(Telegram),
    /// Boxed: the SMTP transport is several times the size of the others.
    Email(Box<Email>),
}

impl Channel for AnyChannel {
    async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        match self {
            AnyChannel::Webhook(c) => c.deliver(alert).await,
            AnyChannel::Ntfy(c) => c.deliver(alert).await,
            AnyChannel::Slack(c) => c.deliver(alert).await,
            AnyChannel::Telegram(c) => c.deliver(alert).await,
            AnyChannel::Email(c) => c.deliver(alert).await,
        }
    }
}

/// Builds the channel a validated section describes; reads its secret
/// files. `timeout` bounds one attempt.
pub fn build(section: &ChannelSection, timeout: Duration) -> Result<AnyChannel, AlertsError> {
    let missing = |key: &str| AlertsError::Channel {
        channel: section.name.clone(),
        message: format!("missing {key}"),
    };
    Ok(match section.kind {
        ChannelKind::Webhook => AnyChannel::Webhook(Webhook::new(
            section.url.clone().ok_or_else(|| missing("url"))?,
            timeout,
        )?),
        ChannelKind::Slack => AnyChannel::Slack(Slack::new(
            section.url.clone().ok_or_else(|| missing("url"))?,
            timeout,
        )?),
        ChannelKind::Ntfy => {
            let token = match &section.token_file {
                Some(path) => Some(read_secret(&section.name, path)?),
                None => None,
            };
            AnyChannel::Ntfy(Ntfy::new(
                section.url.clone().ok_or_else(|| missing("url"))?,
                token,
                timeout,
            )?)
        }
        ChannelKind::Telegram => {
            let path = section
                .token_file
                .as_ref()
                .ok_or_else(|| missing("token_file"))?;
            AnyChannel::Telegram(Telegram::new(
                section
                    .api_url
                    .clone()
                    .unwrap_or_else(|| mailherd_config::alerts::DEFAULT_TELEGRAM_API_URL.into()),
                section.chat_id.clone().ok_or_else(|| missing("chat_id"))?,
                read_secret(&section.name, path)?,
                timeout,
            )?)
        }
        ChannelKind::Email => AnyChannel::Email(Box::new(Email::new(section, timeout)?)),
    })
}

/// The text of a secret file, trailing newline removed.
pub(crate) fn read_secret(channel: &str, path: &Path) -> Result<String, AlertsError> {
    let text = std::fs::read_to_string(path).map_err(|source| AlertsError::Secret {
        channel: channel.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// One HTTP client per channel, bounded by the attempt timeout.
pub(crate) fn http_client(channel_timeout: Duration) -> Result<reqwest::Client, AlertsError> {
    reqwest::Client::builder()
        .timeout(channel_timeout)
        .user_agent(concat!("mailherd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| AlertsError::Http(error.to_string()))
}

/// Sends `request` and turns anything but a 2xx into an error. The URL is
/// stripped from transport errors: some (Telegram's) hold a token.
pub(crate) async fn send_checked(
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, DeliveryError> {
    let response = request
        .send()
        .await
        .map_err(|error| DeliveryError::Transport(error.without_url().to_string()))?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let mut body = response.text().await.unwrap_or_default();
    body.truncate(200);
    Err(DeliveryError::Status {
        status: status.as_u16(),
        body,
    })
}
