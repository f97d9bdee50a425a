//! SMTP, IMAP and POP3 beyond the basics: STARTTLS and TLS (verified
//! against the test CA, unverified, refused), the SMTP test message,
//! logins, and servers that misbehave.

use super::*;

const BANNER: Step = Step::Send("220 n1.lab.test ESMTP\r\n");
const EHLO_WITH_STARTTLS: Step =
    Step::Send("250-n1.lab.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n");
const EHLO_OVER_TLS: Step = Step::Send("250-n1.lab.test\r\n250 8BITMIME\r\n");

fn smtp_starttls(address: SocketAddr) -> CheckSection {
    CheckSection {
        starttls: Some(true),
        tls_ca_file: Some(test_tls().ca_file.clone()),
        ..check(CheckKind::Smtp, address, 2_000)
    }
}

/// A server that offers STARTTLS and completes the upgrade.
fn starttls_script() -> Vec<Step> {
    vec![
        BANNER,
        Step::Receive,
        EHLO_WITH_STARTTLS,
        Step::Receive,
        Step::Send("220 2.0.0 Ready to start TLS\r\n"),
        Step::StartTls,
        Step::Receive,
        EHLO_OVER_TLS,
        Step::Receive,
        Step::Send("221 2.0.0 Bye\r\n"),
    ]
}

#[tokio::test]
async fn smtp_starttls_verified_against_the_ca_file_passes_and_ehlos_again() {
    let (address, server) = scripted_server(starttls_script()).await;
    let result = probe(&smtp_starttls(address)).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.detail, "220 n1.lab.test ESMTP");
    assert_eq!(
        server.await.unwrap(),
        vec![
            "EHLO mailherd-probe",
            "STARTTLS",
            "EHLO mailherd-probe",
            "QUIT"
        ]
    );
}

#[tokio::test]
async fn smtp_starttls_checks_the_configured_server_name() {
    // The certificate names mail.lab.test: that name passes, another fails.
    let (address, _server) = scripted_server(starttls_script()).await;
    let mut smtp = smtp_starttls(address);
    smtp.server_name = Some("mail.lab.test".to_string());
    let result = probe(&smtp).await;
    assert!(result.ok, "{result:?}");

    let (address, _server) = scripted_server(starttls_script()).await;
    let mut smtp = smtp_starttls(address);
    smtp.server_name = Some("other.lab.test".to_string());
    let result = probe(&smtp).await;
    assert_failed(&result, "TLS handshake: invalid peer certificate");
    assert!(
        result
            .detail
            .contains("not valid for name \"other.lab.test\""),
        "{result:?}"
    );
}

#[tokio::test]
async fn smtp_starttls_fails_on_an_untrusted_certificate_unless_told_not_to_verify() {
    // System roots do not know the test CA.
    let (address, _server) = scripted_server(starttls_script()).await;
    let mut smtp = smtp_starttls(address);
    smtp.tls_ca_file = None;
    let result = probe(&smtp).await;
    assert_failed(&result, "TLS handshake: invalid peer certificate");

    // `tls_verify = false`: a lab's self-signed certificate passes.
    let (address, server) = scripted_server(starttls_script()).await;
    smtp = smtp_starttls(address);
    smtp.tls_ca_file = None;
    smtp.tls_verify = Some(false);
    let result = probe(&smtp).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(server.await.unwrap().len(), 4);
}

#[tokio::test]
async fn smtp_starttls_fails_when_not_offered_or_refused() {
    let (address, server) = scripted_server(vec![
        BANNER,
        Step::Receive,
        Step::Send("250-n1.lab.test\r\n250 PIPELINING\r\n"),
        Step::Receive,
    ])
    .await;
    let result = probe(&smtp_starttls(address)).await;
    assert_failed(&result, "does not offer STARTTLS");
    // It did not try STARTTLS anyway, nor carried on in plain text.
    assert_eq!(server.await.unwrap(), vec!["EHLO mailherd-probe"]);

    let (address, _server) = scripted_server(vec![
        BANNER,
        Step::Receive,
        EHLO_WITH_STARTTLS,
        Step::Receive,
        Step::Send("454 4.7.0 TLS not available due to local problem\r\n"),
    ])
    .await;
    let result = probe(&smtp_starttls(address)).await;
    assert_failed(&result, "STARTTLS refused: 454 4.7.0");
}

