//! Probes against tiny scripted servers on 127.0.0.1.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mailherd_config::{CheckKind, CheckSection};
use mailherd_probes::{probe, ProbeResult};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One step of a scripted server's side of the dialogue.
#[derive(Clone, Copy)]
enum Step {
    /// Write these bytes.
    Send(&'static str),
    /// Read one line and record it.
    Receive,
    /// Say nothing for a long time (longer than any probe timeout here).
    Silence,
}

/// Serves one connection by `script`; the handle yields the lines received.
async fn scripted_server(script: Vec<Step>) -> (SocketAddr, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut stream = BufReader::new(stream);
        let mut received = Vec::new();
        for step in script {
            match step {
                Step::Send(text) => {
                    if stream.get_mut().write_all(text.as_bytes()).await.is_err() {
                        break;
                    }
                }
                Step::Receive => {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        break;
                    }
                    received.push(line.trim_end().to_string());
                }
                Step::Silence => tokio::time::sleep(Duration::from_secs(30)).await,
            }
        }
        received
    });
    (address, server)
}

fn check(kind: CheckKind, address: SocketAddr, timeout_ms: u64) -> CheckSection {
    CheckSection {
        name: "test".to_string(),
        kind,
        address,
        interval_ms: 200,
        timeout_ms,
        fall: 2,
        rise: 1,
        critical: true,
        ehlo_name: None,
    }
}

/// An address on which nothing listens: bound once, then released.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn assert_failed(result: &ProbeResult, expected_detail: &str) {
    assert!(!result.ok, "probe passed: {result:?}");
    assert!(
        result.detail.contains(expected_detail),
        "detail {:?} lacks {expected_detail:?}",
        result.detail
    );
}

const GOOD_SMTP: [Step; 5] = [
    Step::Send("220-n1.lab.test ESMTP Postfix\r\n220 ready for you\r\n"),
    Step::Receive,
    Step::Send("250-n1.lab.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n"),
    Step::Receive,
    Step::Send("221 2.0.0 Bye\r\n"),
];

#[tokio::test]
async fn smtp_passes_on_multi_line_banner_and_ehlo_reply_then_quits() {
    let (address, server) = scripted_server(GOOD_SMTP.to_vec()).await;
    let result = probe(&check(CheckKind::Smtp, address, 1_000)).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.detail, "220-n1.lab.test ESMTP Postfix");
    assert!(result.latency_ms < 1_000);
    assert_eq!(server.await.unwrap(), vec!["EHLO mailherd-probe", "QUIT"]);
}

#[tokio::test]
async fn smtp_sends_the_configured_ehlo_name() {
    let (address, server) = scripted_server(GOOD_SMTP.to_vec()).await;
    let mut smtp = check(CheckKind::Smtp, address, 1_000);
    smtp.ehlo_name = Some("n2.lab.test".to_string());
    let result = probe(&smtp).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(server.await.unwrap()[0], "EHLO n2.lab.test");
}

#[tokio::test]
async fn smtp_fails_on_a_554_banner() {
    let (address, _server) = scripted_server(vec![Step::Send(
        "554 5.3.2 n1.lab.test not accepting mail\r\n",
    )])
    .await;
    let result = probe(&check(CheckKind::Smtp, address, 1_000)).await;
    assert_failed(
        &result,
        "unexpected banner: 554 5.3.2 n1.lab.test not accepting mail",
    );
}

#[tokio::test]
async fn smtp_fails_when_ehlo_is_rejected() {
    let (address, _server) = scripted_server(vec![
        Step::Send("220 n1.lab.test ESMTP\r\n"),
        Step::Receive,
        Step::Send("502 5.5.2 command not recognized\r\n"),
    ])
    .await;
    let result = probe(&check(CheckKind::Smtp, address, 1_000)).await;
    assert_failed(&result, "EHLO rejected: 502 5.5.2");
}

#[tokio::test]
async fn smtp_fails_on_a_malformed_banner() {
    let (address, _server) = scripted_server(vec![Step::Send("hello there\r\n")]).await;
    let result = probe(&check(CheckKind::Smtp, address, 1_000)).await;
    assert_failed(&result, "malformed banner: hello there");
}

#[tokio::test]
async fn smtp_fails_when_a_multi_line_banner_changes_code() {
    let (address, _server) =
        scripted_server(vec![Step::Send("220-n1.lab.test\r\n421 going away\r\n")]).await;
    let result = probe(&check(CheckKind::Smtp, address, 1_000)).await;
    assert_failed(&result, "malformed banner: 421 going away");
}

