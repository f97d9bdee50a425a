//! Reading resources over real HTTP from the simulator: single objects,
//! lists across pages, the metadata service, the rate-limit headers.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use mailherd_hcloud::{metadata_instance_id, Error, IpType, ServerStatus, VolumeStatus};
use mailherd_hcloud_sim::{RateLimitConfig, SimConfig, World};

#[tokio::test]
async fn one_floating_ip_volume_and_server_are_read_with_their_fields() {
    let cloud = start().await;
    let client = client(&cloud.sim);

    let floating_ip = client.floating_ip(FLOATING_IP).await.unwrap();
    assert_eq!(floating_ip.ip, "203.0.113.10");
    assert_eq!(floating_ip.name, "mail");
    assert_eq!(floating_ip.r#type, IpType::Ipv4);
    assert_eq!(floating_ip.server, Some(N1));
    assert_eq!(floating_ip.home_location.name, "fsn1");
    assert_eq!(floating_ip.description, None);
    assert!(!floating_ip.blocked);

    let volume = client.volume(FREE_VOLUME).await.unwrap();
    assert_eq!(volume.server, None);
    assert_eq!(volume.status, VolumeStatus::Available);
    assert_eq!(volume.location.name, "fsn1");
    assert_eq!(
        volume.linux_device.as_deref(),
        Some("/dev/disk/by-id/scsi-0HC_Volume_11")
    );
    assert_eq!(volume.format.as_deref(), Some("ext4"));

    let server = client.server(N1).await.unwrap();
    assert_eq!(server.name, "n1");
    assert_eq!(server.status, ServerStatus::Running);
    assert_eq!(server.volumes, vec![ATTACHED_VOLUME]);
    assert_eq!(server.public_net.unwrap().floating_ips, vec![FLOATING_IP]);
    assert_eq!(server.datacenter.unwrap().location.name, "fsn1");
    assert!(!server.locked);
}

#[tokio::test]
async fn lists_follow_every_page() {
    let mut world = World {
        servers: (1..=55)
            .map(|id| server(id, &format!("s{id}"), "fsn1"))
            .collect(),
        ..World::default()
    };
    world.volumes = (1..=120).map(|id| volume(id, "fsn1", None)).collect();
    world.floating_ips = common::world().floating_ips;
    let cloud = start_with(world, sim_config(), Duration::ZERO).await;
    let client = client(&cloud.sim);

    let volumes = client.volumes().await.unwrap();
    assert_eq!(
        volumes.iter().map(|volume| volume.id).collect::<Vec<_>>(),
        (1..=120).collect::<Vec<_>>()
    );
    // 50 per page: 3 pages.
    assert_eq!(cloud.sim.request_count("GET", "/v1/volumes"), 3);

    let servers = client.servers().await.unwrap();
    assert_eq!(servers.len(), 55);
    assert_eq!(servers[54].name, "s55");
    assert_eq!(cloud.sim.request_count("GET", "/v1/servers"), 2);

    let floating_ips = client.floating_ips().await.unwrap();
    assert_eq!(floating_ips.len(), 1);
    assert_eq!(cloud.sim.request_count("GET", "/v1/floating_ips"), 1);
}

#[tokio::test]
async fn the_metadata_service_names_the_server() {
    let cloud = start().await;
    // Without a name: the server with the lowest id.
    assert_eq!(
        metadata_instance_id(&cloud.sim.metadata_url())
            .await
            .unwrap(),
        N1
    );
    assert_eq!(
        metadata_instance_id(&cloud.sim.metadata_url_for("n2"))
            .await
            .unwrap(),
        N2
    );
    let error = metadata_instance_id(&cloud.sim.metadata_url_for("nope"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::UnexpectedStatus { status: 404, .. }),
        "{error:?}"
    );
    assert!(error
        .to_string()
        .starts_with("GET /hetzner/v1/metadata/instance-id: HTTP 404"));
}

#[tokio::test]
async fn rate_limit_headers_are_kept() {
    let config = SimConfig {
        rate_limit: RateLimitConfig {
            limit: 100,
            refill_per_second: 0.5,
        },
        ..sim_config()
    };
    let cloud = start_with(common::world(), config, Duration::ZERO).await;
    let client = client(&cloud.sim);
    assert_eq!(client.rate_limit(), None);
    client.server(N1).await.unwrap();
    let first = client.rate_limit().unwrap();
    assert_eq!((first.limit, first.remaining), (100, 99));
    // One request missing at 0.5/s: full again in 2 s.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        first.reset_unix > now && first.reset_unix <= now + 3,
        "{first:?}"
    );
    client.server(N2).await.unwrap();
    // Clones share the state: the limit is per project.
    assert_eq!(client.clone().rate_limit().unwrap().remaining, 98);
}

#[tokio::test]
async fn a_success_that_is_not_the_expected_document_is_a_decode_error_naming_the_path() {
    let cloud = start().await;
    // Something other than the API answers 200 with an HTML page.
    cloud.sim.inject(mailherd_hcloud_sim::Fault::bare_status(
        "/v1/volumes",
        200,
        1,
    ));
    let error = client(&cloud.sim).volumes().await.unwrap_err();
    assert!(matches!(error, Error::Decode { .. }), "{error:?}");
    assert!(
        error.to_string().starts_with(
            "GET /volumes?page=1&per_page=50: cannot decode the response: not a JSON object"
        ),
        "{error}"
    );
}
