//! The alerter against real local receivers: every channel kind, the
//! once-per-failover rule, the window, the rate limit, dead receivers.
//!
//! Ordering trick: a channel delivers its queue in order, so once a final
//! "marker" alert has arrived, everything sent before it has been
//! delivered or given up on, and exact counts can be asserted.

mod common;

use std::path::Path;

use common::{closed_port, wait_until, Answer, Hanging, Receiver, SmtpSink};
use mailherd_alerts::{AlertKind, Alerter, Event, StepTiming};
use mailherd_config::{AlertsSection, ChannelKind, ChannelSection};

const TELEGRAM_TOKEN: &str = "123456:telegram-secret";

fn section(channels: Vec<ChannelSection>) -> AlertsSection {
    AlertsSection {
        retry_backoff_ms: 10,
        timeout_ms: 2_000,
        channels,
        ..AlertsSection::default()
    }
}

fn http_channel(name: &str, kind: ChannelKind, url: String) -> ChannelSection {
    ChannelSection {
        url: Some(url),
        ..ChannelSection::new(name, kind)
    }
}

/// One channel of every kind, pointed at `receiver` and `sink`.
fn every_channel(dir: &Path, receiver: &Receiver, sink: &SmtpSink) -> Vec<ChannelSection> {
    let token_file = dir.join("telegram-token");
    std::fs::write(&token_file, format!("{TELEGRAM_TOKEN}\n")).unwrap();
    vec![
        http_channel("hook", ChannelKind::Webhook, receiver.url("/hook")),
        http_channel("ntfy", ChannelKind::Ntfy, receiver.url("/mailherd-alerts")),
        http_channel("chat", ChannelKind::Slack, receiver.url("/slack")),
        ChannelSection {
            api_url: Some(receiver.url("")),
            chat_id: Some("-1001".into()),
            token_file: Some(token_file),
            ..ChannelSection::new("tg", ChannelKind::Telegram)
        },
        ChannelSection {
            host: Some("127.0.0.1".into()),
            port: Some(sink.addr.port()),
            starttls: Some(false),
            from: Some("mailherd <alerts@example.net>".into()),
            to: Some(vec!["ops@example.net".into()]),
            ..ChannelSection::new("mail", ChannelKind::Email)
        },
    ]
}

const HTTP_PATHS: [&str; 4] = [
    "/hook",
    "/mailherd-alerts",
    "/slack",
    "/bot123456:telegram-secret/sendMessage",
];

/// What every channel received, as text, per path (the mail sink under "mail").
fn texts(receiver: &Receiver, sink: &SmtpSink) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = HTTP_PATHS
        .iter()
        .map(|path| {
            (
                path.to_string(),
                receiver.at(path).into_iter().map(|r| r.body).collect(),
            )
        })
        .collect();
    out.push((
        "mail".into(),
        sink.mails().into_iter().map(|m| m.data).collect(),
    ));
    out
}

fn count_containing(bodies: &[String], needle: &str) -> usize {
    bodies.iter().filter(|b| b.contains(needle)).count()
}

/// Waits until every channel has received something containing `needle`.
async fn wait_for_marker(receiver: &Receiver, sink: &SmtpSink, needle: &str) {
    wait_until(&format!("{needle} on every channel"), || {
        texts(receiver, sink)
            .iter()
            .all(|(_, bodies)| count_containing(bodies, needle) >= 1)
    })
    .await;
}

