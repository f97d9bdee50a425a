//! The retry policy against a real server: what is retried (the
//! simulator's counters show the attempts), what is not, when the client
//! gives up, and how it paces itself by the rate-limit headers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mailherd_hcloud::{Client, ClientConfig, Error, ErrorCode, RetryPolicy};
use mailherd_hcloud_sim::{Fault, RateLimitConfig, SimConfig};

#[tokio::test]
async fn bad_gateway_with_an_error_document_is_retried() {
    let cloud = start().await;
    cloud
        .sim
        .inject(Fault::http("/v1/volumes/10", 502, "bad_gateway", 2));
    let volume = client(&cloud.sim).volume(ATTACHED_VOLUME).await.unwrap();
    assert_eq!(volume.id, ATTACHED_VOLUME);
    assert_eq!(cloud.sim.request_count("GET", "/v1/volumes/10"), 3);
}

#[tokio::test]
async fn bare_502_and_504_from_the_edge_are_retried() {
    let cloud = start().await;
    cloud
        .sim
        .inject(Fault::bare_status("/v1/servers/1", 502, 1));
    cloud
        .sim
        .inject(Fault::bare_status("/v1/servers/1", 504, 1));
    client(&cloud.sim).server(N1).await.unwrap();
    assert_eq!(cloud.sim.request_count("GET", "/v1/servers/1"), 3);
}

#[tokio::test]
async fn rate_limit_exceeded_is_retried() {
    let cloud = start().await;
    cloud
        .sim
        .inject(Fault::http("/v1/servers/1", 429, "rate_limit_exceeded", 2));
    client(&cloud.sim).server(N1).await.unwrap();
    assert_eq!(cloud.sim.request_count("GET", "/v1/servers/1"), 3);
}

#[tokio::test]
async fn conflict_on_an_action_request_is_retried() {
    let cloud = start().await;
    cloud
        .sim
        .inject(Fault::http("/actions/assign", 409, "conflict", 1));
    client(&cloud.sim)
        .assign_and_wait(FLOATING_IP, N2)
        .await
        .unwrap();
    assert_eq!(
        cloud
            .sim
            .request_count("POST", "/v1/floating_ips/1/actions/assign"),
        2
    );
}

#[tokio::test]
async fn the_client_gives_up_after_max_retries_with_a_clear_error() {
    let cloud = start().await;
    let client = client(&cloud.sim);

    cloud.sim.inject(Fault::http(
        "/v1/servers/1",
        429,
        "rate_limit_exceeded",
        100,
    ));
    let error = client.server(N1).await.unwrap_err();
    assert!(
        matches!(error, Error::RateLimited { attempts: 4, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("GET /servers/1: rate limit exceeded, gave up after 4 attempts"),
        "{message}"
    );
    // max_retries 3: one request and three retries.
    assert_eq!(cloud.sim.request_count("GET", "/v1/servers/1"), 4);

    cloud
        .sim
        .inject(Fault::http("/v1/volumes/11", 502, "bad_gateway", 100));
    let error = client.volume(FREE_VOLUME).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::BadGateway));
    assert_eq!(
        error.to_string(),
        "GET /volumes/11: bad_gateway (HTTP 502): bad_gateway (injected) (gave up after 4 attempts)"
    );
    assert_eq!(cloud.sim.request_count("GET", "/v1/volumes/11"), 4);

    cloud
        .sim
        .inject(Fault::bare_status("/v1/servers/2", 504, 100));
    let error = client.server(N2).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::UnexpectedStatus {
                status: 504,
                attempts: 4,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("504 Gateway Timeout"), "{error}");
}

#[tokio::test]
async fn final_errors_are_not_retried() {
    let cloud = start().await;
    let client = client(&cloud.sim);

    let error = client.volume(999).await.unwrap_err();
    assert!(error.is_not_found(), "{error:?}");
    assert_eq!(
        error.to_string(),
        "GET /volumes/999: not_found (HTTP 404): volume with ID 999 not found"
    );
    assert_eq!(cloud.sim.request_count("GET", "/v1/volumes/999"), 1);

    cloud
        .sim
        .inject(Fault::http("/v1/servers/3", 503, "service_error", 100));
    let error = client.server(N3).await.unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::ServiceError));
    assert_eq!(cloud.sim.request_count("GET", "/v1/servers/3"), 1);

    cloud
        .sim
        .inject(Fault::bare_status("/v1/servers/2", 500, 100));
    assert!(matches!(
        client.server(N2).await.unwrap_err(),
        Error::UnexpectedStatus {
            status: 500,
            attempts: 1,
            ..
        }
    ));
    assert_eq!(cloud.sim.request_count("GET", "/v1/servers/2"), 1);
}

#[tokio::test]
async fn a_request_that_hangs_times_out_and_is_not_retried() {
    let cloud = start().await;
    let client = Client::new(ClientConfig {
        request_timeout: Duration::from_millis(200),
        ..client_config(&cloud.sim)
    })
    .unwrap();
    cloud.sim.inject(Fault::timeout("/v1/volumes/10", 1));
    let started = Instant::now();
    let error = client.volume(ATTACHED_VOLUME).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(
            error,
            Error::Transport {
                timed_out: true,
                attempts: 1,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().starts_with("GET /volumes/10: "),
        "{error}"
    );
    assert_eq!(cloud.sim.request_count("GET", "/v1/volumes/10"), 1);
    // The fault is used up.
    client.volume(ATTACHED_VOLUME).await.unwrap();
}

/// A simulator whose bucket holds `limit` requests, refilling at `per_second`,
/// and a client config whose cap lets it honour waits of up to 2 s.
async fn rate_limited(limit: u32, per_second: f64) -> (Cloud, ClientConfig) {
    let config = SimConfig {
        rate_limit: RateLimitConfig {
            limit,
            refill_per_second: per_second,
        },
        ..sim_config()
    };
    let cloud = start_with(world(), config, Duration::ZERO).await;
    let config = ClientConfig {
        retry: RetryPolicy {
            cap: Duration::from_secs(2),
            ..fast_policy()
        },
        ..client_config(&cloud.sim)
    };
    (cloud, config)
}

#[tokio::test]
async fn an_empty_bucket_delays_the_next_request_instead_of_causing_a_429() {
    // 3 requests, one more every 250 ms.
    let (cloud, config) = rate_limited(3, 4.0).await;
    let client = Client::new(config).unwrap();
    let started = Instant::now();
    for _ in 0..4 {
        client.server(N1).await.unwrap();
    }
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(cloud.sim.request_count("GET", "/v1/servers/1"), 4, "no 429");
}

#[tokio::test]
async fn a_429_is_retried_when_the_headers_allow_a_request_not_before() {
    // 2 requests, one more every second: the second client's first request
    // meets the empty bucket even on a loaded machine.
    let (cloud, config) = rate_limited(2, 1.0).await;
    let draining = Client::new(config.clone()).unwrap();
    draining.server(N1).await.unwrap();
    draining.server(N1).await.unwrap();
    // A second client knows nothing of the empty bucket: it gets a 429,
    // then waits as the headers say. Retrying earlier (the 10 ms backoff)
    // would have met another 429.
    let fresh = Client::new(config).unwrap();
    let started = Instant::now();
    fresh.server(N2).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(cloud.sim.request_count("GET", "/v1/servers/2"), 2);
}