#[tokio::test]
async fn smtp_starttls_refuses_data_injected_before_the_handshake() {
    // CVE-2011-0411: a reply sent in plain text right after the "go ahead"
    // must not be taken for the first reply over TLS.
    let (address, _server) = scripted_server(vec![
        BANNER,
        Step::Receive,
        EHLO_WITH_STARTTLS,
        Step::Receive,
        Step::Send("220 2.0.0 Ready to start TLS\r\n250 injected\r\n"),
        Step::Silence,
    ])
    .await;
    let result = probe(&smtp_starttls(address)).await;
    assert_failed(&result, "sent data right after agreeing to STARTTLS");
}

#[tokio::test]
async fn smtp_over_implicit_tls_passes() {
    let (address, server) = scripted_tls_server(vec![
        BANNER,
        Step::Receive,
        EHLO_OVER_TLS,
        Step::Receive,
        Step::Send("221 2.0.0 Bye\r\n"),
    ])
    .await;
    let mut smtps = check(CheckKind::Smtp, address, 2_000);
    smtps.tls = Some(true);
    smtps.tls_ca_file = Some(test_tls().ca_file.clone());
    let result = probe(&smtps).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(server.await.unwrap(), vec!["EHLO mailherd-probe", "QUIT"]);
}

#[tokio::test]
async fn smtp_tls_against_a_plain_server_fails_within_the_timeout() {
    // A plain server sends its banner where the client expects a TLS
    // server hello.
    let (address, _server) = scripted_server(vec![BANNER, Step::Silence]).await;
    let mut smtps = check(CheckKind::Smtp, address, 500);
    smtps.tls = Some(true);
    smtps.tls_verify = Some(false);
    let started = Instant::now();
    let result = probe(&smtps).await;
    assert_failed(&result, "TLS handshake");
    assert!(started.elapsed() < Duration::from_millis(1_500));
}

fn transaction_script(rcpt_reply: &'static str) -> Vec<Step> {
    vec![
        BANNER,
        Step::Receive,
        EHLO_OVER_TLS,
        Step::Receive,
        Step::Send("250 2.1.0 Ok\r\n"),
        Step::Receive,
        Step::Send(rcpt_reply),
        Step::Receive,
        Step::Send("354 End data with <CR><LF>.<CR><LF>\r\n"),
        // The message: 6 headers, a blank line, 2 lines of text, the dot.
        Step::Receive,
        Step::Receive,
        Step::Receive,
        Step::Receive,
        Step::Receive,
        Step::Receive,
        Step::Receive,
        Step::Receive,
        Step::Receive,
        Step::Receive,
        Step::Send("250 2.0.0 Ok: queued as 4XyZ12\r\n"),
        Step::Receive,
        Step::Send("221 2.0.0 Bye\r\n"),
    ]
}

#[tokio::test]
async fn smtp_test_message_is_sent_and_must_be_queued() {
    let (address, server) = scripted_server(transaction_script("250 2.1.5 Ok\r\n")).await;
    let mut smtp = check(CheckKind::Smtp, address, 2_000);
    smtp.name = "smtp-transaction".to_string();
    smtp.test_rcpt = Some("probe@lab.test".to_string());
    smtp.test_from = Some("monitor@lab.test".to_string());
    let result = probe(&smtp).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(
        result.detail,
        "220 n1.lab.test ESMTP | test message: 250 2.0.0 Ok: queued as 4XyZ12"
    );
    let received = server.await.unwrap();
    assert_eq!(received[1], "MAIL FROM:<monitor@lab.test>");
    assert_eq!(received[2], "RCPT TO:<probe@lab.test>");
    assert_eq!(received[3], "DATA");
    assert_eq!(received[4], "From: <monitor@lab.test>");
    assert_eq!(received[5], "To: <probe@lab.test>");
    assert_eq!(received[6], "Subject: mailherd probe smtp-transaction");
    assert!(received[7].starts_with("Date: "), "{received:?}");
    assert_eq!(received[13], ".");
    assert_eq!(received[14], "QUIT");
}

