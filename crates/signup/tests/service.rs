//! The signup service over real HTTP: the JSON API's status codes and the
//! abuse protections, the `mailcow` backend against the mailcow simulator
//! (errors included), the `dovecot` backend's files, and the master
//! lookup through the agents' `/master`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mailherd_config::Config;
use mailherd_mailcow_sim::{Domain, MailcowSim, SimConfig, SimHandle};
use mailherd_signup::Service;
use reqwest::StatusCode;
use serde_json::{json, Value};

const KEY: &str = "sim-read-write-key";
const READ_ONLY_KEY: &str = "sim-read-only-key";

/// A stand-in agent: `GET /master` answers 200 while `master` is set.
struct FakeAgent {
    address: SocketAddr,
    master: Arc<AtomicBool>,
}

async fn fake_agent(master: bool) -> FakeAgent {
    let flag = Arc::new(AtomicBool::new(master));
    let state = flag.clone();
    let app = axum::Router::new().route(
        "/master",
        axum::routing::get(move || {
            let state = state.clone();
            async move {
                if state.load(Ordering::SeqCst) {
                    (axum::http::StatusCode::OK, "master")
                } else {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "backup")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    FakeAgent {
        address,
        master: flag,
    }
}

/// A node config with one member (the fake agent) and `signup` appended.
fn config(agent: &FakeAgent, signup: &str) -> Config {
    let text = format!(
        r#"[node]
name = "n1"
data_dir = "/var/lib/mailherd"

[cluster]
name = "mail"

[[members]]
name = "n1"
id = 1
peer = "127.0.0.1:1"
api = "{api}"

[api]
listen = "127.0.0.1:2"
peer_listen = "127.0.0.1:1"

{signup}"#,
        api = agent.address
    );
    Config::parse(Path::new("signup-test.toml"), &text).unwrap_or_else(|p| panic!("{p}"))
}

/// `[signup]` keys common to the tests; the token may be used at once.
fn signup_keys(backend: &str, extra: &str) -> String {
    format!(
        "[signup]\nlisten = \"127.0.0.1:0\"\nbackend = \"{backend}\"\n\
         domains = [\"example.net\", \"missing.example\"]\n\
         token_min_age_s = 0\nper_ip_limit = 50\nglobal_limit = 50\n{extra}\n"
    )
}

async fn serve(config: &Config) -> String {
    let service = Service::from_config(config).unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(mailherd_signup::run(
        service,
        listener,
        std::future::pending(),
    ));
    url
}

async fn token(url: &str) -> String {
    let answer: Value = reqwest::get(format!("{url}/api/token"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["token"].as_str().unwrap().to_string()
}

/// POSTs a signup with a fresh token; returns status and body.
async fn signup(url: &str, local: &str, domain: &str, password: &str) -> (StatusCode, Value) {
    let body = json!({"local_part": local, "domain": domain, "password": password,
                      "name": "Test User", "token": token(url).await});
    post(url, &body).await
}

async fn post(url: &str, body: &Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{url}/api/signup"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn mailcow_sim(configure: impl FnOnce(&mut SimConfig)) -> SimHandle {
    let mut config = SimConfig::new(KEY);
    config.read_only_key = Some(READ_ONLY_KEY.to_string());
    config.domains = vec![Domain {
        max_mailboxes: 3,
        ..Domain::new("example.net")
    }];
    configure(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    MailcowSim::new(config).serve(listener).unwrap()
}

/// A mailcow-backed service on `sim` with API key `key`; `{master}` in the
/// URL, so the agent lookup decides where requests go.
async fn mailcow_service(
    sim: &SimHandle,
    agent: &FakeAgent,
    key: &str,
    extra: &str,
    dir: &Path,
) -> String {
    let key_file = dir.join("api-key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let section = format!(
        "{}[signup.mailcow]\napi_url = \"http://{{master}}:{}\"\napi_key_file = \"{}\"\n",
        signup_keys("mailcow", extra),
        sim.address().port(),
        key_file.display()
    );
    serve(&config(agent, &section)).await
}

fn reasons(body: &Value) -> Vec<String> {
    body["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|r| r["field"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn mailcow_backend_makes_mailboxes_and_reads_mailcows_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let agent = fake_agent(true).await;
    let sim = mailcow_sim(|_| {}).await;
    let url = mailcow_service(&sim, &agent, KEY, "", dir.path()).await;

    let (status, body) = signup(&url, "Alice", "example.net", "tr0ub4dor&3x").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["address"], "alice@example.net");
    let made = sim.mailboxes();
    let alice = made
        .get("alice@example.net")
        .expect("mailcow has the mailbox");
    assert_eq!(alice.name, "Test User");
    assert_eq!(alice.quota_mib, 1024, "the default quota_mib");

    // mailcow says object_exists, with HTTP 200: 409.
    let (status, body) = signup(&url, "alice", "example.net", "another-g00d-one").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "exists");

    // Offered by the service, unknown to mailcow: domain_not_found → 422.
    let (status, body) = signup(&url, "bob", "missing.example", "tr0ub4dor&3x").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(reasons(&body), ["domain"]);
    assert!(body.to_string().contains("domain_not_found"), "{body}");

    // mailcow's own domain limit (3 mailboxes): max_mailbox_exceeded → 409.
    for local in ["bob", "carol"] {
        let (status, body) = signup(&url, local, "example.net", "tr0ub4dor&3x").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = signup(&url, "dave", "example.net", "tr0ub4dor&3x").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "domain_full");
    assert_eq!(sim.mailboxes().len(), 3);
    sim.stop().await;
}

#[tokio::test]
async fn the_services_own_domain_quota_is_counted_in_mailcow() {
    let dir = tempfile::tempdir().unwrap();
    let agent = fake_agent(true).await;
    let sim = mailcow_sim(|_| {}).await;
    let url = mailcow_service(
        &sim,
        &agent,
        KEY,
        "max_mailboxes_per_domain = 1",
        dir.path(),
    )
    .await;
    assert_eq!(
        signup(&url, "one", "example.net", "tr0ub4dor&3x").await.0,
        StatusCode::CREATED
    );
    let (status, body) = signup(&url, "two", "example.net", "tr0ub4dor&3x").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("maximum of 1"),
        "{body}"
    );
    assert_eq!(sim.mailboxes().len(), 1, "nothing was sent to mailcow");
}

#[tokio::test]
async fn a_wrong_key_a_read_only_key_and_the_allow_list_are_backend_errors() {
    let dir = tempfile::tempdir().unwrap();
    let agent = fake_agent(true).await;
    for (key, allow) in [
        ("not-the-key", None),
        (READ_ONLY_KEY, None),
        (KEY, Some("192.0.2.1")),
    ] {
        let sim = mailcow_sim(|c| {
            if let Some(ip) = allow {
                c.allow_from = vec![ip.parse().unwrap()];
            }
        })
        .await;
        let url = mailcow_service(&sim, &agent, key, "", dir.path()).await;
        let (status, body) = signup(&url, "alice", "example.net", "tr0ub4dor&3x").await;
        assert_eq!(
            status,
            StatusCode::BAD_GATEWAY,
            "key {key}, allow {allow:?}: {body}"
        );
        assert_eq!(body["error"], "backend");
        // The client is told nothing of keys; the operator reads the log.
        assert!(!body.to_string().contains(key), "{body}");
        assert!(sim.mailboxes().is_empty());
        sim.stop().await;
    }
}

#[tokio::test]
async fn without_a_master_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let agent = fake_agent(false).await;
    let sim = mailcow_sim(|_| {}).await;
    let url = mailcow_service(&sim, &agent, KEY, "", dir.path()).await;
    let (status, body) = signup(&url, "alice", "example.net", "tr0ub4dor&3x").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "no_master");
    assert!(sim.mailboxes().is_empty());
    // The master is back: the same request goes through.
    agent.master.store(true, Ordering::SeqCst);
    let (status, body) = signup(&url, "alice", "example.net", "tr0ub4dor&3x").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn invalid_input_gets_422_with_every_reason() {
    let dir = tempfile::tempdir().unwrap();
    let agent = fake_agent(true).await;
    let sim = mailcow_sim(|_| {}).await;
    let url = mailcow_service(&sim, &agent, KEY, "", dir.path()).await;

    let (status, body) = signup(&url, "-x-", "other.org", "password123").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(reasons(&body), ["local_part", "domain", "password"]);
    let (_, body) = signup(&url, "alice", "example.net", "short").await;
    assert_eq!(reasons(&body), ["password"]);
    assert!(body.to_string().contains("too short"), "{body}");

    // The honeypot.
    let bot = json!({"local_part": "bot", "domain": "example.net", "password": "tr0ub4dor&3x",
                     "website": "http://spam.example", "token": token(&url).await});
    let (status, body) = post(&url, &bot).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reasons(&body), ["website"]);

    // No token, a forged one, a used one.
    let mut request =
        json!({"local_part": "eve", "domain": "example.net", "password": "tr0ub4dor&3x"});
    assert_eq!(reasons(&post(&url, &request).await.1), ["token"]);
    request["token"] = json!("1.00.AAAA");
    assert_eq!(reasons(&post(&url, &request).await.1), ["token"]);
    let used = token(&url).await;
    request["token"] = json!(used);
    assert_eq!(post(&url, &request).await.0, StatusCode::CREATED);
    request["local_part"] = json!("eve2");
    let (status, body) = post(&url, &request).await;
    assert_eq!(reasons(&body), ["token"], "{status} {body}");
    assert!(body.to_string().contains("already used"), "{body}");
    assert!(sim.mailboxes().keys().all(|a| a == "eve@example.net"));
}

#[tokio::test]
async fn a_token_is_refused_before_its_minimum_age() {
    let dir = tempfile::tempdir().unwrap();
    let agent = fake_agent(true).await;
    let sim = mailcow_sim(|_| {}).await;
    // token_min_age_s = 0 is in signup_keys; a later key would be a
    // duplicate, so this service gets its section written out here.
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, KEY).unwrap();
    let section = format!(
        "[signup]\nlisten = \"127.0.0.1:0\"\nbackend = \"mailcow\"\ndomains = [\"example.net\"]\n\
         token_min_age_s = 2\n[signup.mailcow]\napi_url = \"{}\"\napi_key_file = \"{}\"\n",
        sim.base_url(),
        key_file.display()
    );
    let url = serve(&config(&agent, &section)).await;
    let fresh = token(&url).await;
    let request = json!({"local_part": "alice", "domain": "example.net",
                         "password": "tr0ub4dor&3x", "token": fresh});
    let (status, body) = post(&url, &request).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.to_string().contains("too fast"), "{body}");
    // A refused token was not spent: the same one works once old enough.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = post(&url, &request).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let agent = fake_agent(true).await;
    let sim = mailcow_sim(|_| {}).await;
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, KEY).unwrap();
    let section = format!(
        "[signup]\nlisten = \"127.0.0.1:0\"\nbackend = \"mailcow\"\ndomains = [\"example.net\"]\n\
         token_min_age_s = 0\nper_ip_limit = 2\nglobal_limit = 2\n\
         [signup.mailcow]\napi_url = \"{}\"\napi_key_file = \"{}\"\n",
        sim.base_url(),
        key_file.display()
    );
    let url = serve(&config(&agent, &section)).await;
    // Failed attempts count too.
    assert_eq!(
        signup(&url, "alice", "example.net", "weak").await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        signup(&url, "alice", "example.net", "tr0ub4dor&3x").await.0,
        StatusCode::CREATED
    );
    let response = reqwest::Client::new()
        .post(format!("{url}/api/signup"))
        .json(&json!({"local_part": "bob", "domain": "example.net",
                      "password": "tr0ub4dor&3x", "token": token(&url).await}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 3600, "Retry-After {retry}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(sim.mailboxes().len(), 1);
}

fn dovecot_section(dir: &Path, map: &str) -> String {
    format!(
        "{}[signup.dovecot]\nusers_file = \"{d}/accounts/users\"\nmail_root = \"{d}/vmail\"\n\
         uid = {uid}\ngid = {gid}\npostfix_map = \"{map}:{d}/accounts/vmailbox\"\n",
        signup_keys("dovecot", ""),
        d = dir.display(),
        uid = nix::unistd::getuid().as_raw().max(1),
        gid = nix::unistd::getgid().as_raw().max(1),
    )
}

#[tokio::test]
async fn dovecot_backend_writes_passwd_file_map_and_maildir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("accounts")).unwrap();
    let agent = fake_agent(true).await;
    let url = serve(&config(&agent, &dovecot_section(dir.path(), "texthash"))).await;

    let (status, body) = signup(&url, "alice", "example.net", "tr0ub4dor&3x").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let users = std::fs::read_to_string(dir.path().join("accounts/users")).unwrap();
    let fields: Vec<&str> = users.trim_end().split(':').collect();
    assert_eq!(fields[0], "alice@example.net");
    assert!(fields[1].starts_with("{SSHA512}"), "{users}");
    assert!(
        !users.contains("tr0ub4dor"),
        "the password is stored hashed"
    );
    assert_eq!(fields[4], "Test User");
    assert_eq!(
        fields[5],
        format!("{}/vmail/example.net/alice", dir.path().display())
    );
    assert!(
        users.contains("userdb_quota_rule=*:storage=1024M"),
        "{users}"
    );
    let map = std::fs::read_to_string(dir.path().join("accounts/vmailbox")).unwrap();
    assert_eq!(map, "alice@example.net example.net/alice/\n");
    assert!(dir.path().join("vmail/example.net/alice/new").is_dir());

    let (status, _) = signup(&url, "ALICE", "example.net", "tr0ub4dor&3x").await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Not the master any more: 503, and the files stay as they are.
    agent.master.store(false, Ordering::SeqCst);
    let (status, body) = signup(&url, "bob", "example.net", "tr0ub4dor&3x").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("not the master"),
        "{body}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("accounts/users")).unwrap(),
        users
    );
}

