//! E-mail through an external SMTP relay (lettre): STARTTLS on or off,
//! optional login with the password from a file.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use mailherd_config::ChannelSection;

use super::{read_secret, Channel, DeliveryError};
use crate::{Alert, AlertsError};

pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl Email {
    pub fn new(section: &ChannelSection, timeout: Duration) -> Result<Email, AlertsError> {
        let problem = |message: String| AlertsError::Channel {
            channel: section.name.clone(),
            message,
        };
        let host = section
            .host
            .clone()
            .ok_or_else(|| problem("missing host".into()))?;
        let parse = |text: &str| {
            text.parse::<Mailbox>()
                .map_err(|error| problem(format!("`{text}` is not a mail address: {error}")))
        };
        let from = parse(section.from.as_deref().unwrap_or_default())?;
        let to = section
            .to
            .iter()
            .flatten()
            .map(|text| parse(text))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = if section.starttls.unwrap_or(true) {
            let parameters = TlsParameters::new(host.clone())
                .map_err(|error| problem(format!("TLS setup: {error}")))?;
            Tls::Required(parameters)
        } else {
            Tls::None
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(
                section
                    .port
                    .unwrap_or(mailherd_config::alerts::DEFAULT_SMTP_PORT),
            )
            .tls(tls)
            .timeout(Some(timeout));
        if let (Some(username), Some(path)) = (&section.username, &section.password_file) {
            let password = read_secret(&section.name, path)?;
            builder = builder.credentials(Credentials::new(username.clone(), password));
        }
        Ok(Email {
            transport: builder.build(),
            from,
            to,
        })
    }
}

impl Channel for Email {
    async fn deliver(&self, alert: &Alert) -> Result<(), DeliveryError> {
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(alert.title())
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .body(alert.text())
            .map_err(|error| DeliveryError::Smtp(format!("building the message: {error}")))?;
        self.transport
            .send(message)
            .await
            .map_err(|error| DeliveryError::Smtp(error.to_string()))?;
        Ok(())
    }
}
