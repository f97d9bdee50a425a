//! The generic webhook: the alert as JSON, POSTed to a URL.

use std::time::Duration;

use super::{http_client, send_checked, Channel, DeliveryError};
use crate::{Alert, AlertsError};

pub struct Webhook {
    client: reqwest::Client,
    url: String,
}

impl Webhook {
    pub fn new(url: String, timeout: Duration) -> Result<Webhook, AlertsError> {
        Ok(Webhook {
            client: http_client(timeout)?,
            url,
        })
    }
}

impl Channel for Webhook {
    async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        send_checked(self.client.post(&self.url).json(alert)).await?;
        Ok(())
    }
}
