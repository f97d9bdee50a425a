//! The simulator over real HTTP, spoken to without the signup backend:
//! status codes and bodies as the reference gives them.

use mailherd_mailcow_sim::{Domain, MailcowSim, SimConfig, SimHandle};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn start(configure: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut config = SimConfig::new("rw");
    config.read_only_key = Some("ro".into());
    config.domains = vec![Domain {
        max_mailboxes: 2,
        max_quota_mib: 100,
        total_quota_mib: 150,
        aliases: vec!["info@d.tld".into()],
        ..Domain::new("d.tld")
    }];
    configure(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    MailcowSim::new(config).serve(listener).unwrap()
}

async fn add(sim: &SimHandle, key: &str, body: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/add/mailbox", sim.base_url()))
        .header("X-API-Key", key)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

fn mailbox(local: &str, password2: &str, quota: u64) -> String {
    json!({"active": "1", "domain": "d.tld", "local_part": local, "name": "N",
           "password": "secret1", "password2": password2, "quota": quota.to_string(),
           "force_pw_update": "0", "tls_enforce_in": "1", "tls_enforce_out": "1",
           "authsource": "mailcow", "tags": []})
    .to_string()
}

/// The `msg` of the one entry of a 200 reply, and its `type`.
fn entry(status: StatusCode, body: &Value) -> (String, Value) {
    assert_eq!(
        status,
        StatusCode::OK,
        "mailcow answers 200 even on failure: {body}"
    );
    let entries = body.as_array().expect("an array of entries");
    assert_eq!(entries.len(), 1);
    (
        entries[0]["type"].as_str().unwrap().to_string(),
        entries[0]["msg"].clone(),
    )
}

#[tokio::test]
async fn add_mailbox_answers_200_with_success_or_danger() {
    let sim = start(|_| {}).await;
    let (status, body) = add(&sim, "rw", &mailbox("alice", "secret1", 50)).await;
    assert_eq!(
        entry(status, &body),
        ("success".into(), json!(["mailbox_added", "alice@d.tld"]))
    );
    // The log masks the passwords.
    assert!(!body.to_string().contains("secret1"), "{body}");

    let cases = [
        (
            mailbox("alice", "secret1", 50),
            json!(["object_exists", "alice@d.tld"]),
        ),
        (
            mailbox("info", "secret1", 50),
            json!(["is_alias", "info@d.tld"]),
        ),
        (mailbox("bob", "other12", 50), json!(["password_mismatch"])),
        (
            mailbox("bob", "secret1", 101),
            json!(["mailbox_quota_exceeded", 100]),
        ),
        (
            mailbox("bob", "secret1", 101).replace("\"bob\"", "\"b b\""),
            json!(["mailbox_invalid", "b b@d.tld"]),
        ),
        (
            mailbox("bob", "secret1", 50).replace("d.tld", "x.tld"),
            json!(["domain_not_found", "x.tld"]),
        ),
        (
            mailbox("bob", "secret1", 50).replace("d.tld", "-x"),
            json!(["domain_invalid"]),
        ),
        (
            mailbox("bob", "secret1", 50).replace("secret1", "s1"),
            json!(["password_complexity"]),
        ),
        // 150 MiB in the domain, 50 used.
        (
            mailbox("bob", "secret1", 100),
            json!(["mailbox_added", "bob@d.tld"]),
        ),
        (
            mailbox("carol", "secret1", 1),
            json!(["max_mailbox_exceeded", 2, 2]),
        ),
    ];
    for (request, expected) in cases {
        let (status, body) = add(&sim, "rw", &request).await;
        let (kind, msg) = entry(status, &body);
        assert_eq!(msg, expected, "{request}");
        let success = expected[0] == "mailbox_added";
        assert_eq!(kind, if success { "success" } else { "danger" });
    }
    assert_eq!(sim.mailboxes().len(), 2);
}

#[tokio::test]
async fn the_quota_left_in_the_domain_is_enforced() {
    let sim = start(|c| c.domains[0].max_mailboxes = 10).await;
    let (status, body) = add(&sim, "rw", &mailbox("a", "secret1", 100)).await;
    assert_eq!(entry(status, &body).0, "success");
    let (status, body) = add(&sim, "rw", &mailbox("b", "secret1", 60)).await;
    assert_eq!(
        entry(status, &body).1,
        json!(["mailbox_quota_left_exceeded", 50])
    );
}

#[tokio::test]
async fn keys_allow_list_and_bad_json() {
    let sim = start(|_| {}).await;
    let (status, body) = add(&sim, "wrong", &mailbox("a", "secret1", 1)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        json!({"type": "error", "msg": "authentication failed"})
    );
    let (status, body) = add(&sim, "ro", &mailbox("a", "secret1", 1)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["type"], "error");
    let (status, body) = add(&sim, "rw", "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["type"], "error");
    assert!(sim.mailboxes().is_empty());

    // The read-only key may read.
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/get/domain/d.tld", sim.base_url()))
        .header("X-API-Key", "ro")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let domain: Value = response.json().await.unwrap();
    assert_eq!(domain["mboxes_in_domain"], 0);
    assert_eq!(domain["max_num_mboxes_for_domain"], 2);

    // A key from outside API_ALLOW_FROM is not accepted.
    let outside = start(|c| c.allow_from = vec!["192.0.2.1".parse().unwrap()]).await;
    let (status, body) = add(&outside, "rw", &mailbox("a", "secret1", 1)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["msg"], "authentication failed");
    let inside = start(|c| c.allow_from = vec!["127.0.0.1".parse().unwrap()]).await;
    let (status, body) = add(&inside, "rw", &mailbox("a", "secret1", 1)).await;
    assert_eq!(entry(status, &body).0, "success");
}

#[tokio::test]
async fn unknown_objects_are_empty_objects() {
    let sim = start(|_| {}).await;
    for path in ["get/domain/nope.tld", "get/mailbox/nobody@d.tld"] {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/{path}", sim.base_url()))
            .header("X-API-Key", "rw")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.json::<Value>().await.unwrap(), json!({}));
    }
}