#[tokio::test]
async fn smtp_test_message_defaults_to_the_mailbox_writing_to_itself() {
    let (address, server) = scripted_server(transaction_script("250 2.1.5 Ok\r\n")).await;
    let mut smtp = check(CheckKind::Smtp, address, 2_000);
    smtp.test_rcpt = Some("probe@lab.test".to_string());
    assert!(probe(&smtp).await.ok);
    assert_eq!(server.await.unwrap()[1], "MAIL FROM:<probe@lab.test>");

    let (address, server) = scripted_server(transaction_script("250 2.1.5 Ok\r\n")).await;
    smtp.address = Some(address);
    smtp.test_from = Some(String::new());
    assert!(probe(&smtp).await.ok);
    assert_eq!(server.await.unwrap()[1], "MAIL FROM:<>");
}

#[tokio::test]
async fn smtp_test_message_fails_on_a_refused_recipient() {
    let (address, _server) = scripted_server(transaction_script(
        "550 5.1.1 <probe@lab.test>: Recipient address rejected: User unknown\r\n",
    ))
    .await;
    let mut smtp = check(CheckKind::Smtp, address, 2_000);
    smtp.test_rcpt = Some("probe@lab.test".to_string());
    let result = probe(&smtp).await;
    assert_failed(&result, "RCPT TO refused: 550 5.1.1 <probe@lab.test>");
}

#[tokio::test]
async fn smtp_test_message_fails_when_the_data_is_not_accepted() {
    let mut script = transaction_script("250 2.1.5 Ok\r\n");
    let queued = script
        .iter()
        .position(|step| matches!(step, Step::Send(text) if text.contains("queued")))
        .unwrap();
    script[queued] = Step::Send("452 4.3.1 Insufficient system storage\r\n");
    let (address, _server) = scripted_server(script).await;
    let mut smtp = check(CheckKind::Smtp, address, 2_000);
    smtp.test_rcpt = Some("probe@lab.test".to_string());
    let result = probe(&smtp).await;
    assert_failed(&result, "test message refused: 452 4.3.1");
}

#[tokio::test]
async fn smtp_fails_on_an_oversized_line_without_waiting_for_its_end() {
    static LONG: OnceLock<String> = OnceLock::new();
    let long: &'static str = LONG.get_or_init(|| format!("220 {}", "x".repeat(10_000)));
    let (address, _server) = scripted_server(vec![Step::Send(long), Step::Silence]).await;
    let started = Instant::now();
    let result = probe(&check(CheckKind::Smtp, address, 2_000)).await;
    assert_failed(&result, "banner: line longer than 4096 bytes");
    assert!(started.elapsed() < Duration::from_millis(1_000));
}

#[tokio::test]
async fn smtp_fails_on_an_endless_multi_line_reply() {
    static ENDLESS: OnceLock<String> = OnceLock::new();
    let endless: &'static str = ENDLESS.get_or_init(|| "220-still going\r\n".repeat(200));
    let (address, _server) = scripted_server(vec![Step::Send(endless), Step::Silence]).await;
    let result = probe(&check(CheckKind::Smtp, address, 2_000)).await;
    assert_failed(&result, "banner has more than 100 lines");
}

const IMAP_GREETING: Step = Step::Send("* OK Dovecot ready.\r\n");

fn imap_login(address: SocketAddr) -> CheckSection {
    CheckSection {
        user: Some("probe@lab.test".to_string()),
        password: Some(mailherd_config::Secret::new("s3cr\"et")),
        ..check(CheckKind::Imap, address, 2_000)
    }
}

#[tokio::test]
async fn imap_logs_in_with_a_quoted_password_and_never_shows_it() {
    let (address, server) = scripted_server(vec![
        IMAP_GREETING,
        Step::Receive,
        Step::Send("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na1 OK done\r\n"),
        Step::Receive,
        Step::Send("a2 OK [CAPABILITY IMAP4rev1] Logged in\r\n"),
        Step::Receive,
        Step::Send("* BYE Logging out\r\na3 OK Logout completed.\r\n"),
    ])
    .await;
    let result = probe(&imap_login(address)).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(
        result.detail,
        "* OK Dovecot ready. | logged in as probe@lab.test"
    );
    assert_eq!(
        server.await.unwrap(),
        vec![
            "a1 CAPABILITY",
            "a2 LOGIN \"probe@lab.test\" \"s3cr\\\"et\"",
            "a3 LOGOUT"
        ]
    );
}

