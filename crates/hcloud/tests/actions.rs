//! Actions end to end: assign, unassign, attach, detach; waiting for them;
//! the event hook; `locked`; actions that fail or never end.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mailherd_hcloud::{ActionStatus, Client, ClientConfig, Error, ErrorCode, RetryPolicy};
use mailherd_hcloud_sim::{Fault, SimEvent};

#[tokio::test]
async fn assign_and_wait_moves_the_ip_after_the_hook_has_run() {
    let hook_delay = Duration::from_millis(150);
    let cloud = start_with(world(), sim_config(), hook_delay).await;
    let client = client(&cloud.sim);

    let started = Instant::now();
    let action = client.assign_and_wait(FLOATING_IP, N2).await.unwrap();
    // Success is reported only once the hook has returned.
    assert!(started.elapsed() >= hook_delay, "{:?}", started.elapsed());
    assert_eq!(action.status, ActionStatus::Success);
    assert_eq!(action.command, "assign_floating_ip");
    assert_eq!(action.progress, 100);
    assert!(action.finished.is_some());
    let mut resources: Vec<_> = action
        .resources
        .iter()
        .map(|resource| (resource.id, resource.r#type.as_str()))
        .collect();
    resources.sort();
    assert_eq!(resources, [(FLOATING_IP, "floating_ip"), (N2, "server")]);

    assert_eq!(
        cloud.events(),
        [SimEvent::FloatingIpAssigned {
            floating_ip: FLOATING_IP,
            ip: "203.0.113.10".to_string(),
            server: Some(N2),
        }]
    );
    assert_eq!(
        client.floating_ip(FLOATING_IP).await.unwrap().server,
        Some(N2)
    );
    assert_eq!(cloud.sim.world().floating_ips[0].server, Some(N2));
}

#[tokio::test]
async fn unassign_and_wait_leaves_the_ip_on_no_server() {
    let cloud = start().await;
    let client = client(&cloud.sim);
    client.unassign_and_wait(FLOATING_IP).await.unwrap();
    assert_eq!(client.floating_ip(FLOATING_IP).await.unwrap().server, None);
    assert!(matches!(
        cloud.events()[..],
        [SimEvent::FloatingIpAssigned { server: None, .. }]
    ));
}

#[tokio::test]
async fn attaching_a_volume_attached_elsewhere_is_a_typed_final_error() {
    let cloud = start().await;
    let client = client(&cloud.sim);
    let error = client
        .attach_volume(ATTACHED_VOLUME, N2, false)
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Some(ErrorCode::VolumeAlreadyAttached),
        "{error}"
    );
    assert_eq!(error.api_error().unwrap().status, 422);
    assert!(
        error
            .to_string()
            .starts_with("POST /volumes/10/actions/attach: volume_already_attached (HTTP 422)"),
        "{error}"
    );
    assert_eq!(
        cloud
            .sim
            .request_count("POST", "/v1/volumes/10/actions/attach"),
        1,
        "not retried"
    );
}

#[tokio::test]
async fn a_volume_and_a_server_in_different_locations_are_invalid_input() {
    let cloud = start().await;
    let client = client(&cloud.sim);
    let error = client
        .attach_volume(HEL1_VOLUME, N1, false)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidInput), "{error}");
    assert_eq!(
        error.api_error().unwrap().details["fields"][0]["name"],
        "server"
    );
}

#[tokio::test]
async fn detach_then_attach_moves_the_volume() {
    let cloud = start().await;
    let client = client(&cloud.sim);
    client.detach_and_wait(ATTACHED_VOLUME).await.unwrap();
    assert_eq!(client.volume(ATTACHED_VOLUME).await.unwrap().server, None);
    client
        .attach_and_wait(ATTACHED_VOLUME, N2, false)
        .await
        .unwrap();
    assert_eq!(
        client.volume(ATTACHED_VOLUME).await.unwrap().server,
        Some(N2)
    );
    let device = "/dev/disk/by-id/scsi-0HC_Volume_10".to_string();
    assert_eq!(
        cloud.events(),
        [
            SimEvent::VolumeAttached {
                volume: ATTACHED_VOLUME,
                server: None,
                linux_device: device.clone(),
            },
            SimEvent::VolumeAttached {
                volume: ATTACHED_VOLUME,
                server: Some(N2),
                linux_device: device,
            },
        ]
    );
    assert_eq!(client.server(N2).await.unwrap().volumes, [ATTACHED_VOLUME]);
}

