//! Probes against real or tiny scripted servers on 127.0.0.1, and against
//! local resources the tests make (a tmpfs, a queue directory, a
//! container, a mariadbd, a Postfix and a Dovecot of their own).
//!
//! # Layout
//! - this file: the scripted line server (plain, STARTTLS, implicit TLS),
//!   the test certificates, helpers, and the tcp/smtp/imap basics;
//! - `probes/mail.rs`: STARTTLS, TLS, the SMTP test message, IMAP and POP3
//!   logins, dialogue edge cases;
//! - `probes/http.rs`: http against axum, https against a TLS responder;
//! - `probes/local.rs`: mount, postfix_queue, systemd;
//! - `probes/docker.rs`: containers of the local Docker Engine;
//! - `probes/mariadb.rs`: refused, silent and (when installed) real mariadbd;
//! - `probes/real_mail.rs`: smtp, imap and pop3 against a real Postfix and
//!   Dovecot of the test's own (private mount namespace, loopback, needs
//!   root and scripts/install-deps.sh).

// The crate root is this file, so the modules' paths are spelled out.
#[path = "probes/docker.rs"]
mod docker;
#[path = "probes/http.rs"]
mod http;
#[path = "probes/local.rs"]
mod local;
#[path = "probes/mail.rs"]
mod mail;
#[path = "probes/mariadb.rs"]
mod mariadb;
#[path = "probes/real_mail.rs"]
mod real_mail;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mailherd_config::{CheckKind, CheckSection};
use mailherd_probes::{probe, ProbeResult};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// One step of a scripted server's side of the dialogue.
#[derive(Clone, Copy)]
enum Step {
    /// Write these bytes.
    Send(&'static str),
    /// Read one line and record it.
    Receive,
    /// Say nothing for a long time (longer than any probe timeout here).
    Silence,
    /// Accept a TLS handshake on the connection (after STARTTLS).
    StartTls,
}

/// What a scripted server's connection is: TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The test PKI: a CA, and a server certificate it signed for
/// `mail.lab.test` and 127.0.0.1. Made once per test run.
struct TestTls {
    acceptor: TlsAcceptor,
    /// The CA certificate (PEM), for `tls_ca_file`.
    ca_file: PathBuf,
    /// The server certificate and its private key (PEM), for real servers
    /// (`probes/real_mail.rs`), which read them from files.
    cert_file: PathBuf,
    key_file: PathBuf,
    _dir: tempfile::TempDir,
}

fn test_tls() -> &'static TestTls {
    static TLS: OnceLock<TestTls> = OnceLock::new();
    TLS.get_or_init(|| {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).unwrap();

        let mut params = CertificateParams::new(vec!["mail.lab.test".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let cert_file = dir.path().join("cert.pem");
        std::fs::write(&cert_file, cert.pem()).unwrap();
        let key_file = dir.path().join("key.pem");
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        TestTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            ca_file,
            cert_file,
            key_file,
            _dir: dir,
        }
    })
}

/// Serves one connection by `script`; the handle yields the lines received.
async fn scripted_server(script: Vec<Step>) -> (SocketAddr, JoinHandle<Vec<String>>) {
    serve(script, false).await
}

/// As [`scripted_server`], with TLS from the first byte (SMTPS, IMAPS).
async fn scripted_tls_server(script: Vec<Step>) -> (SocketAddr, JoinHandle<Vec<String>>) {
    serve(script, true).await
}

async fn serve(script: Vec<Step>, implicit_tls: bool) -> (SocketAddr, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut received = Vec::new();
        let (stream, _) = listener.accept().await.unwrap();
        let stream: Box<dyn Io> = if implicit_tls {
            match test_tls().acceptor.accept(stream).await {
                Ok(stream) => Box::new(stream),
                // The client refused the certificate.
                Err(_) => return received,
            }
        } else {
            Box::new(stream)
        };
        let mut stream = BufReader::new(stream);
        for step in script {
            match step {
                Step::Send(text) => {
                    if stream.get_mut().write_all(text.as_bytes()).await.is_err() {
                        break;
                    }
                    let _ = stream.get_mut().flush().await;
                }
                Step::Receive => {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        break;
                    }
                    received.push(line.trim_end().to_string());
                }
                Step::Silence => tokio::time::sleep(Duration::from_secs(30)).await,
                Step::StartTls => match test_tls().acceptor.accept(stream.into_inner()).await {
                    Ok(tls) => stream = BufReader::new(Box::new(tls) as Box<dyn Io>),
                    Err(_) => {
                        received.push("(TLS handshake failed)".to_string());
                        break;
                    }
                },
            }
        }
        received
    });
    (address, server)
}

fn check(kind: CheckKind, address: SocketAddr, timeout_ms: u64) -> CheckSection {
    CheckSection {
        address: Some(address),
        timeout_ms,
        ..CheckSection::new("test", kind)
    }
}

/// A check of a kind without an address (docker, mount, ...).
fn local_check(kind: CheckKind, timeout_ms: u64) -> CheckSection {
    CheckSection {
        timeout_ms,
        ..CheckSection::new("test", kind)
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
async fn imap_passes_on_an_ok_greeting_and_capability_then_logs_out() {
    let (address, server) = scripted_server(vec![
        Step::Send("* OK [CAPABILITY IMAP4rev1 LITERAL+ STARTTLS] Dovecot ready.\r\n"),
        Step::Receive,
        Step::Send(
            "* CAPABILITY IMAP4rev1 LITERAL+ STARTTLS\r\na1 OK Pre-login capabilities listed.\r\n",
        ),
        Step::Receive,
        Step::Send("* BYE Logging out\r\na2 OK Logout completed.\r\n"),
    ])
    .await;
    let result = probe(&check(CheckKind::Imap, address, 1_000)).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(
        result.detail,
        "* OK [CAPABILITY IMAP4rev1 LITERAL+ STARTTLS] Dovecot ready."
    );
    assert_eq!(server.await.unwrap(), vec!["a1 CAPABILITY", "a2 LOGOUT"]);
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

#[tokio::test]
async fn every_kind_answers_even_without_its_keys() {
    // Validation refuses such checks; a probe handed one anyway still
    // answers with a failed result, promptly, rather than panicking.
    for kind in [
        CheckKind::Tcp,
        CheckKind::Smtp,
        CheckKind::Imap,
        CheckKind::Pop3,
        CheckKind::Http,
        CheckKind::Https,
        CheckKind::Docker,
        CheckKind::Systemd,
        CheckKind::Mariadb,
        CheckKind::MariadbReplication,
        CheckKind::Mount,
        CheckKind::PostfixQueue,
    ] {
        let started = Instant::now();
        let result = probe(&local_check(kind, 1_000)).await;
        assert!(!result.ok, "{kind:?}: {result:?}");
        assert!(
            result.detail.starts_with("no ") && result.detail.ends_with(" configured"),
            "{kind:?}: {result:?}"
        );
        assert!(started.elapsed() < Duration::from_millis(500), "{kind:?}");
    }
}
