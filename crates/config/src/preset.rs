//! Presets: a whole mail stack's services driver and health checks from a
//! few lines of config (design §6).
//!
//! ```toml
//! [preset]
//! name = "mailcow"        # or "classic"
//! ```
//!
//! - `mailcow`: the `compose` driver on mailcow-dockerized
//!   (`directory`/docker-compose.yml, project `mailcowdockerized`), a
//!   docker check per mailcow container (the mail path's critical, the rest
//!   not), SMTP 25 and 587, IMAP 143 and 993, HTTPS 443 (not critical:
//!   webmail and admin, not mail) and MariaDB's port 127.0.0.1:13306;
//! - `classic`: the `systemd` driver on `postfix.service` and
//!   `dovecot.service`, a systemd check per unit, SMTP 25 and IMAP 143.
//!
//! A written `[services]` section replaces the preset's driver, and a
//! written `[[checks]]` entry replaces the preset's check of the same name
//! (e.g. `name = "mariadb"`, `kind = "mariadb"` with a login, in place of
//! the preset's port check). [`expand`] runs after validation, so problems
//! in what the operator wrote keep their lines; the preset's own checks
//! are valid by construction (tested).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{CheckKind, CheckSection, Config, ServicesDriver, ServicesSection};

/// `[preset]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetSection {
    pub name: PresetName,
    /// mailcow: the mailcow-dockerized checkout (default
    /// `/opt/mailcow-dockerized`), holding docker-compose.yml and
    /// mailcow.conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<PathBuf>,
    /// mailcow: the compose project (default `mailcowdockerized`, mailcow's
    /// `COMPOSE_PROJECT_NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// classic: the units (default `["postfix.service",
    /// "dovecot.service"]`; on Debian, `postfix@-.service` is the unit that
    /// follows Postfix's master process, `postfix.service` only wraps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresetName {
    /// mailcow-dockerized under Docker Compose.
    Mailcow,
    /// Postfix and Dovecot as systemd units.
    Classic,
}

impl PresetName {
    pub fn as_str(self) -> &'static str {
        match self {
            PresetName::Mailcow => "mailcow",
            PresetName::Classic => "classic",
        }
    }
}

/// mailcow's default checkout.
pub const DEFAULT_MAILCOW_DIRECTORY: &str = "/opt/mailcow-dockerized";
/// mailcow's default `COMPOSE_PROJECT_NAME`.
pub const DEFAULT_MAILCOW_PROJECT: &str = "mailcowdockerized";
/// The classic preset's default units.
pub const DEFAULT_CLASSIC_UNITS: [&str; 2] = ["postfix.service", "dovecot.service"];

/// mailcow's containers whose failure stops mail: the MTA, the IMAP
/// server, their database, cache, spam filter, resolver, the PHP that
/// serves Dovecot's and Postfix's lookups, and nginx (autodiscover, the
/// API, webmail).
pub const MAILCOW_CRITICAL_SERVICES: [&str; 8] = [
    "postfix-mailcow",
    "dovecot-mailcow",
    "mysql-mailcow",
    "redis-mailcow",
    "rspamd-mailcow",
    "unbound-mailcow",
    "php-fpm-mailcow",
    "nginx-mailcow",
];
/// mailcow's other containers: watched (Degraded when down), never a
/// reason to fail over. `SKIP_SOGO`/`SKIP_CLAMD` leave their containers
/// running idle, so they are still expected.
pub const MAILCOW_OTHER_SERVICES: [&str; 9] = [
    "sogo-mailcow",
    "clamd-mailcow",
    "memcached-mailcow",
    "olefy-mailcow",
    "dockerapi-mailcow",
    "acme-mailcow",
    "netfilter-mailcow",
    "ofelia-mailcow",
    "watchdog-mailcow",
];

impl PresetSection {
    pub fn new(name: PresetName) -> PresetSection {
        PresetSection {
            name,
            directory: None,
            project: None,
            units: None,
        }
    }

