//! A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat):
//! `{"text": ...}`.

use std::time::Duration;

use super::{http_client, send_checked, Channel, DeliveryError};
use crate::{Alert, AlertsError};

pub struct Slack {
    client: reqwest::Client,
    url: String,
}

impl Slack {
    pub fn new(url: String, timeout: Duration) -> Result<Slack, AlertsError> {
        Ok(Slack {
            client: http_client(timeout)?,
            url,
        })
    }
}

impl Channel for Slack {
    async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let text = format!("*{}*\n{}", alert.title(), alert.text());
        let body = serde_json::json!({ "text": text });
        send_checked(self.client.post(&self.url).json(&body)).await?;
        Ok(())
    }
}
