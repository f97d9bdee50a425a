//! The token: read from a file, refused with a clear error, and never
//! printed — not by `Debug`, not by `Display`, not in any error.

mod common;

use std::time::Duration;

use common::*;
use mailherd_hcloud::{Client, ClientConfig, Error, ErrorCode, Token, TokenError};
use mailherd_hcloud_sim::Fault;

#[test]
fn a_token_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hcloud-token");
    std::fs::write(&path, "  from-the-file-7b2e\n").unwrap();
    let token = Token::from_file(&path).unwrap();
    assert_eq!(token.expose_secret(), "from-the-file-7b2e");
}

#[test]
fn a_missing_or_empty_token_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-token");
    let error = Token::from_file(&missing).unwrap_err();
    assert!(matches!(error, TokenError::Unreadable { .. }), "{error:?}");
    assert!(
        error.to_string().starts_with(&format!(
            "cannot read the hcloud token file {}: ",
            missing.display()
        )),
        "{error}"
    );

    let empty = dir.path().join("empty-token");
    std::fs::write(&empty, "\n \n").unwrap();
    let error = Token::from_file(&empty).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("the hcloud token file {} is empty", empty.display())
    );

    // Through the client's error type, as a caller using `?` sees it.
    let error: Error = Token::from_file(&missing).unwrap_err().into();
    assert!(error.to_string().contains("no-such-token"), "{error}");
}

/// Every way an error can come about, printed both ways, and never the
/// token: a 401 (the token is what is wrong), an API error, a give-up
/// after retries, a decode, a transport failure, a timeout.
#[tokio::test]
async fn the_token_never_appears_in_errors_or_debug_output() {
    let cloud = start().await;
    let wrong_secret = "wrong-secret-d41d8cd98f";
    let mut printed = Vec::new();

    let wrong = Client::new(ClientConfig {
        token: Token::new(wrong_secret).unwrap(),
        ..client_config(&cloud.sim)
    })
    .unwrap();
    let error = wrong.server(N1).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Unauthorized));
    assert_eq!(error.api_error().unwrap().status, 401);
    printed.push(format!("{error} {error:?} {wrong:?}"));

    let client = client(&cloud.sim);
    printed.push(format!("{client:?} {:?}", client.config()));
    for fault in [
        Fault::http("/v1/servers/2", 502, "bad_gateway", 100),
        Fault::bare_status("/v1/servers/2", 504, 100),
        Fault::http("/v1/servers/2", 429, "rate_limit_exceeded", 100),
        Fault::http("/v1/servers/2", 400, "invalid_input", 1),
    ] {
        cloud.sim.clear_faults();
        cloud.sim.inject(fault);
        let error = client.server(N2).await.unwrap_err();
        printed.push(format!("{error} {error:?}"));
    }
    cloud.sim.clear_faults();

    let short = Client::new(ClientConfig {
        request_timeout: Duration::from_millis(100),
        ..client_config(&cloud.sim)
    })
    .unwrap();
    cloud.sim.inject(Fault::timeout("/v1/servers/1", 1));
    let error = short.server(N1).await.unwrap_err();
    printed.push(format!("{error} {error:?}"));

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let unreachable = Client::new(
        ClientConfig::new(Token::new(TOKEN).unwrap()).with_base_url(format!("http://{closed}/v1")),
    )
    .unwrap();
    let error = unreachable.server(N1).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Transport {
                timed_out: false,
                ..
            }
        ),
        "{error:?}"
    );
    printed.push(format!("{error} {error:?}"));

    let error = Client::new(
        ClientConfig::new(Token::new(TOKEN).unwrap()).with_base_url("ftp://example.invalid"),
    )
    .unwrap_err();
    printed.push(format!("{error} {error:?}"));

    for text in &printed {
        assert!(!text.contains(TOKEN), "token printed: {text}");
        assert!(!text.contains(wrong_secret), "token printed: {text}");
    }
}
