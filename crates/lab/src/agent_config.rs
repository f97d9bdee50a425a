//! Each node's agent config, built as a [`mailherd_config::Config`].
//!
//! The lab writes configs through the config crate's own types and
//! [`Config::to_toml`], then parses the text back with [`Config::parse`], so
//! a lab config is always one the agent accepts (the same validation runs).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::{Context, Result};
use mailherd_config::{
    ApiSection, ClusterSection, Config, FloatingIpDriver, FloatingIpSection, HetznerSection,
    Member, MemberRole, NodeSection, ReplicationSection, TimingProfile, TlsSection, VolumeDriver,
    VolumeSection, WatchdogDriver, WatchdogMode, WatchdogSection,
};

use crate::state::{LabState, NodeState, Storage};
use crate::topology::{NodeKind, API_PORT, NODE_INTERFACE, PEER_PORT};

/// The name of the one shared volume.
pub const VOLUME_NAME: &str = "mail";

/// `--storage btrfs`: how often the master ships a snapshot. Short, so the
/// lab shows the loss window of a failover in seconds.
pub const REPLICATION_INTERVAL_MS: u64 = 2_000;

pub fn node_config(state: &LabState, node: &NodeState) -> Result<Config> {
    let any_address = |port| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    let members = state
        .nodes
        .iter()
        .map(|member| Member {
            name: member.name.clone(),
            id: member.id,
            role: match member.kind {
                NodeKind::Mail => MemberRole::Mail,
                NodeKind::Witness => MemberRole::Witness,
            },
            priority: 100,
            peer: member.peer,
            api: member.api,
        })
        .collect();
    let mut config = Config {
        node: NodeSection {
            name: node.name.clone(),
            data_dir: node.dir.join("data"),
            join: node.joined,
        },
        cluster: ClusterSection {
            name: "lab".to_string(),
            timing: TimingProfile::Fast,
            lease_ms: None,
            drift_margin_ms: None,
            renew_interval_ms: None,
            fence_budget_ms: None,
            election_timeout_min_ms: None,
            election_timeout_max_ms: None,
            heartbeat_interval_ms: None,
            grace_ms: None,
            fault_cooldown_ms: None,
            breaker_max_failovers: 2,
            breaker_window_s: 3_600,
            preempt: false,
        },
        members,
        api: ApiSection {
            listen: any_address(API_PORT),
            peer_listen: any_address(PEER_PORT),
            token_file: Some(crate::topology::token_file(&state.lab_dir)),
        },
        floating_ip: None,
        volumes: Vec::new(),
        preset: None,
        hetzner: None,
        alerts: None,
        uptime_kuma: None,
        haproxy: None,
        gateway: None,
        dns: None,
        mariadb: None,
        reconciler: Default::default(),
        gc: Default::default(),
        signup: None,
        services: None,
        checks: Vec::new(),
        // The whole lab runs its peer channel over mTLS; `up` makes the
        // files (crate::commands::up::write_tls_files).
        tls: Some(tls_section(state, node)),
        watchdog: WatchdogSection {
            mode: WatchdogMode::Off,
            ..WatchdogSection::default()
        },
    };
    if node.is_mail() {
        // The node's init is the watchdog (crate::node::watchdog): it powers
        // the node off when the agent stops petting while master.
        config.watchdog = WatchdogSection {
            mode: WatchdogMode::Required,
            driver: WatchdogDriver::Socket,
            path: crate::watchdog::socket_path(&node.dir),
            timeout_ms: None,
        };
        config.floating_ip = Some(FloatingIpSection {
            driver: FloatingIpDriver::Local,
            address: format!("{}/{}", state.floating_ip, state.prefix_len),
            interface: NODE_INTERFACE.to_string(),
            garp_refresh_ms: 5_000,
            floating_ip_id: None,
        });
        config.volumes = vec![match state.storage {
            Storage::Shared => VolumeSection {
                name: VOLUME_NAME.to_string(),
                driver: VolumeDriver::Local,
                device: Some(state.loop_device()?.to_path_buf()),
                volume_id: None,
                mount_point: state.volume.mount_point.clone(),
                fs_type: "ext4".to_string(),
                mount_options: String::new(),
                device_wait_ms: 5_000,
                replication: None,
            },
            Storage::Btrfs => VolumeSection {
                name: VOLUME_NAME.to_string(),
                driver: VolumeDriver::Btrfs,
                device: None,
                volume_id: None,
                mount_point: state.volume.mount_point.clone(),
                fs_type: "btrfs".to_string(),
                mount_options: String::new(),
                device_wait_ms: 5_000,
                replication: Some(ReplicationSection {
                    pool: node.pool().display().to_string(),
                    interval_ms: REPLICATION_INTERVAL_MS,
                    keep: 4,
                    send_timeout_ms: 60_000,
                }),
            },
        }];
        if let Some(cloud) = &state.hetzner_sim {
            use_hetzner_sim(&mut config, cloud, node)?;
        }
        // What stands in front: `mailherd render` reads it from here.
        config.haproxy = state
            .haproxy
            .is_some()
            .then(|| crate::front::haproxy_section(state));
        config.gateway = state.gateway.is_some().then(crate::front::gateway_section);
        config.services = Some(crate::stack::services_section(state, node));
        config.checks = crate::stack::checks(state.stack);
        if state.signup {
            config.signup = Some(signup_section(state));
        }
        if state.mariadb.is_some() {
            config.mariadb = Some(crate::mariadb::section(state));
        }
    }
    Ok(config)
}