#[tokio::test]
async fn an_attach_during_a_running_detach_is_locked_then_retried_until_it_succeeds() {
    let cloud = start_slow(Duration::from_millis(400)).await;
    let client = client(&cloud.sim);
    // The detach is not waited for: the attach finds the volume locked.
    let detach = client.detach_volume(ATTACHED_VOLUME).await.unwrap();
    assert_eq!(detach.status, ActionStatus::Running);
    let attach = client
        .attach_and_wait(ATTACHED_VOLUME, N2, false)
        .await
        .unwrap();
    assert_eq!(attach.status, ActionStatus::Success);
    assert_eq!(
        client.volume(ATTACHED_VOLUME).await.unwrap().server,
        Some(N2)
    );
    let attempts = cloud
        .sim
        .request_count("POST", "/v1/volumes/10/actions/attach");
    assert!(
        attempts >= 2,
        "locked answers were retried: {attempts} attempts"
    );
}

#[tokio::test]
async fn a_server_busy_with_an_action_is_locked_for_others() {
    let cloud = start_slow(Duration::from_millis(1000)).await;
    let client = Client::new(ClientConfig {
        retry: RetryPolicy {
            locked_max_retries: 0,
            ..fast_policy()
        },
        ..client_config(&cloud.sim)
    })
    .unwrap();
    let attach = client.attach_volume(FREE_VOLUME, N2, false).await.unwrap();
    assert!(client.server(N2).await.unwrap().locked);
    let error = client
        .assign_floating_ip(FLOATING_IP, N2)
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::Locked), "{error}");
    assert_eq!(error.api_error().unwrap().status, 423);
    client.wait_action(&attach).await.unwrap();
    assert!(!client.server(N2).await.unwrap().locked);
    client.assign_and_wait(FLOATING_IP, N2).await.unwrap();
}

#[tokio::test]
async fn an_action_ending_in_error_is_action_failed_and_changes_nothing() {
    let cloud = start().await;
    let client = client(&cloud.sim);
    cloud
        .sim
        .inject(Fault::action_error("attach_volume", "action_failed", 1));
    let error = client
        .attach_and_wait(FREE_VOLUME, N1, false)
        .await
        .unwrap_err();
    match &error {
        Error::ActionFailed { command, code, .. } => {
            assert_eq!(command, "attach_volume");
            assert_eq!(code, "action_failed");
        }
        other => panic!("expected ActionFailed, got {other:?}"),
    }
    assert!(error.to_string().starts_with("GET /actions/"), "{error}");
    assert_eq!(client.volume(FREE_VOLUME).await.unwrap().server, None);
    assert!(cloud.events().is_empty());
    // The fault is used up and the locks released: the next attach works.
    client
        .attach_and_wait(FREE_VOLUME, N1, false)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_action_that_never_ends_is_action_timeout() {
    let cloud = start().await;
    let client = Client::new(ClientConfig {
        action_timeout: Duration::from_millis(300),
        ..client_config(&cloud.sim)
    })
    .unwrap();
    cloud
        .sim
        .inject(Fault::action_stuck("assign_floating_ip", 1));
    let started = Instant::now();
    let error = client.assign_and_wait(FLOATING_IP, N2).await.unwrap_err();
    let waited = started.elapsed();
    match &error {
        Error::ActionTimeout {
            command, waited_ms, ..
        } => {
            assert_eq!(command, "assign_floating_ip");
            assert!(*waited_ms >= 300, "{waited_ms}");
        }
        other => panic!("expected ActionTimeout, got {other:?}"),
    }
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert_eq!(
        client.floating_ip(FLOATING_IP).await.unwrap().server,
        Some(N1)
    );
}
