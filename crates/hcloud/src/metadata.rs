//! The metadata service: how a server learns its own id, so a node's
//! config need not repeat what Hetzner already knows.
//!
//! It answers plain text on a link-local address, without a token. The
//! simulator serves the same path (see `mailherd-hcloud-sim`).

use std::time::Duration;

use reqwest::Method;

use crate::{Error, Result};

/// The metadata service of a Hetzner Cloud server.
pub const DEFAULT_METADATA_URL: &str = "http://169.254.169.254";

const INSTANCE_ID_PATH: &str = "/hetzner/v1/metadata/instance-id";

/// The service is on the local link: if it has not answered in this long
/// it is not there (not a Hetzner server, or a broken route).
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// This server's id, from `{base_url}/hetzner/v1/metadata/instance-id`;
/// `base_url` is [`DEFAULT_METADATA_URL`] on a real server.
pub async fn metadata_instance_id(base_url: &str) -> Result<u64> {
    let method = Method::GET;
    let path = INSTANCE_ID_PATH.to_string();
    let transport = |error: reqwest::Error| Error::Transport {
        method: Method::GET,
        path: path.clone(),
        timed_out: error.is_timeout(),
        reason: error.without_url().to_string(),
        attempts: 1,
    };
    // The metadata service is never reached through a proxy.
    let http = reqwest::Client::builder()
        .timeout(METADATA_TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|error| Error::Config {
            reason: format!("cannot set up the HTTP client: {error}"),
        })?;
    let url = format!("{}{INSTANCE_ID_PATH}", base_url.trim_end_matches('/'));
    let response = http.get(url).send().await.map_err(transport)?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(transport)?;
    if status != 200 {
        return Err(Error::UnexpectedStatus {
            method,
            path,
            status,
            body: body.trim().chars().take(200).collect(),
            attempts: 1,
        });
    }
    body.trim().parse().map_err(|_| Error::Decode {
        method,
        path,
        reason: format!("{:?} is not a server id", body.trim()),
    })
}