/// `up --signup`: `mailherd signup` on every mail node, making Dovecot
/// accounts on the shared volume (only the master's instance writes: the
/// others answer 503). Limits a test can reach: 6 attempts per client in
/// an hour, a token usable after 1 s.
fn signup_section(state: &LabState) -> mailherd_config::SignupSection {
    use mailherd_config::{DovecotBackendSection, SignupBackend, SignupSection};
    SignupSection {
        listen: SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::UNSPECIFIED,
            crate::topology::SIGNUP_PORT,
        )),
        backend: SignupBackend::Dovecot,
        domains: vec![crate::topology::MAIL_DOMAIN.to_string()],
        max_mailboxes_per_domain: 50,
        quota_mib: 64,
        min_password_length: 10,
        weak_passwords_file: None,
        per_ip_limit: 6,
        global_limit: 100,
        rate_window_s: 3_600,
        token_min_age_s: 1,
        token_max_age_s: 600,
        token_key_file: None,
        agents: Vec::new(),
        mailcow: None,
        dovecot: Some(DovecotBackendSection {
            users_file: crate::stack::users_file(state),
            mail_root: state.volume.mount_point.join("vmail"),
            uid: crate::topology::VMAIL_UID,
            gid: crate::topology::VMAIL_UID,
            postfix_map: Some(format!(
                "hash:{}",
                crate::stack::postfix_map_file(state).display()
            )),
        }),
    }
}

/// Moves the node's floating IP and volume to the `hetzner` drivers against
/// the lab's simulator, as this node's server.
fn use_hetzner_sim(
    config: &mut Config,
    cloud: &crate::cloud::CloudState,
    node: &NodeState,
) -> Result<()> {
    let server_id = cloud
        .server_of(&node.name)
        .with_context(|| format!("node {} is no server of the simulated cloud", node.name))?;
    if let Some(floating_ip) = &mut config.floating_ip {
        floating_ip.driver = FloatingIpDriver::Hetzner;
        let address = floating_ip.address.split('/').next().unwrap_or_default();
        floating_ip.address = format!("{address}/32");
        floating_ip.floating_ip_id = Some(cloud.floating_ip_id);
    }
    for (volume, volume_id) in config.volumes.iter_mut().zip(&cloud.volume_ids) {
        volume.driver = VolumeDriver::Hetzner;
        volume.device = None;
        volume.volume_id = Some(*volume_id);
    }
    config.hetzner = Some(HetznerSection {
        token_file: Some(cloud.token_file.clone()),
        server_id: Some(server_id),
        action_timeout_ms: crate::cloud::AGENT_ACTION_TIMEOUT_MS,
        poll_interval_ms: crate::cloud::AGENT_POLL_INTERVAL_MS,
        ..HetznerSection::new(cloud.api_url.clone())
    });
    Ok(())
}

/// The node's `[tls]` section: the lab CA and the node's own files.
fn tls_section(state: &LabState, node: &NodeState) -> TlsSection {
    let dir = crate::topology::tls_dir(&state.lab_dir);
    let files = mailherd_agent::tls::NodeFiles::in_dir(&dir, &node.name);
    TlsSection::new(
        mailherd_agent::tls::CaFiles::in_dir(&dir).cert,
        files.cert,
        files.key,
    )
}