    /// mailcow's checkout (`directory`, default
    /// [`DEFAULT_MAILCOW_DIRECTORY`]).
    pub fn mailcow_directory(&self) -> PathBuf {
        self.directory
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MAILCOW_DIRECTORY))
    }

    /// mailcow's compose project (`project`, default
    /// [`DEFAULT_MAILCOW_PROJECT`]).
    pub fn mailcow_project(&self) -> String {
        self.project
            .clone()
            .unwrap_or_else(|| DEFAULT_MAILCOW_PROJECT.to_string())
    }

    /// The classic preset's units (`units`, default
    /// [`DEFAULT_CLASSIC_UNITS`]).
    pub fn classic_units(&self) -> Vec<String> {
        self.units.clone().unwrap_or_else(|| {
            DEFAULT_CLASSIC_UNITS
                .iter()
                .map(|unit| unit.to_string())
                .collect()
        })
    }

    /// The services driver of the preset.
    pub fn services(&self) -> ServicesSection {
        match self.name {
            PresetName::Mailcow => ServicesSection {
                project: Some(self.mailcow_project()),
                compose_file: Some(self.mailcow_directory().join("docker-compose.yml")),
                // `up -d` of a whole mailcow whose images are present takes
                // tens of seconds (more with docker-compose v1); MariaDB's
                // shutdown is slow too.
                start_timeout_ms: 180_000,
                stop_timeout_ms: 120_000,
                ..ServicesSection::new(ServicesDriver::Compose)
            },
            PresetName::Classic => ServicesSection {
                units: self.classic_units(),
                start_timeout_ms: 60_000,
                stop_timeout_ms: 30_000,
                ..ServicesSection::new(ServicesDriver::Systemd)
            },
        }
    }

    /// The health checks of the preset.
    pub fn checks(&self) -> Vec<CheckSection> {
        match self.name {
            PresetName::Mailcow => self.mailcow_checks(),
            PresetName::Classic => self.classic_checks(),
        }
    }

    fn mailcow_checks(&self) -> Vec<CheckSection> {
        let project = self.mailcow_project();
        let container = |service: &str, critical: bool| CheckSection {
            compose_project: Some(project.clone()),
            service: Some(service.to_string()),
            // One Engine API round trip per container and attempt.
            interval_ms: 2_000,
            timeout_ms: 2_000,
            fall: 2,
            critical,
            ..CheckSection::new(service, CheckKind::Docker)
        };
        let mut checks: Vec<CheckSection> = MAILCOW_CRITICAL_SERVICES
            .iter()
            .map(|service| container(service, true))
            .chain(
                MAILCOW_OTHER_SERVICES
                    .iter()
                    .map(|service| container(service, false)),
            )
            .collect();
        // mailcow answers on every address; 127.0.0.1 needs no name.
        // Its certificate is for the mail host name, not for 127.0.0.1: the
        // TLS handshake is checked, the name is not.
        let port = |name: &str, kind: CheckKind, port: u16| CheckSection {
            address: Some(local(port)),
            interval_ms: 1_000,
            timeout_ms: 1_500,
            fall: 3,
            ..CheckSection::new(name, kind)
        };
        checks.push(port("smtp", CheckKind::Smtp, 25));
        checks.push(port("submission", CheckKind::Smtp, 587));
        checks.push(port("imap", CheckKind::Imap, 143));
        checks.push(CheckSection {
            tls: Some(true),
            tls_verify: Some(false),
            ..port("imaps", CheckKind::Imap, 993)
        });
        checks.push(CheckSection {
            tls_verify: Some(false),
            critical: false,
            ..port("https", CheckKind::Https, 443)
        });
        // mailcow's SQL_PORT. A login needs mailcow.conf's DBPASS: override
        // this check with `kind = "mariadb"`, `user` and `password_file`.
        checks.push(port("mariadb", CheckKind::Tcp, 13306));
        checks
    }

    fn classic_checks(&self) -> Vec<CheckSection> {
        let mut checks: Vec<CheckSection> = self
            .classic_units()
            .into_iter()
            .map(|unit| CheckSection {
                unit: Some(unit.clone()),
                interval_ms: 1_000,
                timeout_ms: 1_000,
                ..CheckSection::new(unit, CheckKind::Systemd)
            })
            .collect();
        let port = |name: &str, kind: CheckKind, port: u16| CheckSection {
            address: Some(local(port)),
            interval_ms: 500,
            timeout_ms: 1_000,
            ..CheckSection::new(name, kind)
        };
        checks.push(port("smtp", CheckKind::Smtp, 25));
        checks.push(port("imap", CheckKind::Imap, 143));
        checks
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// Fills in what the preset gives and the config does not say: the
/// services driver when there is no `[services]`, and every preset check
/// whose name no `[[checks]]` entry uses (the preset's first, in their
/// order, then the written ones). Expanding twice changes nothing.
pub fn expand(config: &mut Config) {
    let Some(preset) = &config.preset else {
        return;
    };
    if config.services.is_none() {
        config.services = Some(preset.services());
    }
    let mut checks: Vec<CheckSection> = preset
        .checks()
        .into_iter()
        .filter(|check| !config.checks.iter().any(|c| c.name == check.name))
        .collect();
    checks.append(&mut config.checks);
    config.checks = checks;
}