#[tokio::test]
async fn imap_fails_on_a_rejected_login_without_quoting_the_password() {
    let (address, _server) = scripted_server(vec![
        IMAP_GREETING,
        Step::Receive,
        Step::Send("* CAPABILITY IMAP4rev1\r\na1 OK done\r\n"),
        Step::Receive,
        Step::Send("a2 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"),
    ])
    .await;
    let result = probe(&imap_login(address)).await;
    assert_failed(
        &result,
        "LOGIN refused: a2 NO [AUTHENTICATIONFAILED] Authentication failed.",
    );
    assert!(!result.detail.contains("s3cr"));
}

#[tokio::test]
async fn imap_does_not_send_a_password_where_login_is_disabled() {
    let (address, server) = scripted_server(vec![
        IMAP_GREETING,
        Step::Receive,
        Step::Send("* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\na1 OK done\r\n"),
        Step::Receive,
    ])
    .await;
    let result = probe(&imap_login(address)).await;
    assert_failed(&result, "LOGINDISABLED");
    assert_eq!(server.await.unwrap(), vec!["a1 CAPABILITY"]);
}

#[tokio::test]
async fn imap_starttls_then_login() {
    let (address, server) = scripted_server(vec![
        IMAP_GREETING,
        Step::Receive,
        Step::Send("* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\na1 OK done\r\n"),
        Step::Receive,
        Step::Send("a2 OK Begin TLS negotiation now.\r\n"),
        Step::StartTls,
        Step::Receive,
        Step::Send("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na3 OK done\r\n"),
        Step::Receive,
        Step::Send("a4 OK Logged in\r\n"),
        Step::Receive,
        Step::Send("a5 OK Logout completed.\r\n"),
    ])
    .await;
    let mut imap = imap_login(address);
    imap.starttls = Some(true);
    imap.tls_ca_file = Some(test_tls().ca_file.clone());
    let result = probe(&imap).await;
    assert!(result.ok, "{result:?}");
    let received = server.await.unwrap();
    assert_eq!(
        received[..3],
        ["a1 CAPABILITY", "a2 STARTTLS", "a3 CAPABILITY"]
    );
    assert!(received[3].starts_with("a4 LOGIN "));
    assert_eq!(received[4], "a5 LOGOUT");
}

#[tokio::test]
async fn imap_fails_on_a_bad_capability_reply() {
    let (address, _server) = scripted_server(vec![
        IMAP_GREETING,
        Step::Receive,
        Step::Send("a1 BAD Error in IMAP command\r\n"),
    ])
    .await;
    let result = probe(&check(CheckKind::Imap, address, 1_000)).await;
    assert_failed(&result, "CAPABILITY refused: a1 BAD");
}

#[tokio::test]
async fn imap_password_file_is_read_at_every_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("imap.password");
    let mut imap = imap_login(closed_port_sync());
    imap.password = None;
    imap.password_file = Some(password_file.clone());

    // Missing file: the probe fails and says why, after the greeting.
    let (address, _server) = scripted_server(vec![
        IMAP_GREETING,
        Step::Receive,
        Step::Send("* CAPABILITY IMAP4rev1\r\na1 OK done\r\n"),
        Step::Silence,
    ])
    .await;
    imap.address = Some(address);
    let result = probe(&imap).await;
    assert_failed(&result, "password_file: cannot read");

    std::fs::write(&password_file, "from-file\n").unwrap();
    let (address, server) = scripted_server(vec![
        IMAP_GREETING,
        Step::Receive,
        Step::Send("* CAPABILITY IMAP4rev1\r\na1 OK done\r\n"),
        Step::Receive,
        Step::Send("a2 OK Logged in\r\n"),
    ])
    .await;
    imap.address = Some(address);
    assert!(probe(&imap).await.ok);
    assert_eq!(
        server.await.unwrap()[1],
        "a2 LOGIN \"probe@lab.test\" \"from-file\""
    );
}

