//! The signup form in a real browser (headless Chromium's `--dump-dom`:
//! the DOM after parsing, as a person's browser builds it) and the form's
//! submission path (`POST /` with a urlencoded body, as the browser sends
//! it). Skipped, saying so, where Chromium is not installed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mailherd_config::Config;
use mailherd_mailcow_sim::{Domain, MailcowSim, SimConfig};

const CHROMIUM: &str = "/usr/bin/chromium";

async fn start() -> (String, mailherd_mailcow_sim::SimHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = SimConfig::new("key");
    sim.domains = vec![Domain::new("example.net"), Domain::new("example.org")];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = MailcowSim::new(sim).serve(listener).unwrap();
    // An agent that always says master.
    let agent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_address = agent.local_addr().unwrap();
    tokio::spawn(async move {
        let app = axum::Router::new().route("/master", axum::routing::get(|| async { "master" }));
        axum::serve(agent, app).await
    });
    std::fs::write(dir.path().join("key"), "key").unwrap();
    let text = format!(
        "[node]\nname = \"n1\"\ndata_dir = \"/var/lib/mailherd\"\n[cluster]\nname = \"c\"\n\
         [[members]]\nname = \"n1\"\nid = 1\npeer = \"127.0.0.1:1\"\napi = \"{agent_address}\"\n\
         [api]\nlisten = \"127.0.0.1:2\"\npeer_listen = \"127.0.0.1:1\"\n\
         [signup]\nlisten = \"127.0.0.1:0\"\nbackend = \"mailcow\"\n\
         domains = [\"example.net\", \"example.org\"]\ntoken_min_age_s = 1\n\
         [signup.mailcow]\napi_url = \"{}\"\napi_key_file = \"{}/key\"\n",
        sim.base_url(),
        dir.path().display()
    );
    let config = Config::parse(Path::new("browser.toml"), &text).unwrap_or_else(|p| panic!("{p}"));
    let service = mailherd_signup::Service::from_config(&config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(mailherd_signup::run(
        service,
        listener,
        std::future::pending(),
    ));
    (url, sim, dir)
}

/// Chromium's DOM of `url`, after parsing.
async fn dump_dom(url: &str, profile: &Path) -> String {
    let url = url.to_string();
    let profile = profile.to_path_buf();
    // Blocking: Chromium runs while the service answers on the runtime.
    let output = tokio::task::spawn_blocking(move || {
        Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--dump-dom")
            .arg(url)
            .output()
            .expect("running chromium")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_form_in_headless_chromium_has_every_field() {
    if !Path::new(CHROMIUM).exists() {
        eprintln!("SKIPPED: {CHROMIUM} is not installed (Debian package chromium)");
        return;
    }
    let (url, _sim, dir) = start().await;
    let dom = dump_dom(&format!("{url}/"), &dir.path().join("chromium")).await;
    for needle in [
        "<form method=\"post\" action=\"/\" id=\"signup\">",
        "id=\"local_part\" name=\"local_part\" required=\"\"",
        "<select id=\"domain\" name=\"domain\">",
        "<option value=\"example.net\" selected=\"\">example.net</option>",
        "<option value=\"example.org\">example.org</option>",
        "id=\"password\" name=\"password\" type=\"password\" required=\"\" minlength=\"10\"",
        "id=\"name\" name=\"name\"",
        // The honeypot is in the DOM, hidden from people.
        "<div class=\"trap\" aria-hidden=\"true\">",
        "id=\"website\" name=\"website\" tabindex=\"-1\"",
        "<input type=\"hidden\" name=\"token\" value=\"",
        "<button type=\"submit\">Create my mailbox</button>",
    ] {
        assert!(dom.contains(needle), "the DOM lacks {needle:?}:\n{dom}");
    }
}

/// What a browser sends for a form: `key=value&...`, percent-encoded.
fn urlencoded(fields: &[(&str, String)]) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    fields
        .iter()
        .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_form_submission_shows_reasons_then_the_new_address() {
    let (url, sim, _dir) = start().await;
    let page = reqwest::get(format!("{url}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = page
        .split("name=\"token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a token in the form")
        .to_string();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let client = reqwest::Client::new();
    let post = |fields: Vec<(&'static str, String)>| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let response = client
                .post(format!("{url}/"))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(urlencoded(&fields))
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let (status, page) = post(vec![
        ("local_part", "alice".into()),
        ("domain", "example.net".into()),
        ("password", "123456".into()),
        ("website", String::new()),
        ("token", token.clone()),
    ])
    .await;
    assert_eq!(status, 422);
    assert!(page.contains("Password: is too short"), "{page}");
    // The page keeps what was typed and carries a fresh token.
    assert!(page.contains("value=\"alice\""), "{page}");
    let fresh = page
        .split("name=\"token\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    assert_ne!(fresh, token);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, page) = post(vec![
        ("local_part", "alice".into()),
        ("domain", "example.org".into()),
        ("password", "tr0ub4dor & 3x".into()),
        ("name", "Alice <Example>".into()),
        ("website", String::new()),
        ("token", fresh),
    ])
    .await;
    assert_eq!(status, 201, "{page}");
    assert!(
        page.contains("<strong>alice@example.org</strong> is ready"),
        "{page}"
    );
    let made = sim.mailboxes();
    assert_eq!(made["alice@example.org"].name, "Alice <Example>");
}