#[tokio::test]
async fn one_failover_makes_one_started_and_one_completed_per_channel_despite_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(Answer::Ok).await;
    let sink = SmtpSink::start().await;
    let alerter = Alerter::start(
        "mail",
        "n2",
        &section(every_channel(dir.path(), &receiver, &sink)),
    )
    .unwrap();

    // The agent's code may repeat itself (a retried promotion report, a
    // second code path): only the first start and the first end count.
    let steps = vec![StepTiming {
        name: "floating_ip".into(),
        ms: 12,
        ok: true,
    }];
    for _ in 0..3 {
        alerter.send(Event::failover_started(7, Some("n1"), "n2"));
    }
    for _ in 0..2 {
        alerter.send(Event::failover_completed(
            7,
            Some("n1"),
            "n2",
            420,
            steps.clone(),
        ));
    }
    alerter.send(Event::failover_failed(
        7,
        Some("n1"),
        "n2",
        "late",
        0,
        Vec::new(),
    ));
    alerter.send(Event::node_up("marker-node"));
    wait_for_marker(&receiver, &sink, "marker-node").await;

    for (channel, bodies) in texts(&receiver, &sink) {
        assert_eq!(
            count_containing(&bodies, "failover started"),
            1,
            "{channel}: {bodies:#?}"
        );
        assert_eq!(
            count_containing(&bodies, "failover complete"),
            1,
            "{channel}: {bodies:#?}"
        );
        assert_eq!(count_containing(&bodies, "FAILED"), 0, "{channel}");
        assert_eq!(bodies.len(), 3, "{channel}: {bodies:#?}");
    }

    let counters = alerter.counters();
    for channel in ["hook", "ntfy", "chat", "tg", "mail"] {
        let started = counters.get(channel, AlertKind::FailoverStarted);
        assert_eq!((started.sent, started.suppressed), (1, 2), "{channel}");
        let completed = counters.get(channel, AlertKind::FailoverCompleted);
        assert_eq!((completed.sent, completed.suppressed), (1, 1), "{channel}");
        let failed = counters.get(channel, AlertKind::FailoverFailed);
        assert_eq!((failed.sent, failed.suppressed), (0, 1), "{channel}");
        assert_eq!(counters.total(channel).failed, 0, "{channel}");
    }

    // Each channel's own format.
    let hook = receiver.at("/hook");
    let started = hook[0].json();
    assert_eq!(started["kind"], "failover_started");
    assert_eq!(started["cluster"], "mail");
    assert_eq!(started["node"], "n2");
    assert_eq!(started["fields"]["epoch"], 7);
    assert_eq!(started["fields"]["from"], "n1");
    assert_eq!(started["fields"]["to"], "n2");
    assert!(started["id"].as_str().unwrap().starts_with("n2-"));
    let completed = hook[1].json();
    assert_eq!(completed["fields"]["steps"][0]["name"], "floating_ip");
    assert_eq!(completed["fields"]["total_ms"], 420);
    assert_ne!(started["id"], completed["id"]);

    let ntfy = receiver.at("/mailherd-alerts");
    assert_eq!(ntfy[0].method, "POST");
    assert_eq!(ntfy[0].headers["priority"], "4");
    assert!(ntfy[0].headers["title"]
        .to_str()
        .unwrap()
        .contains("failover started"));
    assert!(ntfy[0].headers["tags"]
        .to_str()
        .unwrap()
        .contains("failover_started"));

    let slack = receiver.at("/slack");
    assert!(slack[0].json()["text"]
        .as_str()
        .unwrap()
        .contains("failover started: n1 -> n2 (epoch 7)"));

    let telegram = receiver.at(HTTP_PATHS[3]);
    assert_eq!(telegram[0].json()["chat_id"], "-1001");
    assert!(telegram[0].json()["text"]
        .as_str()
        .unwrap()
        .contains("epoch: 7"));

    let mails = sink.mails();
    assert_eq!(mails[0].from, "<alerts@example.net>");
    assert_eq!(mails[0].to, vec!["<ops@example.net>".to_string()]);
    assert!(mails[0]
        .data
        .contains("Subject: [mail] WARNING n2: failover started"));
}

#[tokio::test]
async fn identical_alerts_within_the_window_are_suppressed_and_counted() {
    let receiver = Receiver::start(Answer::Ok).await;
    let alerter = Alerter::start(
        "mail",
        "n1",
        &AlertsSection {
            window_s: 600,
            burst: 100,
            ..section(vec![http_channel(
                "hook",
                ChannelKind::Webhook,
                receiver.url("/hook"),
            )])
        },
    )
    .unwrap();

    // A flapping check says the same thing again and again.
    for _ in 0..5 {
        alerter.send(Event::check_degraded("smtp: connection refused"));
    }
    alerter.send(Event::check_degraded("imap: connection refused"));
    alerter.send(Event::node_up("marker-node"));
    wait_until("the marker", || {
        count_containing(&bodies(&receiver, "/hook"), "marker-node") == 1
    })
    .await;

    let bodies = bodies(&receiver, "/hook");
    assert_eq!(count_containing(&bodies, "smtp: connection refused"), 1);
    assert_eq!(count_containing(&bodies, "imap: connection refused"), 1);
    assert_eq!(bodies.len(), 3);
    let degraded = alerter.counters().get("hook", AlertKind::CheckDegraded);
    assert_eq!((degraded.sent, degraded.suppressed), (2, 4));
}

fn bodies(receiver: &Receiver, path: &str) -> Vec<String> {
    receiver.at(path).into_iter().map(|r| r.body).collect()
}

