//! The Uptime Kuma push worker against a local stand-in for Kuma's push
//! endpoint (`/api/push/<token>`, 200 `{"ok":true}` or 404).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{wait_until, Answer, Receiver};
use mailherd_alerts::kuma::push_url;
use mailherd_alerts::{KumaPush, KumaStatus};

fn query(text: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{text}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[test]
fn the_push_url_replaces_kumas_own_query() {
    let base = reqwest::Url::parse("https://kuma.example/api/push/abc?status=up&msg=OK&ping=&x=1")
        .unwrap();
    let status = KumaStatus {
        up: false,
        msg: "n1 master: smtp down".into(),
    };
    let url = push_url(&base, &status, Some(17));
    assert_eq!(url.path(), "/api/push/abc");
    assert_eq!(
        query(url.query().unwrap()),
        vec![
            ("x".into(), "1".into()),
            ("status".into(), "down".into()),
            ("msg".into(), "n1 master: smtp down".into()),
            ("ping".into(), "17".into()),
        ]
    );
}

#[tokio::test]
async fn pushes_carry_status_msg_and_ping() {
    let kuma = Receiver::start(Answer::Ok).await;
    let up = Arc::new(AtomicBool::new(true));
    let fit = up.clone();
    let push = KumaPush::start_with(
        &kuma.url("/api/push/good-token?status=up&msg=OK&ping="),
        Duration::from_millis(50),
        Duration::from_millis(500),
        move || {
            let up = fit.load(Ordering::SeqCst);
            KumaStatus {
                up,
                msg: if up {
                    "master, operational".into()
                } else {
                    "checks down".into()
                },
            }
        },
    )
    .unwrap();

    wait_until("three pushes", || {
        kuma.at("/api/push/good-token").len() >= 3
    })
    .await;
    let pushes = kuma.at("/api/push/good-token");
    let first = query(&pushes[0].query);
    assert!(first.contains(&("status".into(), "up".into())), "{first:?}");
    assert!(
        first.contains(&("msg".into(), "master, operational".into())),
        "{first:?}"
    );
    // From the second push on, ping is the previous round trip in ms.
    let second = query(&pushes[1].query);
    let ping = second.iter().find(|(k, _)| k == "ping").unwrap();
    ping.1.parse::<u64>().expect("ping is a number of ms");

    up.store(false, Ordering::SeqCst);
    wait_until("a down push", || {
        kuma.at("/api/push/good-token")
            .iter()
            .any(|r| query(&r.query).contains(&("status".into(), "down".into())))
    })
    .await;
    let state = push.state();
    assert!(state.pushes_ok >= 3, "{state:?}");
    assert_eq!(state.pushes_failed, 0);
    assert!(!state.monitor_not_found);
}

#[tokio::test]
async fn a_missing_monitor_is_reported_and_pushing_goes_on() {
    let kuma = Receiver::start(Answer::NotFound).await;
    let push = always_up(&kuma.url("/api/push/wrong-token"));
    wait_until("several refused pushes", || push.state().pushes_failed >= 3).await;
    let state = push.state();
    assert!(state.monitor_not_found, "{state:?}");
    assert_eq!(state.pushes_ok, 0);
    assert!(
        state
            .last_error
            .as_deref()
            .unwrap()
            .contains("Monitor not found or not active"),
        "{state:?}"
    );
    // The token never shows in what the worker reports.
    assert!(!format!("{state:?}").contains("wrong-token"));
}

#[tokio::test]
async fn an_unreachable_kuma_is_counted_without_leaking_the_url() {
    let port = common::closed_port().await;
    let push = always_up(&format!("http://127.0.0.1:{port}/api/push/secret-token"));
    wait_until("failed pushes", || push.state().pushes_failed >= 2).await;
    let state = push.state();
    assert!(!state.monitor_not_found);
    assert!(!format!("{state:?}").contains("secret-token"), "{state:?}");
}

/// A worker pushing "up" every 30 ms to `url`.
fn always_up(url: &str) -> KumaPush {
    KumaPush::start_with(
        url,
        Duration::from_millis(30),
        Duration::from_millis(500),
        || KumaStatus {
            up: true,
            msg: "ok".into(),
        },
    )
    .unwrap()
}
