//! The simulator over real HTTP, spoken to without the client: status
//! codes, documents and headers as the reference gives them; the control
//! API; the state file; shutdown; the binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailherd_hcloud_sim::{RateLimitConfig, SimConfig, SimHandle, Simulator, World};
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};

const TOKEN: &str = "sim-http-token";

fn world() -> World {
    World::from_json_str(
        r#"{"servers":[{"id":1,"name":"n1","location":"fsn1"},{"id":2,"name":"n2","location":"fsn1"}],
            "floating_ips":[{"id":1,"ip":"203.0.113.10","home_location":"fsn1","server":1}],
            "volumes":[{"id":10,"location":"fsn1","server":1},{"id":11,"location":"fsn1"}]}"#,
    )
    .unwrap()
}

fn config() -> SimConfig {
    SimConfig {
        action_duration: Duration::from_millis(50),
        jitter: Duration::ZERO,
        rate_limit: RateLimitConfig {
            limit: 100_000,
            refill_per_second: 1000.0,
        },
        ..SimConfig::new(TOKEN)
    }
}

async fn start(config: SimConfig) -> SimHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::new(config, world())
        .unwrap()
        .serve(listener)
        .await
        .unwrap()
}

/// An API request with the token.
async fn call(sim: &SimHandle, method: &str, path: &str, body: Option<Value>) -> Response {
    let url = format!("{}{path}", sim.base_url());
    let mut request = Client::new()
        .request(method.parse().unwrap(), url)
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn json_of(response: Response) -> Value {
    response.json().await.unwrap()
}

fn error_code(document: &Value) -> &str {
    document["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn a_request_without_the_token_is_unauthorized() {
    let sim = start(config()).await;
    let response = Client::new()
        .get(format!("{}/servers", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let document = json_of(response).await;
    assert_eq!(error_code(&document), "unauthorized");
    assert_eq!(document["error"]["details"], Value::Null);
    let wrong = Client::new()
        .get(format!("{}/servers", sim.base_url()))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn documents_are_wrapped_and_lists_paginated_as_the_reference_says() {
    let sim = start(config()).await;
    let response = call(&sim, "GET", "/floating_ips/1", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    for header in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
        assert!(response.headers().contains_key(header), "{header}");
    }
    let document = json_of(response).await;
    assert_eq!(document["floating_ip"]["server"], 1);
    assert_eq!(document["floating_ip"]["ip"], "203.0.113.10");

    let document = json_of(call(&sim, "GET", "/volumes?per_page=100", None).await).await;
    assert_eq!(document["volumes"].as_array().unwrap().len(), 2);
    assert_eq!(
        document["meta"]["pagination"]["per_page"], 50,
        "capped at 50"
    );
    let document = json_of(call(&sim, "GET", "/servers?per_page=1&page=2", None).await).await;
    assert_eq!(document["servers"][0]["id"], 2);
    assert_eq!(document["meta"]["pagination"]["previous_page"], 1);
    assert_eq!(document["meta"]["pagination"]["next_page"], Value::Null);

    let response = call(&sim, "GET", "/servers?page=0", None).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&json_of(response).await), "invalid_input");
}

#[tokio::test]
async fn unknown_ids_and_paths_are_not_found() {
    let sim = start(config()).await;
    for path in [
        "/volumes/99",
        "/servers/99",
        "/floating_ips/99",
        "/actions/99",
        "/networks",
    ] {
        let response = call(&sim, "GET", path, None).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(error_code(&json_of(response).await), "not_found", "{path}");
    }
    let response = call(&sim, "POST", "/volumes/99/actions/detach", None).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_bodies_are_invalid_input_naming_the_field() {
    let sim = start(config()).await;
    let url = format!("{}/volumes/11/actions/attach", sim.base_url());
    let response = Client::new()
        .post(&url)
        .bearer_auth(TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let document = json_of(response).await;
    assert_eq!(error_code(&document), "invalid_input");
    assert_eq!(document["error"]["details"]["fields"][0]["name"], "server");

    let response = call(
        &sim,
        "POST",
        "/volumes/11/actions/attach",
        Some(json!({"automount": false})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = call(
        &sim,
        "POST",
        "/floating_ips/1/actions/assign",
        Some(json!({"server": "two"})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_action_runs_then_succeeds_and_locks_meanwhile() {
    // Long enough that the checks below see it running on a loaded machine.
    let sim = start(SimConfig {
        action_duration: Duration::from_millis(1000),
        ..config()
    })
    .await;
    let response = call(
        &sim,
        "POST",
        "/floating_ips/1/actions/assign",
        Some(json!({"server": 2})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let action = json_of(response).await["action"].clone();
    assert_eq!(action["status"], "running");
    assert_eq!(action["command"], "assign_floating_ip");
    assert_eq!(action["finished"], Value::Null);
    assert_eq!(action["error"], Value::Null);
    assert!(action["started"].as_str().unwrap().ends_with("+00:00"));
    assert_eq!(
        action["resources"],
        json!([{"id": 2, "type": "server"}, {"id": 1, "type": "floating_ip"}])
    );

    // Meanwhile the floating IP and server 2 are locked.
    let response = call(&sim, "POST", "/floating_ips/1/actions/unassign", None).await;
    assert_eq!(response.status(), StatusCode::LOCKED);
    assert_eq!(error_code(&json_of(response).await), "locked");
    let server = json_of(call(&sim, "GET", "/servers/2", None).await).await;
    assert_eq!(server["server"]["locked"], true);

    let path = format!("/actions/{}", action["id"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let action = loop {
        let action = json_of(call(&sim, "GET", &path, None).await).await["action"].clone();
        if action["status"] != "running" {
            break action;
        }
        assert!(Instant::now() < deadline, "still running: {action}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(action["status"], "success");
    assert_eq!(action["progress"], 100);
    assert!(action["finished"].as_str().unwrap().ends_with("+00:00"));
    let floating_ip = json_of(call(&sim, "GET", "/floating_ips/1", None).await).await;
    assert_eq!(floating_ip["floating_ip"]["server"], 2);
    let server = json_of(call(&sim, "GET", "/servers/2", None).await).await;
    assert_eq!(server["server"]["locked"], false);
    assert_eq!(server["server"]["public_net"]["floating_ips"], json!([1]));
}

#[tokio::test]
async fn an_empty_bucket_answers_429_with_the_headers() {
    let sim = start(SimConfig {
        rate_limit: RateLimitConfig {
            limit: 2,
            refill_per_second: 0.01,
        },
        ..config()
    })
    .await;
    for remaining in ["1", "0"] {
        let response = call(&sim, "GET", "/servers", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["ratelimit-remaining"], remaining);
    }
    let response = call(&sim, "GET", "/servers", None).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["ratelimit-limit"], "2");
    assert_eq!(response.headers()["ratelimit-remaining"], "0");
    assert_eq!(error_code(&json_of(response).await), "rate_limit_exceeded");
    assert_eq!(sim.request_count("GET", "/v1/servers"), 3);
}

#[tokio::test]
async fn the_control_api_injects_faults_and_shows_the_world() {
    let sim = start(config()).await;
    let control = |path: &str| format!("{}{path}", sim.metadata_url());
    let http = Client::new();

    let response = http
        .post(control("/_sim/faults"))
        .json(&json!({"path_contains": "/servers/1", "method": "GET", "status": 503, "code": "service_error", "count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(json_of(response).await["fault"]["kind"], "http");
    let faults = json_of(http.get(control("/_sim/faults")).send().await.unwrap()).await;
    assert_eq!(faults["faults"].as_array().unwrap().len(), 1);

    let response = call(&sim, "GET", "/servers/1", None).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&json_of(response).await), "service_error");
    assert_eq!(
        call(&sim, "GET", "/servers/1", None).await.status(),
        StatusCode::OK
    );

    http.post(control("/_sim/faults"))
        .json(&json!({"status": 502, "count": 5}))
        .send()
        .await
        .unwrap();
    let response = call(&sim, "GET", "/servers/2", None).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(
        !response.headers().contains_key("ratelimit-limit"),
        "the edge's answer"
    );
    assert!(response.text().await.unwrap().contains("502 Bad Gateway"));
    let response = http.delete(control("/_sim/faults")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(sim.faults().is_empty());

    let response = http
        .post(control("/_sim/faults"))
        .json(&json!({"kind": "no_such_kind"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let response = http
        .post(control("/_sim/servers/2/power"))
        .json(&json!({"on": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let server = json_of(call(&sim, "GET", "/servers/2", None).await).await;
    assert_eq!(server["server"]["status"], "off");

    let world: World = http
        .get(control("/_sim/world"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(world, sim.world());
    assert_eq!(
        world.volumes[0].linux_device,
        "/dev/disk/by-id/scsi-0HC_Volume_10"
    );

    let requests = json_of(http.get(control("/_sim/requests")).send().await.unwrap()).await;
    assert_eq!(requests["requests"]["GET /v1/servers/1"], 2);
    assert_eq!(
        requests["requests"].get("GET /_sim/world"),
        None,
        "control is not counted"
    );
}

#[tokio::test]
async fn the_metadata_service_answers_for_the_named_server() {
    let sim = start(config()).await;
    let http = Client::new();
    let url = format!("{}/hetzner/v1/metadata/instance-id", sim.metadata_url());
    assert_eq!(
        http.get(&url).send().await.unwrap().text().await.unwrap(),
        "1"
    );
    let named = http
        .get(&url)
        .header("X-Sim-Server", "n2")
        .send()
        .await
        .unwrap();
    assert_eq!(named.text().await.unwrap(), "2");
    let hostname = format!(
        "{}/hetzner/v1/metadata/hostname",
        sim.metadata_url_for("n2")
    );
    assert_eq!(
        http.get(&hostname)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "n2"
    );
}

#[tokio::test]
async fn the_world_is_written_to_the_state_file_after_each_change() {
    let dir = tempfile::tempdir().unwrap();
    let state_file = dir.path().join("world.json");
    let sim = start(SimConfig {
        state_file: Some(state_file.clone()),
        ..config()
    })
    .await;
    let response = call(&sim, "POST", "/volumes/10/actions/detach", None).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(world) = World::from_json_file(&state_file) {
            if world.volume(10).unwrap().server.is_none() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "state file not written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shutdown_does_not_wait_for_held_requests() {
    let sim = start(config()).await;
    sim.inject(mailherd_hcloud_sim::Fault::timeout("/servers", 1));
    let url = format!("{}/servers", sim.base_url());
    let held = tokio::spawn(async move { Client::new().get(url).bearer_auth(TOKEN).send().await });
    // Until the request is held (counted), not a fixed sleep.
    while sim.request_count("GET", "/v1/servers") == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    sim.shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let response = held.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn latency_is_added_to_every_answer() {
    let sim = start(SimConfig {
        latency: Duration::from_millis(100),
        ..config()
    })
    .await;
    let started = Instant::now();
    call(&sim, "GET", "/servers/1", None).await;
    assert!(started.elapsed() >= Duration::from_millis(100));
}

/// The binary: serves the world from --state with the token from
/// --token-file, says where it listens, and exits 0 on SIGTERM.
#[tokio::test]
async fn the_binary_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("world.json");
    let token_file = dir.path().join("token");
    std::fs::write(&state, serde_json::to_vec(&world()).unwrap()).unwrap();
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailherd-hcloud-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--action-duration-ms",
            "50",
            "--jitter-ms",
            "0",
        ])
        .arg("--state")
        .arg(&state)
        .arg("--token-file")
        .arg(&token_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base_url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();

    let response = Client::new()
        .get(format!("{base_url}/servers/2"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json_of(response).await["server"]["name"], "n2");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}
