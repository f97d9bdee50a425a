//! ntfy: the alert's text POSTed to a topic URL, with `Title`, `Priority`
//! and `Tags` headers (ntfy's publish API).

use std::time::Duration;

use super::{http_client, send_checked, Channel, DeliveryError};
use crate::{Alert, AlertsError, Severity};

pub struct Ntfy {
    client: reqwest::Client,
    /// The topic URL, e.g. `https://ntfy.sh/mailherd-alerts`.
    url: String,
    /// An access token for a protected topic; never logged.
    token: Option<String>,
}

impl Ntfy {
    pub fn new(url: String, token: Option<String>, timeout: Duration) -> Result<Ntfy, AlertsError> {
        Ok(Ntfy {
            client: http_client(timeout)?,
            url,
            token,
        })
    }
}

/// ntfy's priorities: 3 default, 4 high, 5 urgent (a phone rings).
fn priority(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "3",
        Severity::Warning => "4",
        Severity::Critical => "5",
    }
}

/// Tags that ntfy shows as emoji, then the kind as plain text.
fn tags(alert: &Alert) -> String {
    let emoji = match alert.severity {
        Severity::Info => "information_source",
        Severity::Warning => "warning",
        Severity::Critical => "rotating_light",
    };
    format!("{emoji},{},{}", alert.kind.as_str(), alert.cluster)
}

/// Header values must be visible ASCII for every proxy on the way.
fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

impl Channel for Ntfy {
    async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let mut request = self
            .client
            .post(&self.url)
            .header("Title", header_text(&alert.title()))
            .header("Priority", priority(alert.severity))
            .header("Tags", header_text(&tags(alert)))
            .body(alert.text());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        send_checked(request).await?;
        Ok(())
    }
}