#[tokio::test]
async fn smtp_times_out_within_the_check_timeout_on_a_silent_server() {
    let (address, _server) = scripted_server(vec![Step::Silence]).await;
    let started = Instant::now();
    let result = probe(&check(CheckKind::Smtp, address, 300)).await;
    let took = started.elapsed();
    assert_failed(&result, "timed out after 300 ms waiting for banner");
    assert!(took >= Duration::from_millis(300), "gave up after {took:?}");
    assert!(
        took < Duration::from_millis(1_500),
        "took {took:?} for a 300 ms timeout"
    );
    assert!(result.latency_ms >= 300);
}

#[tokio::test]
async fn smtp_times_out_on_a_server_that_stalls_after_the_banner() {
    let (address, _server) =
        scripted_server(vec![Step::Send("220 n1.lab.test ESMTP\r\n"), Step::Silence]).await;
    let started = Instant::now();
    let result = probe(&check(CheckKind::Smtp, address, 300)).await;
    assert_failed(&result, "waiting for EHLO reply");
    assert!(started.elapsed() < Duration::from_millis(1_500));
}

#[tokio::test]
async fn smtp_fails_when_the_server_hangs_up() {
    let (address, _server) = scripted_server(vec![]).await;
    let result = probe(&check(CheckKind::Smtp, address, 1_000)).await;
    assert_failed(&result, "connection closed before banner");
}

#[tokio::test]
async fn smtp_fails_at_once_on_a_closed_port() {
    let address = closed_port().await;
    let started = Instant::now();
    let result = probe(&check(CheckKind::Smtp, address, 2_000)).await;
    assert_eq!(result.detail, "connect refused");
    assert!(!result.ok);
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn tcp_passes_on_an_open_port_and_fails_on_a_closed_one() {
    let (address, _server) = scripted_server(vec![Step::Silence]).await;
    let result = probe(&check(CheckKind::Tcp, address, 1_000)).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.detail, format!("connected to {address}"));

    let result = probe(&check(CheckKind::Tcp, closed_port().await, 1_000)).await;
    assert_failed(&result, "connect refused");
}

#[tokio::test]
async fn imap_passes_on_an_ok_greeting_then_logs_out() {
    let (address, server) = scripted_server(vec![
        Step::Send("* OK [CAPABILITY IMAP4rev1 LITERAL+ STARTTLS] Dovecot ready.\r\n"),
        Step::Receive,
        Step::Send("* BYE Logging out\r\na1 OK Logout completed.\r\n"),
    ])
    .await;
    let result = probe(&check(CheckKind::Imap, address, 1_000)).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(
        result.detail,
        "* OK [CAPABILITY IMAP4rev1 LITERAL+ STARTTLS] Dovecot ready."
    );
    assert_eq!(server.await.unwrap(), vec!["a1 LOGOUT"]);
}

#[tokio::test]
async fn imap_fails_on_a_bye_greeting() {
    let (address, _server) =
        scripted_server(vec![Step::Send("* BYE Too many connections\r\n")]).await;
    let result = probe(&check(CheckKind::Imap, address, 1_000)).await;
    assert_failed(&result, "unexpected greeting: * BYE Too many connections");
}

#[tokio::test]
async fn imap_times_out_within_the_check_timeout_on_a_silent_server() {
    let (address, _server) = scripted_server(vec![Step::Silence]).await;
    let started = Instant::now();
    let result = probe(&check(CheckKind::Imap, address, 300)).await;
    assert_failed(&result, "timed out after 300 ms waiting for greeting");
    assert!(started.elapsed() < Duration::from_millis(1_500));
}

#[tokio::test]
async fn a_passed_probe_does_not_wait_out_the_timeout_for_a_goodbye() {
    // The server never answers QUIT: the verdict is already known, so the
    // probe returns after a short grace, not after the whole timeout.
    let (address, _server) = scripted_server(vec![
        Step::Send("220 n1.lab.test ESMTP\r\n"),
        Step::Receive,
        Step::Send("250 n1.lab.test\r\n"),
        Step::Silence,
    ])
    .await;
    let started = Instant::now();
    let result = probe(&check(CheckKind::Smtp, address, 5_000)).await;
    assert!(result.ok, "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}