#[tokio::test]
async fn the_rate_limit_suppresses_and_counts_but_never_a_failover() {
    let receiver = Receiver::start(Answer::Ok).await;
    let mut fast = http_channel("fast", ChannelKind::Webhook, receiver.url("/fast"));
    // A channel's own limits win over [alerts]'.
    fast.burst = Some(10);
    let alerter = Alerter::start(
        "mail",
        "n1",
        &AlertsSection {
            burst: 3,
            rate_per_minute: 1,
            ..section(vec![
                http_channel("slow", ChannelKind::Webhook, receiver.url("/slow")),
                fast,
            ])
        },
    )
    .unwrap();

    for i in 0..10 {
        alerter.send(Event::node_down(&format!("n{}", i + 10), "unreachable"));
    }
    // Failover alerts are exempt; this one is also the marker.
    alerter.send(Event::failover_started(3, None, "n1"));
    wait_until("the marker on both channels", || {
        count_containing(&bodies(&receiver, "/slow"), "failover started") == 1
            && count_containing(&bodies(&receiver, "/fast"), "failover started") == 1
    })
    .await;

    assert_eq!(bodies(&receiver, "/slow").len(), 4);
    assert_eq!(bodies(&receiver, "/fast").len(), 11);
    let counters = alerter.counters();
    let slow = counters.get("slow", AlertKind::NodeDown);
    assert_eq!((slow.sent, slow.rate_limited), (3, 7));
    assert_eq!(counters.get("fast", AlertKind::NodeDown).rate_limited, 0);
    assert_eq!(counters.get("slow", AlertKind::FailoverStarted).sent, 1);
}

/// `send` is a plain function that only queues: on a single-threaded
/// runtime, delivery cannot run while the test does not yield, so if
/// `send` waited for a receiver (or for room in the queue) this test would
/// hang instead of finishing the loop, and the overflow would not be
/// counted as dropped at once.
#[tokio::test(flavor = "current_thread")]
async fn dead_receivers_are_retried_a_bounded_number_of_times_and_never_block_send() {
    let failing = Receiver::start(Answer::Error).await;
    let hanging = Hanging::start().await;
    let closed = closed_port().await;
    let retries = 2;
    let queue = 4;
    let alerter = Alerter::start(
        "mail",
        "n1",
        &AlertsSection {
            retries,
            queue,
            burst: 100,
            timeout_ms: 300,
            ..section(vec![
                http_channel(
                    "closed",
                    ChannelKind::Webhook,
                    format!("http://127.0.0.1:{closed}/hook"),
                ),
                http_channel("failing", ChannelKind::Ntfy, failing.url("/topic")),
                http_channel(
                    "hanging",
                    ChannelKind::Slack,
                    format!("http://{}/slack", hanging.addr),
                ),
            ])
        },
    )
    .unwrap();

    let sent = 20;
    for i in 0..sent {
        alerter.send(Event::node_down(&format!("n{i}"), "gone"));
    }
    // Nothing has been delivered yet (this task never yielded): every
    // alert beyond the queue's room was dropped, not waited for.
    let counters = alerter.counters();
    for channel in ["closed", "failing", "hanging"] {
        let total = counters.total(channel);
        assert_eq!(total.dropped, sent - queue as u64, "{channel}");
        assert_eq!(total.sent + total.failed + total.retried, 0, "{channel}");
    }

    let attempts = u64::from(retries) + 1;
    wait_until("every queued alert to be given up on", || {
        let counters = alerter.counters();
        ["closed", "failing", "hanging"]
            .iter()
            .all(|c| counters.total(c).failed == queue as u64)
    })
    .await;
    let counters = alerter.counters();
    for channel in ["closed", "failing", "hanging"] {
        let total = counters.total(channel);
        assert_eq!(total.sent, 0, "{channel}");
        assert_eq!(
            total.retried,
            queue as u64 * u64::from(retries),
            "{channel}"
        );
    }
    // Bounded: exactly `retries + 1` attempts per alert reached the servers.
    assert_eq!(failing.at("/topic").len() as u64, queue as u64 * attempts);
    assert_eq!(
        *hanging.connections.lock().unwrap() as u64,
        queue as u64 * attempts
    );

    // Later alerts go out again once the receiver is back: the channel
    // task survived its failures. (Here: still dead, so they fail too.)
    alerter.send(Event::node_down("later", "gone"));
    wait_until("the later alert to be given up on", || {
        alerter.counters().total("failing").failed == queue as u64 + 1
    })
    .await;
    assert_eq!(
        failing.at("/topic").len() as u64,
        (queue as u64 + 1) * attempts
    );
}

#[tokio::test]
async fn a_missing_secret_file_is_an_error_naming_the_channel_and_file() {
    let channel = ChannelSection {
        chat_id: Some("1".into()),
        token_file: Some("/nonexistent/mailherd-telegram-token".into()),
        ..ChannelSection::new("tg", ChannelKind::Telegram)
    };
    let error = Alerter::start("mail", "n1", &section(vec![channel]))
        .err()
        .expect("a missing token file is refused");
    let message = error.to_string();
    assert!(message.contains("tg"), "{message}");
    assert!(
        message.contains("/nonexistent/mailherd-telegram-token"),
        "{message}"
    );
}