/// An address for a check that is replaced before use.
fn closed_port_sync() -> SocketAddr {
    "127.0.0.1:9".parse().unwrap()
}

const POP3_GREETING: Step = Step::Send("+OK Dovecot ready.\r\n");
const POP3_CAPA: Step =
    Step::Send("+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nSTLS\r\nUSER\r\nSASL PLAIN\r\n.\r\n");

fn pop3_login(address: SocketAddr) -> CheckSection {
    CheckSection {
        user: Some("probe@lab.test".to_string()),
        password: Some(mailherd_config::Secret::new("pop-secret")),
        ..check(CheckKind::Pop3, address, 2_000)
    }
}

#[tokio::test]
async fn pop3_passes_on_greeting_and_capa_then_quits() {
    let (address, server) = scripted_server(vec![
        POP3_GREETING,
        Step::Receive,
        POP3_CAPA,
        Step::Receive,
        Step::Send("+OK Logging out.\r\n"),
    ])
    .await;
    let result = probe(&check(CheckKind::Pop3, address, 1_000)).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(result.detail, "+OK Dovecot ready.");
    assert_eq!(server.await.unwrap(), vec!["CAPA", "QUIT"]);
}

#[tokio::test]
async fn pop3_logs_in_with_user_and_pass() {
    let (address, server) = scripted_server(vec![
        POP3_GREETING,
        Step::Receive,
        POP3_CAPA,
        Step::Receive,
        Step::Send("+OK\r\n"),
        Step::Receive,
        Step::Send("+OK Logged in.\r\n"),
        Step::Receive,
        Step::Send("+OK Logging out.\r\n"),
    ])
    .await;
    let result = probe(&pop3_login(address)).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(
        server.await.unwrap(),
        vec!["CAPA", "USER probe@lab.test", "PASS pop-secret", "QUIT"]
    );
}

#[tokio::test]
async fn pop3_fails_on_a_rejected_password_without_showing_it() {
    let (address, _server) = scripted_server(vec![
        POP3_GREETING,
        Step::Receive,
        POP3_CAPA,
        Step::Receive,
        Step::Send("+OK\r\n"),
        Step::Receive,
        Step::Send("-ERR [AUTH] Authentication failed.\r\n"),
    ])
    .await;
    let result = probe(&pop3_login(address)).await;
    assert_failed(&result, "PASS refused: -ERR [AUTH] Authentication failed.");
    assert!(!result.detail.contains("pop-secret"));
}

#[tokio::test]
async fn pop3_fails_on_an_err_greeting_and_a_silent_server() {
    let (address, _server) =
        scripted_server(vec![Step::Send("-ERR too many connections\r\n")]).await;
    let result = probe(&check(CheckKind::Pop3, address, 1_000)).await;
    assert_failed(&result, "unexpected greeting: -ERR too many connections");

    let (address, _server) = scripted_server(vec![Step::Silence]).await;
    let started = Instant::now();
    let result = probe(&check(CheckKind::Pop3, address, 300)).await;
    assert_failed(&result, "timed out after 300 ms waiting for greeting");
    assert!(started.elapsed() < Duration::from_millis(1_500));
}

#[tokio::test]
async fn pop3_stls_then_login_and_a_server_without_capa() {
    let (address, server) = scripted_server(vec![
        POP3_GREETING,
        Step::Receive,
        // An RFC 1939 server: no CAPA. STLS is tried all the same.
        Step::Send("-ERR Unknown command\r\n"),
        Step::Receive,
        Step::Send("+OK Begin TLS negotiation now.\r\n"),
        Step::StartTls,
        Step::Receive,
        POP3_CAPA,
        Step::Receive,
        Step::Send("+OK\r\n"),
        Step::Receive,
        Step::Send("+OK Logged in.\r\n"),
        Step::Receive,
        Step::Send("+OK Logging out.\r\n"),
    ])
    .await;
    let mut pop3 = pop3_login(address);
    pop3.starttls = Some(true);
    pop3.tls_verify = Some(false);
    let result = probe(&pop3).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(
        server.await.unwrap(),
        vec![
            "CAPA",
            "STLS",
            "CAPA",
            "USER probe@lab.test",
            "PASS pop-secret",
            "QUIT"
        ]
    );
}
