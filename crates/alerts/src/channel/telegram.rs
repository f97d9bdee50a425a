//! Telegram: the Bot API's `sendMessage` (`POST {api}/bot<token>/sendMessage`
//! with `chat_id` and `text`). The token is part of the URL, so the URL is
//! never logged and transport errors are stripped of it.

use std::time::Duration;

use serde::Deserialize;

use super::{http_client, send_checked, Channel, DeliveryError};
use crate::{Alert, AlertsError};

pub struct Telegram {
    client: reqwest::Client,
    /// `{api_url}/bot{token}/sendMessage`: holds the token.
    send_message_url: String,
    chat_id: String,
}

impl Telegram {
    pub fn new(
        api_url: String,
        chat_id: String,
        token: String,
        timeout: Duration,
    ) -> Result<Telegram, AlertsError> {
        Ok(Telegram {
            client: http_client(timeout)?,
            send_message_url: format!("{}/bot{token}/sendMessage", api_url.trim_end_matches('/')),
            chat_id,
        })
    }
}

/// The Bot API's answer: `{"ok": true, "result": ...}` or
/// `{"ok": false, "description": ...}`.
#[derive(Deserialize)]
struct BotAnswer {
    ok: bool,
    #[serde(default)]
    description: Option<String>,
}

impl Channel for Telegram {
    async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let body = serde_json::json!({
            "chat_id": self.chat_id,
            "text": alert.text(),
            "disable_web_page_preview": true,
        });
        let response = send_checked(self.client.post(&self.send_message_url).json(&body)).await?;
        let answer: BotAnswer = response.json().await.map_err(|error| {
            DeliveryError::Refused(format!("unreadable answer: {}", error.without_url()))
        })?;
        if answer.ok {
            Ok(())
        } else {
            Err(DeliveryError::Refused(
                answer.description.unwrap_or_else(|| "ok: false".into()),
            ))
        }
    }
}