/// Renders `config` and checks the agent's parser accepts the text.
pub fn render(config: &Config, node: &NodeState) -> Result<String> {
    let text = config.to_toml();
    Config::parse(&node.config, &text)
        .map_err(|problems| anyhow::anyhow!("{problems}"))
        .with_context(|| format!("the generated config of {} does not validate", node.name))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Stack;
    use std::path::Path;

    fn lab(stack: Stack) -> LabState {
        let mut state = crate::state::tests::sample(Path::new("/var/lib/mailherd-lab"));
        state.stack = stack;
        state
    }

    #[test]
    fn mail_node_config_round_trips_through_the_agents_parser() {
        let state = lab(Stack::Mail);
        let node = &state.nodes[0];
        let config = node_config(&state, node).unwrap();
        let text = render(&config, node).unwrap();
        let parsed = Config::parse(&node.config, &text).unwrap();
        assert_eq!(parsed, config);
        assert_eq!(parsed.members.len(), 3);
        assert_eq!(parsed.members[2].role, MemberRole::Witness);
        assert_eq!(parsed.members[1].peer.to_string(), "10.77.0.12:7400");
        let floating = parsed.floating_ip.unwrap();
        assert_eq!(floating.address, "10.77.0.100/24");
        assert_eq!(floating.interface, "eth0");
        assert_eq!(
            parsed.volumes[0].device.as_deref(),
            Some(Path::new("/dev/loop3"))
        );
        let services = parsed.services.unwrap();
        assert_eq!(
            services.start,
            ["/bin/sh", "/var/lib/mailherd-lab/n1/stack.sh", "start"]
        );
        let check_names: Vec<&str> = parsed
            .checks
            .iter()
            .map(|check| check.name.as_str())
            .collect();
        assert_eq!(check_names, ["smtp", "imap"]);
        assert!(parsed.checks.iter().all(|check| check.critical));
        let tls = parsed.tls.unwrap().files().unwrap();
        assert_eq!(tls.ca_file, Path::new("/var/lib/mailherd-lab/tls/ca.pem"));
        assert_eq!(tls.cert_file, Path::new("/var/lib/mailherd-lab/tls/n1.pem"));
        assert_eq!(tls.key_file, Path::new("/var/lib/mailherd-lab/tls/n1.key"));
    }

    #[test]
    fn hetzner_sim_nodes_use_the_hetzner_drivers_as_their_own_server() {
        let mut state = lab(Stack::Banner);
        state.hetzner_sim = Some(crate::cloud::CloudState::plan(
            &state.lab_dir,
            &state.nodes,
            "token".to_string(),
        ));
        let node = &state.nodes[1];
        let config = node_config(&state, node).unwrap();
        let parsed = Config::parse(&node.config, &render(&config, node).unwrap()).unwrap();
        let floating = parsed.floating_ip.unwrap();
        assert_eq!(floating.driver, FloatingIpDriver::Hetzner);
        assert_eq!(floating.address, "10.77.0.100/32");
        assert_eq!(floating.floating_ip_id, Some(crate::cloud::FLOATING_IP_ID));
        assert_eq!(parsed.volumes[0].driver, VolumeDriver::Hetzner);
        assert_eq!(parsed.volumes[0].device, None);
        let hetzner = parsed.hetzner.unwrap();
        assert_eq!(hetzner.server_id, Some(102));
        assert_eq!(hetzner.api_url, "http://10.77.0.1:8080/v1");
        // The witness is no server and gets no cloud.
        let witness = &state.nodes[2];
        assert!(node_config(&state, witness).unwrap().hetzner.is_none());
    }

    #[test]
    fn witness_config_has_no_resources() {
        let state = lab(Stack::Banner);
        let witness = &state.nodes[2];
        let config = node_config(&state, witness).unwrap();
        render(&config, witness).unwrap();
        assert!(config.floating_ip.is_none());
        assert!(config.volumes.is_empty());
        assert!(config.services.is_none());
        assert!(config.checks.is_empty());
        assert_eq!(config.node.name, "w1");
    }

    #[test]
    fn banner_node_checks_smtp_only() {
        let state = lab(Stack::Banner);
        let config = node_config(&state, &state.nodes[1]).unwrap();
        let check_names: Vec<&str> = config
            .checks
            .iter()
            .map(|check| check.name.as_str())
            .collect();
        assert_eq!(check_names, ["smtp"]);
    }
}
