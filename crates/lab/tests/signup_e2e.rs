//! The signup service in the lab (`up --stack mail --signup`): an account
//! made through `POST /api/signup` on the floating IP logs in over IMAP
//! and receives mail there, also after the master fails over (the
//! accounts are on the shared volume); the same address again is 409, a
//! weak password 422, and too many attempts 429.
//!
//! Needs root and the binaries (`cargo build --bins`); runs on a lab of
//! its own (prefix `ms`, `/var/lib/ms`).

mod common;

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{text, LabEnv};
use serde_json::{json, Value};

static LOCK: Mutex<()> = Mutex::new(());
static LAB: LabEnv = LabEnv {
    prefix: "ms",
    dir: "/var/lib/ms",
    lock: &LOCK,
};

const WAIT: Duration = Duration::from_secs(60);

/// Polls `check` every 250 ms until it returns `Some`, for at most `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "waited {timeout:?} for {what} in vain; status: {}",
            text(&LAB.run(&["status", "--json"]).stdout)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// curl from the client namespace (which sees only the floating IP):
/// the status code and the JSON body.
fn http(namespace: &str, method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    let mut command = Command::new("ip");
    command
        .args([
            "netns", "exec", namespace, "curl", "-sS", "-m", "10", "-X", method,
        ])
        .args(["-w", "\n%{http_code}", url]);
    if let Some(body) = body {
        command.args(["-H", "Content-Type: application/json", "--data-binary"]);
        command.arg(body.to_string());
    }
    let output = command.output().expect("curl runs");
    let stdout = text(&output.stdout);
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// `n` fresh form tokens, aged past the lab's 1 s minimum.
fn tokens(namespace: &str, url: &str, n: usize) -> Vec<String> {
    let tokens = (0..n)
        .map(|_| {
            let (code, body) = http(namespace, "GET", &format!("{url}/api/token"), None);
            assert_eq!(code, 200, "GET /api/token: {body}");
            assert_eq!(body["min_age_s"], 1);
            body["token"].as_str().unwrap().to_string()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1_100));
    tokens
}

fn inbox(user: &str, password: &str) -> Option<Value> {
    let output = LAB.run(&[
        "mail",
        "list",
        "--json",
        "--user",
        user,
        "--password",
        password,
    ]);
    output
        .status
        .success()
        .then(|| serde_json::from_slice(&output.stdout).expect("mail list --json"))
}

fn master(status: &Value) -> Option<String> {
    let masters: Vec<&Value> = status["nodes"]
        .as_array()?
        .iter()
        .filter(|n| n["role"] == "master")
        .collect();
    (masters.len() == 1).then(|| masters[0]["name"].as_str().unwrap().to_string())
}

#[test]
fn accounts_made_through_signup_log_in_and_receive_mail_across_a_failover() {
    let _lab = LAB.exclusive();
    LAB.ok(&["up", "--nodes", "3", "--stack", "mail", "--signup"]);
    let status: Value = serde_json::from_str(&LAB.ok(&["status", "--json"])).unwrap();
    let url = status["signup"]
        .as_str()
        .expect("status --json names the signup URL")
        .to_string();
    assert_eq!(
        url,
        format!("http://{}:8080", status["floating_ip"].as_str().unwrap())
    );
    let client = status["client_namespace"].as_str().unwrap().to_string();
    let signup = format!("{url}/api/signup");

    // The form, from the client namespace.
    let page = Command::new("ip")
        .args([
            "netns",
            "exec",
            &client,
            "curl",
            "-sS",
            "-m",
            "10",
            &format!("{url}/"),
        ])
        .output()
        .unwrap();
    assert!(
        text(&page.stdout).contains("name=\"local_part\""),
        "{}",
        text(&page.stdout)
    );

    let mut tokens = tokens(&client, &url, 7).into_iter();
    let password = "blue-Harbor-42-lantern";
    let request = |local: &str, password: &str, token: String| {
        json!({"local_part": local, "domain": "lab.test", "password": password,
               "name": "Bob Example", "token": token})
    };

    let (code, body) = http(
        &client,
        "POST",
        &signup,
        Some(&request("bob", password, tokens.next().unwrap())),
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["address"], "bob@lab.test");

    // Dovecot on the floating IP knows the new account at once.
    let listed = wait_for("bob's IMAP login", WAIT, || inbox("bob@lab.test", password));
    assert_eq!(listed["count"], 0);
    assert!(
        inbox("bob@lab.test", "not-his-password").is_none(),
        "a wrong password logs in"
    );

    // Postfix delivers to it.
    let reply = LAB.ok(&[
        "mail",
        "send",
        "--to",
        "bob@lab.test",
        "--subject",
        "welcome-bob",
    ]);
    assert!(reply.starts_with("250"), "{reply}");
    wait_for("the mail in bob's INBOX", WAIT, || {
        let listed = inbox("bob@lab.test", password)?;
        (listed["messages"][0]["subject"] == "welcome-bob").then_some(())
    });

    let (code, body) = http(
        &client,
        "POST",
        &signup,
        Some(&request(
            "bob",
            "another-long-phrase-7",
            tokens.next().unwrap(),
        )),
    );
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"], "exists");

    let (code, body) = http(
        &client,
        "POST",
        &signup,
        Some(&request("carol", "password123", tokens.next().unwrap())),
    );
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["reasons"][0]["field"], "password", "{body}");
    assert!(
        inbox("carol@lab.test", "password123").is_none(),
        "carol was not made"
    );

    // The lab allows 6 attempts per client: 3 made above, 3 more, then 429.
    for _ in 0..3 {
        let (code, body) = http(
            &client,
            "POST",
            &signup,
            Some(&request("-bad-", password, tokens.next().unwrap())),
        );
        assert_eq!(code, 422, "{body}");
    }
    let (code, body) = http(
        &client,
        "POST",
        &signup,
        Some(&request("dave", password, tokens.next().unwrap())),
    );
    assert_eq!(code, 429, "{body}");
    assert_eq!(body["error"], "rate_limited");

    // The account lives on the shared volume: after the master's power
    // fails, the new master serves it.
    let old = master(&status).expect("one master");
    LAB.ok(&["fail", &old, "--mode", "power"]);
    wait_for("a new master", WAIT, || {
        let status: Value = serde_json::from_str(&LAB.ok(&["status", "--json"])).ok()?;
        master(&status).filter(|m| *m != old)
    });
    let listed = wait_for("bob's INBOX on the new master", WAIT, || {
        inbox("bob@lab.test", password)
    });
    assert_eq!(listed["messages"][0]["subject"], "welcome-bob");
}