#[tokio::test]
async fn dovecot_backend_without_the_volume_refuses() {
    let dir = tempfile::tempdir().unwrap();
    // No accounts/ directory: the volume is not mounted here.
    let agent = fake_agent(true).await;
    let url = serve(&config(&agent, &dovecot_section(dir.path(), "texthash"))).await;
    let (status, body) = signup(&url, "alice", "example.net", "tr0ub4dor&3x").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("volume"),
        "{body}"
    );
}

/// Concurrent writers — separate backends, as separate processes would
/// be — never lose an entry: the flock serialises them.
#[test]
fn concurrent_dovecot_writers_lose_nothing() {
    use mailherd_signup::backend::dovecot::DovecotBackend;
    use mailherd_signup::backend::NewMailbox;
    use mailherd_signup::policy::Account;

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("accounts")).unwrap();
    let section = mailherd_config::DovecotBackendSection {
        users_file: dir.path().join("accounts/users"),
        mail_root: dir.path().join("vmail"),
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        postfix_map: Some(format!(
            "texthash:{}/accounts/vmailbox",
            dir.path().display()
        )),
    };
    let threads: Vec<_> = (0..24)
        .map(|i| {
            let backend = DovecotBackend::new(section.clone());
            std::thread::spawn(move || {
                backend.create(&NewMailbox {
                    account: Account {
                        local_part: format!("user{i}"),
                        domain: "example.net".into(),
                        password: "tr0ub4dor&3x".into(),
                        name: String::new(),
                    },
                    quota_mib: 100,
                    max_mailboxes_per_domain: 20,
                })
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let made = results.iter().filter(|r| r.is_ok()).count();
    let full = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Err(mailherd_signup::backend::BackendError::DomainFull { .. })
            )
        })
        .count();
    assert_eq!((made, full), (20, 4), "{results:?}");
    let users = std::fs::read_to_string(&section.users_file).unwrap();
    let map = std::fs::read_to_string(dir.path().join("accounts/vmailbox")).unwrap();
    assert_eq!(users.lines().count(), 20);
    assert_eq!(map.lines().count(), 20);
    for result in results.iter().flatten() {
        assert!(users.contains(&format!("{result}:")), "{result} lost");
        assert!(
            map.contains(&format!("{result} ")),
            "{result} lost from the map"
        );
    }
}
