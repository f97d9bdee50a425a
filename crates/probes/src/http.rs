//! The http(s) probe: one `GET path` on a fresh connection, without
//! redirects or proxies, passing on the expected status and, when asked,
//! a text in the body.

use std::io::ErrorKind;

use mailherd_config::{CheckKind, CheckSection, DEFAULT_HTTP_PATH, DEFAULT_HTTP_STATUS};
use tokio::time::Instant;

use crate::{error_chain, timed_out, tls, Verdict};

/// Most body bytes searched for `expect_body`; a page of webmail is far
/// below, and a probe must not download a mailbox export.
const MAX_BODY_BYTES: usize = 1 << 20;

pub(crate) async fn probe(check: &CheckSection, deadline: Instant) -> Result<Verdict, String> {
    let address = check
        .address
        .ok_or_else(|| "no address configured".to_string())?;
    let https = check.kind == CheckKind::Https;
    let path = check.path.as_deref().unwrap_or(DEFAULT_HTTP_PATH);
    let expected_status = check.expect_status.unwrap_or(DEFAULT_HTTP_STATUS);

    let mut builder = reqwest::Client::builder()
        // What is probed is this server, not what it redirects to, nor a
        // proxy from the environment.
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        // One attempt, one fresh connection: a pooled one would hide a
        // server that no longer accepts.
        .pool_max_idle_per_host(0)
        .user_agent(concat!("mailherd-probe/", env!("CARGO_PKG_VERSION")));
    // The URL carries the server's name (Host, SNI, certificate check) and
    // the connection goes to the configured address all the same.
    let host = match &check.server_name {
        Some(name) if !tls::is_ip(name) => {
            builder = builder.resolve(name, address);
            name.clone()
        }
        _ => match address {
            std::net::SocketAddr::V4(v4) => v4.ip().to_string(),
            std::net::SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        },
    };
    // Also for plain http: reqwest would otherwise load the system's roots
    // at every build; the shared configuration has them loaded once.
    let config = tls::client_config(check)?;
    builder = builder.tls_backend_preconfigured((*config).clone());
    let client = builder
        .build()
        .map_err(|error| format!("HTTP client setup: {}", error_chain(&error)))?;
    let scheme = if https { "https" } else { "http" };
    let url = format!("{scheme}://{host}:{}{path}", address.port());

    let exchange = async {
        let mut response = client.get(&url).send().await.map_err(describe)?;
        let status = response.status();
        if status.as_u16() != expected_status {
            return Err(format!(
                "GET {path} answered {status}, expected {expected_status}"
            ));
        }
        let Some(keyword) = &check.expect_body else {
            return Ok(format!("GET {path} answered {status}"));
        };
        let keyword = keyword.as_bytes();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            // Only the new bytes, and the keyword's length before them, can
            // hold a match not already looked for.
            let from = body.len().saturating_sub(keyword.len().saturating_sub(1));
            body.extend_from_slice(&chunk[..chunk.len().min(MAX_BODY_BYTES - body.len())]);
            if contains(&body[from..], keyword) {
                return Ok(format!(
                    "GET {path} answered {status} with {:?}",
                    String::from_utf8_lossy(keyword)
                ));
            }
            if body.len() >= MAX_BODY_BYTES {
                break;
            }
        }
        Err(format!(
            "GET {path} answered {status} but the body ({} bytes read) lacks {:?}",
            body.len(),
            String::from_utf8_lossy(keyword)
        ))
    };
    let detail = tokio::time::timeout_at(deadline, exchange)
        .await
        .map_err(|_| timed_out(check.timeout_ms, &format!("GET {path}")))??;
    Ok(Verdict {
        detail,
        goodbye: None,
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// A reqwest error as an operator reads it: "connect refused" as the other
/// probes say it, else the chain of causes (which names TLS problems).
fn describe(error: reqwest::Error) -> String {
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == ErrorKind::ConnectionRefused {
                return "connect refused".to_string();
            }
        }
        source = cause.source();
    }
    error_chain(&error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_needle_in_bytes() {
        assert!(contains(b"<title>SOGo</title>", b"SOGo"));
        assert!(!contains(b"<title>SOG", b"SOGo"));
        assert!(contains(b"anything", b""));
    }
}
