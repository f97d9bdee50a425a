//! http against an axum server on loopback; https against a small TLS
//! responder with the test CA's certificate.

use super::*;

use axum::http::{HeaderMap, StatusCode};
use axum::response::Redirect;
use axum::routing::get;
use axum::Router;
use tokio::io::AsyncReadExt;

async fn axum_server() -> SocketAddr {
    let app =
        Router::new()
            .route("/", get(|| async { "<title>mailherd webmail</title>" }))
            .route(
                "/down",
                get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "maintenance") }),
            )
            .route("/moved", get(|| async { Redirect::temporary("/") }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .route(
                "/host",
                get(|headers: HeaderMap| async move {
                    format!("host={:?}", headers.get("host").unwrap())
                }),
            )
            .route(
                "/big",
                get(|| async { format!("{}needle", "x".repeat(2 << 20)) }),
            );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

fn http(address: SocketAddr, path: &str) -> CheckSection {
    CheckSection {
        path: Some(path.to_string()),
        ..check(CheckKind::Http, address, 1_000)
    }
}

#[tokio::test]
async fn http_passes_on_the_expected_status_and_body_text() {
    let address = axum_server().await;
    let result = probe(&http(address, "/")).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.detail, "GET / answered 200 OK");

    let mut keyword = http(address, "/");
    keyword.expect_body = Some("webmail".to_string());
    let result = probe(&keyword).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.detail, "GET / answered 200 OK with \"webmail\"");

    // Uptime Kuma's keyword match is case-sensitive; so is this one.
    keyword.expect_body = Some("WEBMAIL".to_string());
    let result = probe(&keyword).await;
    assert_failed(&result, "but the body (31 bytes read) lacks \"WEBMAIL\"");
}

#[tokio::test]
async fn http_fails_on_another_status_and_does_not_follow_redirects() {
    let address = axum_server().await;
    let result = probe(&http(address, "/down")).await;
    assert_failed(
        &result,
        "GET /down answered 503 Service Unavailable, expected 200",
    );

    let mut down = http(address, "/down");
    down.expect_status = Some(503);
    assert!(probe(&down).await.ok);

    let result = probe(&http(address, "/moved")).await;
    assert_failed(&result, "GET /moved answered 307 Temporary Redirect");

    let result = probe(&http(address, "/absent")).await;
    assert_failed(&result, "answered 404 Not Found");
}

#[tokio::test]
async fn http_sends_the_server_name_as_host_and_connects_to_the_address() {
    let address = axum_server().await;
    let mut named = http(address, "/host");
    named.server_name = Some("mail.lab.test".to_string());
    named.expect_body = Some(format!("host=\"mail.lab.test:{}\"", address.port()));
    let result = probe(&named).await;
    assert!(result.ok, "{result:?}");
}

#[tokio::test]
async fn http_searches_a_bounded_part_of_a_big_body() {
    let address = axum_server().await;
    let mut big = http(address, "/big");
    big.timeout_ms = 5_000;
    big.expect_body = Some("needle".to_string());
    let result = probe(&big).await;
    assert_failed(
        &result,
        "but the body (1048576 bytes read) lacks \"needle\"",
    );
}

#[tokio::test]
async fn http_times_out_on_a_slow_answer_and_fails_on_a_closed_port() {
    let address = axum_server().await;
    let mut slow = http(address, "/slow");
    slow.timeout_ms = 300;
    let started = Instant::now();
    let result = probe(&slow).await;
    assert_failed(&result, "timed out after 300 ms waiting for GET /slow");
    assert!(started.elapsed() < Duration::from_millis(1_500));

    let result = probe(&http(closed_port().await, "/")).await;
    assert_eq!(result.detail, "connect refused");
    assert!(!result.ok);
}

/// Answers each connection's request with `200` and a body naming the
/// request line and Host, over TLS with the test certificate.
async fn https_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(mut tls) = test_tls().acceptor.accept(stream).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request);
                let body = format!(
                    "{} host={}",
                    request.lines().next().unwrap_or_default(),
                    request
                        .lines()
                        .find_map(|line| line.strip_prefix("host: "))
                        .unwrap_or("?")
                );
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    address
}

fn https(address: SocketAddr) -> CheckSection {
    CheckSection {
        path: Some("/SOGo/".to_string()),
        ..check(CheckKind::Https, address, 2_000)
    }
}

#[tokio::test]
async fn https_verifies_the_certificate_unless_told_not_to() {
    let address = https_server().await;
    // The system's roots do not know the test CA.
    let result = probe(&https(address)).await;
    assert_failed(&result, "certificate");

    let mut unverified = https(address);
    unverified.tls_verify = Some(false);
    unverified.expect_body = Some("GET /SOGo/ HTTP/1.1".to_string());
    let result = probe(&unverified).await;
    assert!(result.ok, "{result:?}");

    let mut with_ca = https(address);
    with_ca.tls_ca_file = Some(test_tls().ca_file.clone());
    let result = probe(&with_ca).await;
    assert!(result.ok, "{result:?}");
}

#[tokio::test]
async fn https_checks_the_certificate_against_the_server_name() {
    let address = https_server().await;
    let mut named = https(address);
    named.tls_ca_file = Some(test_tls().ca_file.clone());
    named.server_name = Some("mail.lab.test".to_string());
    named.expect_body = Some(format!("host=mail.lab.test:{}", address.port()));
    let result = probe(&named).await;
    assert!(result.ok, "{result:?}");

    named.server_name = Some("other.lab.test".to_string());
    named.expect_body = None;
    let result = probe(&named).await;
    assert_failed(&result, "certificate");
    assert!(
        result
            .detail
            .contains("not valid for name \"other.lab.test\""),
        "{result:?}"
    );
}
