//! Cross-field validation: everything serde cannot check.
//!
//! Every check pushes a [`Problem`] with the dotted key it is about; the
//! line is looked up in the source text, so messages read
//! `file:line: key: what is wrong`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

mod alerts;
mod front;
mod mariadb;
mod services;
mod signup;

use crate::locate;
use crate::{
    CheckKind, CheckSection, Config, FloatingIpDriver, HetznerSection, MemberRole, VolumeDriver,
    WatchdogMode,
};

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: Option<usize>,
    /// Dotted key, e.g. `members[1].peer`; empty for whole-file problems.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: ", self.file, line)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}", self.message)
    }
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// A serde/TOML error: the key comes from the error's position.
    pub fn from_parse_error(path: &Path, text: &str, error: &toml::de::Error) -> Problems {
        let (line, key) = match error.span() {
            Some(span) => (
                Some(locate::line_of(text, span.start)),
                locate::key_at(text, span.start),
            ),
            None => (None, String::new()),
        };
        Problems(vec![Problem {
            file: path.display().to_string(),
            line,
            key,
            message: error.message().trim().to_string(),
        }])
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

struct Collector<'a> {
    file: String,
    text: &'a str,
    problems: Vec<Problem>,
}

impl Collector<'_> {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        self.problems.push(Problem {
            file: self.file.clone(),
            line: locate::line_of_key(self.text, &key),
            key,
            message: message.into(),
        });
    }
}

/// Parses `a.b.c.d/len` (or IPv6) into the address and prefix length.
pub fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let (address, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` needs a prefix length, e.g. {text}/24"))?;
    let address: IpAddr = address
        .parse()
        .map_err(|_| format!("`{address}` is not an IP address"))?;
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| format!("`{prefix}` is not a prefix length"))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(format!("prefix length {prefix} is over {max}"));
    }
    Ok((address, prefix))
}

/// Checks everything serde could not.
pub fn validate(config: &Config, path: &Path, text: &str) -> Problems {
    let mut c = Collector {
        file: path.display().to_string(),
        text,
        problems: Vec::new(),
    };

    if config.node.name.trim().is_empty() {
        c.push("node.name", "must not be empty");
    }
    if !config.node.data_dir.is_absolute() {
        c.push(
            "node.data_dir",
            format!(
                "must be an absolute path (got {})",
                config.node.data_dir.display()
            ),
        );
    }

    // Members.
    if config.members.is_empty() {
        c.push("members", "at least one [[members]] entry is needed");
    }
    let mut names = BTreeMap::new();
    let mut ids = BTreeMap::new();
    let mut peers = BTreeMap::new();
    let mut apis = BTreeMap::new();
    for (i, member) in config.members.iter().enumerate() {
        if let Some(first) = names.insert(member.name.clone(), i) {
            c.push(
                format!("members[{i}].name"),
                format!("`{}` is already used by members[{first}]", member.name),
            );
        }
        if member.id == 0 {
            c.push(format!("members[{i}].id"), "must be 1 or more");
        } else if let Some(first) = ids.insert(member.id, i) {
            c.push(
                format!("members[{i}].id"),
                format!("{} is already used by members[{first}]", member.id),
            );
        }
        if let Some(first) = peers.insert(member.peer, i) {
            c.push(
                format!("members[{i}].peer"),
                format!("{} is already used by members[{first}]", member.peer),
            );
        }
        if let Some(first) = apis.insert(member.api, i) {
            c.push(
                format!("members[{i}].api"),
                format!("{} is already used by members[{first}]", member.api),
            );
        }
        if member.peer == member.api {
            c.push(
                format!("members[{i}].api"),
                "must differ from the peer address",
            );
        }
    }
    if !config.members.is_empty() && !names.contains_key(&config.node.name) {
        let known: Vec<&String> = names.keys().collect();
        c.push(
            "node.name",
            format!(
                "`{}` is not among the members (known: {known:?})",
                config.node.name
            ),
        );
    }
    if config.members.len() == 2 {
        c.push(
            "members",
            "two voters cannot survive losing either one; add a third member (a `role = \"witness\"` is enough)",
        );
    }
    if !config.members.is_empty() && !config.members.iter().any(|m| m.role == MemberRole::Mail) {
        c.push(
            "members",
            "no member has role \"mail\": nobody could hold the master role",
        );
    }

    // Timing.
    let timing = config.cluster.timing();
    if let Err(error) = timing.lease.validate() {
        c.push("cluster.lease_ms", error.to_string());
    }
    if timing.election_timeout_min_ms >= timing.election_timeout_max_ms {
        c.push(
            "cluster.election_timeout_min_ms",
            format!(
                "must be below election_timeout_max_ms ({} >= {})",
                timing.election_timeout_min_ms, timing.election_timeout_max_ms
            ),
        );
    }
    if timing.heartbeat_interval_ms * 2 > timing.election_timeout_min_ms {
        c.push(
            "cluster.heartbeat_interval_ms",
            format!(
                "must be at most half of election_timeout_min_ms ({} > {} / 2)",
                timing.heartbeat_interval_ms, timing.election_timeout_min_ms
            ),
        );
    }

    if config.cluster.breaker_max_failovers == 0 {
        c.push(
            "cluster.breaker_max_failovers",
            "must be at least 1 (0 would forbid every failover)",
        );
    }
    if config.cluster.breaker_window_s == 0 {
        c.push("cluster.breaker_window_s", "must be above 0");
    }

    // API.
    if config.api.listen.port() == config.api.peer_listen.port()
        && (config.api.listen.ip() == config.api.peer_listen.ip()
            || config.api.listen.ip().is_unspecified()
            || config.api.peer_listen.ip().is_unspecified())
    {
        c.push(
            "api.peer_listen",
            "must not use the same port as api.listen",
        );
    }

    if let Some(path) = &config.api.token_file {
        if !path.is_absolute() {
            c.push("api.token_file", "must be an absolute path");
        }
    }

    if let Some(tls) = &config.tls {
        for (path, key) in [
            (&tls.ca_file, "tls.ca_file"),
            (&tls.cert_file, "tls.cert_file"),
            (&tls.key_file, "tls.key_file"),
        ] {
            match path {
                None => c.push(
                    key,
                    "missing: [tls] needs ca_file, cert_file and key_file together",
                ),
                Some(path) if !path.is_absolute() => c.push(
                    key,
                    format!("must be an absolute path (got {})", path.display()),
                ),
                Some(_) => {}
            }
        }
    }

    let me = config.members.iter().find(|m| m.name == config.node.name);
    let is_witness = me.is_some_and(|m| m.role == MemberRole::Witness);
    if is_witness {
        for (present, key) in [
            (config.floating_ip.is_some(), "floating_ip"),
            (!config.volumes.is_empty(), "volumes"),
            (config.services.is_some(), "services"),
            (!config.checks.is_empty(), "checks"),
        ] {
            if present {
                c.push(
                    key,
                    "a witness never holds the master role; remove this section",
                );
            }
        }
    }

    // Floating IP.
    if let Some(fip) = &config.floating_ip {
        match fip.driver {
            FloatingIpDriver::Local => {
                if let Err(error) = parse_cidr(&fip.address) {
                    c.push("floating_ip.address", error);
                }
                if fip.floating_ip_id.is_some() {
                    c.push(
                        "floating_ip.floating_ip_id",
                        "only the hetzner driver uses it (driver is \"local\")",
                    );
                }
            }
            FloatingIpDriver::Hetzner => {
                if let Err(error) = parse_hetzner_address(&fip.address) {
                    c.push("floating_ip.address", error);
                }
                match fip.floating_ip_id {
                    None => c.push(
                        "floating_ip.floating_ip_id",
                        "missing: driver \"hetzner\" needs the floating IP's id in the project",
                    ),
                    Some(0) => c.push("floating_ip.floating_ip_id", "must be 1 or more"),
                    Some(_) => {}
                }
                if config.hetzner.is_none() {
                    c.push(
                        "floating_ip.driver",
                        "driver \"hetzner\" needs a [hetzner] section (api_url, token_file, server_id)",
                    );
                }
            }
        }
        if fip.interface.is_empty() || fip.interface.len() > 15 {
            c.push(
                "floating_ip.interface",
                "must be an interface name of 1 to 15 characters",
            );
        }
    }

    // Volumes.
    let mut volume_names = BTreeSet::new();
    let mut mount_points = BTreeSet::new();
    for (i, volume) in config.volumes.iter().enumerate() {
        if !volume_names.insert(volume.name.clone()) {
            c.push(
                format!("volumes[{i}].name"),
                format!("`{}` is used by another volume", volume.name),
            );
        }
        match volume.driver {
            VolumeDriver::Local => {
                match &volume.device {
                    None => c.push(
                        format!("volumes[{i}].device"),
                        "missing: driver \"local\" needs the block device",
                    ),
                    Some(device) if !device.is_absolute() => {
                        c.push(format!("volumes[{i}].device"), "must be an absolute path")
                    }
                    Some(_) => {}
                }
                if volume.volume_id.is_some() {
                    c.push(
                        format!("volumes[{i}].volume_id"),
                        "only the hetzner driver uses it (driver is \"local\")",
                    );
                }
            }
            VolumeDriver::Btrfs | VolumeDriver::Zfs => {}
            VolumeDriver::Hetzner => {
                match volume.volume_id {
                    None => c.push(
                        format!("volumes[{i}].volume_id"),
                        "missing: driver \"hetzner\" needs the volume's id in the project",
                    ),
                    Some(0) => c.push(format!("volumes[{i}].volume_id"), "must be 1 or more"),
                    Some(_) => {}
                }
                if volume.device.is_some() {
                    c.push(
                        format!("volumes[{i}].device"),
                        "a hetzner volume's device is the API's linux_device; remove this key",
                    );
                }
                if config.hetzner.is_none() {
                    c.push(
                        format!("volumes[{i}].driver"),
                        "driver \"hetzner\" needs a [hetzner] section (api_url, token_file, server_id)",
                    );
                }
            }
        }
        match (volume.driver, &volume.replication) {
            (VolumeDriver::Btrfs | VolumeDriver::Zfs, None) => c.push(
                format!("volumes[{i}].replication"),
                "missing: a replicated volume (driver \"btrfs\" or \"zfs\") needs \
                 [volumes.replication] with its pool",
            ),
            (VolumeDriver::Btrfs | VolumeDriver::Zfs, Some(replication)) => {
                validate_replication(&mut c, i, volume.driver, replication);
                for (key, set) in [
                    ("device", volume.device.is_some()),
                    ("volume_id", volume.volume_id.is_some()),
                ] {
                    if set {
                        c.push(
                            format!("volumes[{i}].{key}"),
                            "a replicated volume lives in its replication pool; remove this key",
                        );
                    }
                }
            }
            (_, Some(_)) => c.push(
                format!("volumes[{i}].replication"),
                "only the btrfs and zfs drivers replicate; a shared volume needs none",
            ),
            (_, None) => {}
        }
        if !volume.mount_point.is_absolute() {
            c.push(
                format!("volumes[{i}].mount_point"),
                "must be an absolute path",
            );
        } else if !mount_points.insert(volume.mount_point.clone()) {
            c.push(
                format!("volumes[{i}].mount_point"),
                "is used by another volume",
            );
        }
    }

    if let Some(hetzner) = &config.hetzner {
        validate_hetzner(&mut c, hetzner);
    }

    // Services and preset.
    if let Some(section) = &config.services {
        services::validate_services(&mut c, section);
    }
    services::validate_preset(&mut c, config);

    // Checks.
    let mut check_names = BTreeSet::new();
    for (i, check) in config.checks.iter().enumerate() {
        if !check_names.insert(check.name.clone()) {
            c.push(
                format!("checks[{i}].name"),
                format!("`{}` is used by another check", check.name),
            );
        }
        if check.interval_ms < 10 {
            c.push(format!("checks[{i}].interval_ms"), "must be at least 10");
        }
        if check.timeout_ms == 0 {
            c.push(format!("checks[{i}].timeout_ms"), "must be above 0");
        }
        if check.fall == 0 {
            c.push(format!("checks[{i}].fall"), "must be at least 1");
        }
        if check.rise == 0 {
            c.push(format!("checks[{i}].rise"), "must be at least 1");
        }
        validate_check_keys(&mut c, i, check);
    }

    // Alerts and Uptime Kuma.
    if let Some(section) = &config.alerts {
        alerts::validate_alerts(&mut c, section);
    }
    if let Some(section) = &config.uptime_kuma {
        alerts::validate_uptime_kuma(&mut c, section);
    }
    if let Some(section) = &config.mariadb {
        mariadb::validate_mariadb(&mut c, config, section);
    }

    // What stands in front of the cluster.
    if let Some(section) = &config.haproxy {
        front::validate_haproxy(&mut c, section);
    }
    if let Some(section) = &config.gateway {
        front::validate_gateway(&mut c, section);
    }
    if let Some(section) = &config.dns {
        front::validate_dns(&mut c, section, config.gateway.is_some());
    }

    // Reconciler and garbage collector: 0 is off, anything else has a floor.
    for (key, value, min, zero_means) in [
        (
            "reconciler.interval_ms",
            config.reconciler.interval_ms,
            crate::MIN_RECONCILE_INTERVAL_MS,
            "off",
        ),
        (
            "gc.interval_s",
            config.gc.interval_s,
            crate::MIN_GC_INTERVAL_S,
            "only `mailherd gc`",
        ),
    ] {
        if value != 0 && value < min {
            c.push(
                key,
                format!("must be 0 ({zero_means}) or at least {min} (got {value})"),
            );
        }
    }
    if config.gc.history_retention_days == 0 {
        c.push("gc.history_retention_days", "must be at least 1");
    } else if config.gc.history_retention_ms() / 1_000 < config.cluster.breaker_window_s {
        c.push(
            "gc.history_retention_days",
            format!(
                "{} days is shorter than cluster.breaker_window_s ({} s): the breaker counts \
                 failovers from that history",
                config.gc.history_retention_days, config.cluster.breaker_window_s
            ),
        );
    }

    // Self-service signup.
    if let Some(section) = &config.signup {
        signup::validate_signup(&mut c, section);
    }

    // Watchdog: only a mail node holds the role, so only there it matters.
    if !is_witness && config.watchdog.mode != WatchdogMode::Off {
        if let Err(error) = config.watchdog.timeout_ms(&config.cluster.timing().lease) {
            // In automatic mode a default that does not fit only means "not
            // used" (the agent says so); anything written down must work.
            if config.watchdog.timeout_ms.is_some() {
                c.push("watchdog.timeout_ms", error);
            } else if config.watchdog.mode == WatchdogMode::Required {
                c.push("watchdog.mode", format!("`required` cannot work: {error}"));
            }
        }
        if !config.watchdog.path.is_absolute() {
            c.push("watchdog.path", "must be an absolute path");
        }
    }

    Problems(c.problems)
}

/// The kind-specific keys of a check: which are set, whether the kind uses
/// them, and whether their values make sense.
fn validate_check_keys(c: &mut Collector<'_>, i: usize, check: &CheckSection) {
    let kind = check.kind;
    let key = |name: &str| format!("checks[{i}].{name}");

    // Keys the kind does not use: refused, so that a mistake (a key meant
    // for another check, a wrong kind) is not silently ignored.
    let set: [(&str, bool); 25] = [
        ("address", check.address.is_some()),
        ("ehlo_name", check.ehlo_name.is_some()),
        ("tls", check.tls.is_some()),
        ("starttls", check.starttls.is_some()),
        ("tls_verify", check.tls_verify.is_some()),
        ("tls_ca_file", check.tls_ca_file.is_some()),
        ("server_name", check.server_name.is_some()),
        ("test_rcpt", check.test_rcpt.is_some()),
        ("test_from", check.test_from.is_some()),
        ("user", check.user.is_some()),
        ("password", check.password.is_some()),
        ("password_file", check.password_file.is_some()),
        ("path", check.path.is_some()),
        ("expect_status", check.expect_status.is_some()),
        ("expect_body", check.expect_body.is_some()),
        ("container", check.container.is_some()),
        ("compose_project", check.compose_project.is_some()),
        ("service", check.service.is_some()),
        ("docker_socket", check.docker_socket.is_some()),
        ("unit", check.unit.is_some()),
        ("socket", check.socket.is_some()),
        ("max_lag_s", check.max_lag_s.is_some()),
        ("mount_point", check.mount_point.is_some()),
        ("queue_directory", check.queue_directory.is_some()),
        ("max_messages", check.max_messages.is_some()),
    ];
    refuse_unused_keys(c, &key, kind.as_str(), &set, keys_of_kind(kind));

    // Required keys.
    let needs_address = matches!(
        kind,
        CheckKind::Tcp
            | CheckKind::Smtp
            | CheckKind::Imap
            | CheckKind::Pop3
            | CheckKind::Http
            | CheckKind::Https
    );
    if needs_address && check.address.is_none() {
        c.push(
            key("address"),
            format!(
                "missing: kind \"{}\" needs the `host:port` to probe",
                kind.as_str()
            ),
        );
    }
    match kind {
        CheckKind::Docker => match (&check.container, &check.compose_project, &check.service) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => {}
            (Some(_), _, _) => c.push(
                key("container"),
                "give either `container` or `compose_project` + `service`, not both",
            ),
            (None, Some(_), None) => c.push(
                key("service"),
                "missing: `compose_project` needs `service` (the compose service name)",
            ),
            (None, None, Some(_)) => c.push(
                key("compose_project"),
                "missing: `service` needs `compose_project` (the compose project name)",
            ),
            (None, None, None) => c.push(
                key("container"),
                "missing: kind \"docker\" needs `container`, or `compose_project` and `service`",
            ),
        },
        CheckKind::Systemd if check.unit.is_none() => c.push(
            key("unit"),
            "missing: kind \"systemd\" needs the unit, e.g. `postfix.service`",
        ),
        CheckKind::Mariadb | CheckKind::MariadbReplication => {
            match (check.address.is_some(), check.socket.is_some()) {
                (false, false) => c.push(
                    key("address"),
                    format!(
                        "missing: kind \"{}\" needs `address` (host:port) or `socket`",
                        kind.as_str()
                    ),
                ),
                (true, true) => {
                    c.push(key("socket"), "give either `address` or `socket`, not both")
                }
                _ => {}
            }
            if check.user.is_none() {
                c.push(
                    key("user"),
                    format!(
                        "missing: kind \"{}\" needs the `user` to log in as",
                        kind.as_str()
                    ),
                );
            }
            if check.max_lag_s == Some(0) {
                c.push(
                    key("max_lag_s"),
                    "must be at least 1 (Seconds_Behind_Master counts whole seconds)",
                );
            }
        }
        CheckKind::Mount if check.mount_point.is_none() => c.push(
            key("mount_point"),
            "missing: kind \"mount\" needs the directory that must be mounted",
        ),
        CheckKind::PostfixQueue if check.max_messages.is_none() => c.push(
            key("max_messages"),
            "missing: kind \"postfix_queue\" needs the most queued messages that still pass",
        ),
        _ => {}
    }

    // TLS.
    if check.tls == Some(true) && check.starttls == Some(true) {
        c.push(
            key("starttls"),
            "give either `tls` (TLS from the first byte) or `starttls`, not both",
        );
    }
    let mail_kind = matches!(kind, CheckKind::Smtp | CheckKind::Imap | CheckKind::Pop3);
    let uses_tls = kind == CheckKind::Https
        || (mail_kind && (check.tls == Some(true) || check.starttls == Some(true)));
    if mail_kind && !uses_tls {
        for (name, is_set) in [
            ("tls_verify", check.tls_verify.is_some()),
            ("tls_ca_file", check.tls_ca_file.is_some()),
            ("server_name", check.server_name.is_some()),
        ] {
            if is_set {
                c.push(
                    key(name),
                    "has no effect without `tls = true` or `starttls = true`",
                );
            }
        }
    }
    if check.tls_verify == Some(false) && check.tls_ca_file.is_some() {
        c.push(
            key("tls_ca_file"),
            "has no effect with `tls_verify = false` (no certificate is verified)",
        );
    }
    if let Some(path) = &check.tls_ca_file {
        require_absolute(c, key("tls_ca_file"), path);
    }
    if let Some(name) = &check.server_name {
        if let Err(error) = check_host_name(name) {
            c.push(key("server_name"), error);
        }
    }

    // SMTP.
    if let Some(name) = &check.ehlo_name {
        if let Err(error) = check_host_name(name) {
            c.push(key("ehlo_name"), error);
        }
    }
    if let Some(rcpt) = &check.test_rcpt {
        if let Err(error) = check_mailbox(rcpt) {
            c.push(key("test_rcpt"), error);
        }
    }
    if let Some(from) = &check.test_from {
        if check.test_rcpt.is_none() {
            c.push(
                key("test_from"),
                "has no effect without `test_rcpt` (no test message is sent)",
            );
        }
        // The empty sender is the null reverse-path `<>`.
        if !from.is_empty() {
            if let Err(error) = check_mailbox(from) {
                c.push(key("test_from"), error);
            }
        }
    }

    // Logins.
    if let Some(user) = &check.user {
        if user.is_empty() {
            c.push(key("user"), "must not be empty");
        } else if let Some(bad) = user.chars().find(|ch| ch.is_control()) {
            c.push(
                key("user"),
                format!("must not contain control characters (found {bad:?})"),
            );
        } else if kind == CheckKind::Pop3 && user.contains(' ') {
            c.push(key("user"), "a POP3 USER name cannot contain spaces");
        }
    }
    if let Some(password) = &check.password {
        // The password is never quoted back, only what is wrong with it.
        if password.expose().chars().any(|ch| ch.is_control()) {
            c.push(
                key("password"),
                "must not contain control characters (line breaks would end the command)",
            );
        }
    }
    if check.password.is_some() && check.password_file.is_some() {
        c.push(
            key("password_file"),
            "give either `password` or `password_file`, not both",
        );
    }
    if let Some(path) = &check.password_file {
        require_absolute(c, key("password_file"), path);
    }
    let has_password = check.password.is_some() || check.password_file.is_some();
    if matches!(kind, CheckKind::Imap | CheckKind::Pop3) {
        if check.user.is_some() && !has_password {
            c.push(
                key("user"),
                "a login needs `password` or `password_file` too",
            );
        }
        if check.user.is_none() && has_password {
            c.push(
                key("user"),
                "missing: a password is given but no `user` to log in as",
            );
        }
    }

    // HTTP.
    if let Some(path) = &check.path {
        if !path.starts_with('/') {
            c.push(key("path"), format!("must start with `/` (got {path:?})"));
        } else if path.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
            c.push(
                key("path"),
                "must not contain spaces or control characters (percent-encode them)",
            );
        }
    }
    if let Some(status) = check.expect_status {
        if !(100..=599).contains(&status) {
            c.push(
                key("expect_status"),
                format!("must be an HTTP status from 100 to 599 (got {status})"),
            );
        }
    }
    if check.expect_body.as_deref() == Some("") {
        c.push(
            key("expect_body"),
            "must not be empty (leave it out to accept any body)",
        );
    }

    // Docker.
    for (name, value) in [
        ("container", &check.container),
        ("compose_project", &check.compose_project),
        ("service", &check.service),
    ] {
        if let Some(value) = value {
            if let Err(error) = check_docker_name(value) {
                c.push(key(name), error);
            }
        }
    }
    if let Some(path) = &check.docker_socket {
        require_absolute(c, key("docker_socket"), path);
    }

    // systemd.
    if let Some(unit) = &check.unit {
        if let Err(error) = check_unit_name(unit) {
            c.push(key("unit"), error);
        }
    }

    // Paths.
    for (name, path) in [
        ("socket", &check.socket),
        ("mount_point", &check.mount_point),
        ("queue_directory", &check.queue_directory),
    ] {
        if let Some(path) = path {
            require_absolute(c, key(name), path);
        }
    }
}

/// A hetzner floating IP: an IPv4 address, written bare or as `/32` (it
/// is added as a /32, the way Hetzner routes it).
fn parse_hetzner_address(text: &str) -> Result<(), String> {
    let (address, prefix) = match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    };
    let address: IpAddr = address
        .parse()
        .map_err(|_| format!("`{address}` is not an IP address"))?;
    if !address.is_ipv4() {
        return Err(format!(
            "`{address}`: the hetzner driver moves IPv4 floating IPs only"
        ));
    }
    match prefix {
        None | Some("32") => Ok(()),
        Some(prefix) => Err(format!(
            "a hetzner floating IP is added as /32, not /{prefix} (write `{address}` or `{address}/32`)"
        )),
    }
}

fn validate_hetzner(c: &mut Collector<'_>, hetzner: &HetznerSection) {
    for (url, key) in [
        (&hetzner.api_url, "hetzner.api_url"),
        (&hetzner.metadata_url, "hetzner.metadata_url"),
    ] {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        match rest {
            Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {}
            _ => c.push(
                key,
                format!("must be an http:// or https:// URL with a host (got {url:?})"),
            ),
        }
    }
    if let Some(path) = &hetzner.token_file {
        require_absolute(c, "hetzner.token_file".to_string(), path);
    }
    if hetzner.server_id == Some(0) {
        c.push("hetzner.server_id", "must be 1 or more");
    }
    if hetzner.action_timeout_ms == 0 {
        c.push("hetzner.action_timeout_ms", "must be above 0");
    }
    if hetzner.poll_interval_ms == 0 {
        c.push("hetzner.poll_interval_ms", "must be above 0");
    } else if hetzner.poll_interval_ms >= hetzner.action_timeout_ms && hetzner.action_timeout_ms > 0
    {
        c.push(
            "hetzner.poll_interval_ms",
            format!(
                "must be below action_timeout_ms ({} >= {}): an action would be polled once at most",
                hetzner.poll_interval_ms, hetzner.action_timeout_ms
            ),
        );
    }
}

/// Refuses every key in `set` that is set although the kind does not use
/// it (not in `used`), so that a key meant for another kind is not
/// silently ignored. Shared by checks and alert channels.
fn refuse_unused_keys(
    c: &mut Collector<'_>,
    key: &dyn Fn(&str) -> String,
    kind: &str,
    set: &[(&str, bool)],
    used: &[&str],
) {
    for (name, is_set) in set {
        if *is_set && !used.contains(name) {
            c.push(
                key(name),
                format!(
                    "not used by kind \"{kind}\" (it takes: {})",
                    if used.is_empty() {
                        "no kind-specific key".to_string()
                    } else {
                        used.join(", ")
                    }
                ),
            );
        }
    }
}

/// The kind-specific keys `kind` reads.
fn keys_of_kind(kind: CheckKind) -> &'static [&'static str] {
    const TLS: [&str; 5] = [
        "tls",
        "starttls",
        "tls_verify",
        "tls_ca_file",
        "server_name",
    ];
    match kind {
        CheckKind::Tcp => &["address"],
        CheckKind::Smtp => &[
            "address",
            "ehlo_name",
            TLS[0],
            TLS[1],
            TLS[2],
            TLS[3],
            TLS[4],
            "test_rcpt",
            "test_from",
        ],
        CheckKind::Imap | CheckKind::Pop3 => &[
            "address",
            TLS[0],
            TLS[1],
            TLS[2],
            TLS[3],
            TLS[4],
            "user",
            "password",
            "password_file",
        ],
        CheckKind::Http => &[
            "address",
            "server_name",
            "path",
            "expect_status",
            "expect_body",
        ],
        CheckKind::Https => &[
            "address",
            "server_name",
            "path",
            "expect_status",
            "expect_body",
            "tls_verify",
            "tls_ca_file",
        ],
        CheckKind::Docker => &["container", "compose_project", "service", "docker_socket"],
        CheckKind::Systemd => &["unit"],
        CheckKind::Mariadb => &["address", "socket", "user", "password", "password_file"],
        CheckKind::MariadbReplication => &[
            "address",
            "socket",
            "user",
            "password",
            "password_file",
            "max_lag_s",
        ],
        CheckKind::Mount => &["mount_point"],
        CheckKind::PostfixQueue => &["queue_directory", "max_messages"],
    }
}

fn require_absolute(c: &mut Collector<'_>, key: String, path: &Path) {
    if !path.is_absolute() {
        c.push(
            key,
            format!("must be an absolute path (got {})", path.display()),
        );
    }
}

/// A DNS name or an IP address (a TLS server name, an EHLO name).
fn check_host_name(name: &str) -> Result<(), String> {
    if name.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        });
    if valid {
        Ok(())
    } else {
        Err(format!("`{name}` is not a host name or IP address"))
    }
}

/// `local@domain` as SMTP takes it between angle brackets.
fn check_mailbox(address: &str) -> Result<(), String> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(format!("`{address}` is not a mail address (local@domain)"));
    };
    let printable = |text: &str| {
        text.chars()
            .all(|ch| ch.is_ascii_graphic() && !matches!(ch, '<' | '>'))
    };
    if local.is_empty() || !printable(local) {
        return Err(format!(
            "`{address}` is not a mail address (local@domain, printable ASCII without spaces or <>)"
        ));
    }
    // A domain literal `[192.0.2.1]` is valid SMTP; a name otherwise.
    let literal = domain.starts_with('[') && domain.ends_with(']');
    if !literal && check_host_name(domain).is_err() {
        return Err(format!("`{address}`: `{domain}` is not a domain"));
    }
    Ok(())
}

/// A container name or id, a compose project or a compose service name.
fn check_docker_name(name: &str) -> Result<(), String> {
    let name_chars = |ch: char| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-');
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|ch| ch.is_ascii_alphanumeric());
    if first_ok && name.chars().all(name_chars) {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a Docker name (letters, digits, `_.-`, starting with a letter or digit)"
        ))
    }
}

/// A unit name `systemctl` will take as a name, never as an option.
fn check_unit_name(unit: &str) -> Result<(), String> {
    let unit_chars =
        |ch: char| ch.is_ascii_alphanumeric() || matches!(ch, ':' | '-' | '_' | '.' | '@' | '\\');
    if unit.is_empty() || unit.starts_with('-') || !unit.chars().all(unit_chars) {
        Err(format!(
            "`{unit}` is not a systemd unit name (letters, digits, `:-_.@\\`, not starting with `-`)"
        ))
    } else {
        Ok(())
    }
}

/// `[volumes.replication]` of volume `i`.
fn validate_replication(
    c: &mut Collector<'_>,
    i: usize,
    driver: VolumeDriver,
    replication: &crate::ReplicationSection,
) {
    let key = |name: &str| format!("volumes[{i}].replication.{name}");
    let pool = replication.pool.as_str();
    match driver {
        VolumeDriver::Btrfs if !pool.starts_with('/') || pool == "/" => c.push(
            key("pool"),
            "must be an absolute directory other than / on a btrfs file system",
        ),
        VolumeDriver::Zfs
            if pool.is_empty()
                || pool.starts_with('/')
                || pool.ends_with('/')
                || pool.contains(['@', '#', ' ']) =>
        {
            c.push(
                key("pool"),
                "must be a ZFS dataset name like tank/mailherd (no leading or trailing /, no @, # or spaces)",
            )
        }
        _ => {}
    }
    if replication.interval_ms < 1_000 {
        c.push(
            key("interval_ms"),
            "must be at least 1000 (one snapshot a second)",
        );
    }
    if replication.keep < 2 {
        c.push(
            key("keep"),
            "must be at least 2, so a peer that missed a send still shares a parent snapshot",
        );
    }
    if replication.send_timeout_ms < replication.interval_ms {
        c.push(key("send_timeout_ms"), "must be at least interval_ms");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid config without checks; the cases append `[[checks]]`.
    const BASE: &str = r#"[node]
name = "n1"
data_dir = "/var/lib/mailherd"

[cluster]
name = "mail"

[[members]]
name = "n1"
id = 1
peer = "192.0.2.11:7400"
api = "192.0.2.11:7401"

[[members]]
name = "n2"
id = 2
peer = "192.0.2.12:7400"
api = "192.0.2.12:7401"

[[members]]
name = "n3"
id = 3
peer = "192.0.2.13:7400"
api = "192.0.2.13:7401"

[api]
listen = "0.0.0.0:7401"
peer_listen = "0.0.0.0:7400"
"#;

    fn parse_checks(checks: &str) -> Result<Config, Problems> {
        Config::parse(Path::new("node.toml"), &format!("{BASE}{checks}"))
    }

    /// `checks` (appended to [`BASE`]) must be refused with a problem about
    /// `key` on line `line` of `checks` (1-based) whose message contains
    /// `needle`, rendered `node.toml:LINE: KEY: MESSAGE`.
    fn refused(checks: &str, line: usize, key: &str, needle: &str) {
        let problems = parse_checks(checks).expect_err("the check must be refused");
        let found = problems
            .0
            .iter()
            .find(|p| p.key == key)
            .unwrap_or_else(|| panic!("no problem for {key} in:\n{checks}\ngot:\n{problems}"));
        let line = BASE.lines().count() + line;
        assert_eq!(found.line, Some(line), "line of {key}; got:\n{problems}");
        assert!(
            found.message.contains(needle),
            "message {:?} lacks {needle:?}",
            found.message
        );
        assert!(found
            .to_string()
            .starts_with(&format!("node.toml:{line}: {key}: ")));
    }

    #[test]
    fn the_base_is_valid() {
        parse_checks("").unwrap_or_else(|p| panic!("{p}"));
    }

    #[test]
    fn one_check_of_every_kind_is_valid() {
        let config = parse_checks(
            r#"
[[checks]]
name = "tcp"
kind = "tcp"
address = "127.0.0.1:4190"

[[checks]]
name = "smtp"
kind = "smtp"
address = "127.0.0.1:25"
ehlo_name = "n1.example.org"
starttls = true
tls_verify = false
test_rcpt = "probe@example.org"
test_from = ""

[[checks]]
name = "submissions"
kind = "smtp"
address = "127.0.0.1:465"
tls = true
tls_ca_file = "/etc/mailherd/ca.pem"
server_name = "mail.example.org"

[[checks]]
name = "imap"
kind = "imap"
address = "127.0.0.1:143"
starttls = true
user = "probe@example.org"
password_file = "/etc/mailherd/probe.password"

[[checks]]
name = "pop3s"
kind = "pop3"
address = "127.0.0.1:995"
tls = true
user = "probe@example.org"
password = "secret"
critical = false

[[checks]]
name = "webmail"
kind = "https"
address = "127.0.0.1:443"
server_name = "mail.example.org"
path = "/SOGo/"
expect_status = 200
expect_body = "SOGo"
tls_verify = false

[[checks]]
name = "api"
kind = "http"
address = "127.0.0.1:8080"

[[checks]]
name = "postfix-container"
kind = "docker"
compose_project = "mailcowdockerized"
service = "postfix-mailcow"

[[checks]]
name = "dovecot-container"
kind = "docker"
container = "mailcowdockerized-dovecot-mailcow-1"
docker_socket = "/run/docker.sock"

[[checks]]
name = "postfix-unit"
kind = "systemd"
unit = "postfix@-.service"

[[checks]]
name = "db"
kind = "mariadb"
address = "127.0.0.1:13306"
user = "probe"
password_file = "/etc/mailherd/db.password"

[[checks]]
name = "db-socket"
kind = "mariadb"
socket = "/run/mysqld/mysqld.sock"
user = "root"

[[checks]]
name = "mail-volume"
kind = "mount"
mount_point = "/srv/mail"

[[checks]]
name = "queue"
kind = "postfix_queue"
max_messages = 1000
queue_directory = "/srv/mail/postfix"
"#,
        )
        .unwrap_or_else(|p| panic!("{p}"));
        assert_eq!(config.checks.len(), 14);
        assert_eq!(config.checks[13].kind, CheckKind::PostfixQueue);
        assert!(config.checks[0].critical, "critical defaults to true");
        assert!(!config.checks[4].critical);
        assert!(!config.checks[1].verifies_tls() && config.checks[2].verifies_tls());
    }

    #[test]
    fn required_keys_are_named_at_the_check() {
        // A missing key is reported on the line of its `[[checks]]` header.
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"smtp\"\n",
            1,
            "checks[0].address",
            "needs the `host:port`",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"docker\"\n",
            1,
            "checks[0].container",
            "needs `container`, or `compose_project` and `service`",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"docker\"\ncompose_project = \"mailcow\"\n",
            1,
            "checks[0].service",
            "`compose_project` needs `service`",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"docker\"\nservice = \"postfix\"\n",
            1,
            "checks[0].compose_project",
            "`service` needs `compose_project`",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"systemd\"\n",
            1,
            "checks[0].unit",
            "needs the unit",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"mariadb\"\nuser = \"root\"\n",
            1,
            "checks[0].address",
            "`address` (host:port) or `socket`",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"mariadb\"\naddress = \"127.0.0.1:3306\"\n",
            1,
            "checks[0].user",
            "needs the `user`",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"mount\"\n",
            1,
            "checks[0].mount_point",
            "needs the directory",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"postfix_queue\"\n",
            1,
            "checks[0].max_messages",
            "needs the most queued messages",
        );
    }

    #[test]
    fn keys_of_another_kind_are_refused() {
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"imap\"\naddress = \"127.0.0.1:143\"\ntest_rcpt = \"a@b.org\"\n",
            5,
            "checks[0].test_rcpt",
            "not used by kind \"imap\"",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"docker\"\ncontainer = \"x\"\naddress = \"127.0.0.1:1\"\n",
            5,
            "checks[0].address",
            "not used by kind \"docker\" (it takes: container, compose_project, service, docker_socket)",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"http\"\naddress = \"127.0.0.1:80\"\ntls_verify = false\n",
            5,
            "checks[0].tls_verify",
            "not used by kind \"http\"",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"tcp\"\naddress = \"127.0.0.1:80\"\nehlo_name = \"x.org\"\n",
            5,
            "checks[0].ehlo_name",
            "not used by kind \"tcp\"",
        );
    }

    #[test]
    fn contradicting_keys_are_refused() {
        let smtp = "[[checks]]\nname = \"c\"\nkind = \"smtp\"\naddress = \"127.0.0.1:25\"\n";
        refused(
            &format!("{smtp}tls = true\nstarttls = true\n"),
            6,
            "checks[0].starttls",
            "either `tls`",
        );
        refused(
            &format!("{smtp}tls_verify = false\n"),
            5,
            "checks[0].tls_verify",
            "no effect without `tls = true` or `starttls = true`",
        );
        refused(
            &format!("{smtp}starttls = true\ntls_verify = false\ntls_ca_file = \"/ca.pem\"\n"),
            7,
            "checks[0].tls_ca_file",
            "no effect with `tls_verify = false`",
        );
        refused(
            &format!("{smtp}server_name = \"mail.example.org\"\n"),
            5,
            "checks[0].server_name",
            "no effect without `tls = true` or `starttls = true`",
        );
        refused(
            &format!("{smtp}test_from = \"a@b.org\"\n"),
            5,
            "checks[0].test_from",
            "no effect without `test_rcpt`",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"docker\"\ncontainer = \"x\"\ncompose_project = \"p\"\nservice = \"s\"\n",
            4,
            "checks[0].container",
            "not both",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"mariadb\"\nuser = \"u\"\naddress = \"127.0.0.1:3306\"\nsocket = \"/run/mysqld/mysqld.sock\"\n",
            6,
            "checks[0].socket",
            "not both",
        );
        let imap = "[[checks]]\nname = \"c\"\nkind = \"imap\"\naddress = \"127.0.0.1:143\"\n";
        refused(
            &format!("{imap}user = \"u\"\npassword = \"p\"\npassword_file = \"/p\"\n"),
            7,
            "checks[0].password_file",
            "not both",
        );
        refused(
            &format!("{imap}user = \"u\"\n"),
            5,
            "checks[0].user",
            "needs `password` or `password_file`",
        );
        refused(
            &format!("{imap}password = \"p\"\n"),
            1,
            "checks[0].user",
            "no `user`",
        );
    }

    #[test]
    fn bad_values_are_refused() {
        let smtp = "[[checks]]\nname = \"c\"\nkind = \"smtp\"\naddress = \"127.0.0.1:25\"\n";
        refused(
            &format!("{smtp}test_rcpt = \"probe\"\n"),
            5,
            "checks[0].test_rcpt",
            "not a mail address",
        );
        refused(
            &format!("{smtp}test_rcpt = \"pro be@example.org\"\n"),
            5,
            "checks[0].test_rcpt",
            "printable ASCII",
        );
        refused(
            &format!("{smtp}test_rcpt = \"a@b.org\"\ntest_from = \"x@-bad-\"\n"),
            6,
            "checks[0].test_from",
            "is not a domain",
        );
        refused(
            &format!("{smtp}ehlo_name = \"my host\"\n"),
            5,
            "checks[0].ehlo_name",
            "not a host name",
        );
        refused(
            &format!("{smtp}starttls = true\nserver_name = \"\"\n"),
            6,
            "checks[0].server_name",
            "not a host name",
        );
        refused(
            &format!("{smtp}starttls = true\ntls_ca_file = \"ca.pem\"\n"),
            6,
            "checks[0].tls_ca_file",
            "absolute path",
        );
        let http = "[[checks]]\nname = \"c\"\nkind = \"http\"\naddress = \"127.0.0.1:80\"\n";
        refused(
            &format!("{http}path = \"status\"\n"),
            5,
            "checks[0].path",
            "must start with `/`",
        );
        refused(
            &format!("{http}path = \"/a b\"\n"),
            5,
            "checks[0].path",
            "percent-encode",
        );
        refused(
            &format!("{http}expect_status = 99\n"),
            5,
            "checks[0].expect_status",
            "from 100 to 599 (got 99)",
        );
        refused(
            &format!("{http}expect_body = \"\"\n"),
            5,
            "checks[0].expect_body",
            "must not be empty",
        );
        let imap = "[[checks]]\nname = \"c\"\nkind = \"imap\"\naddress = \"127.0.0.1:143\"\n";
        refused(
            &format!("{imap}user = \"\"\npassword = \"p\"\n"),
            5,
            "checks[0].user",
            "must not be empty",
        );
        refused(
            &format!("{imap}user = \"u\"\npassword = \"p\\r\\nA2 DELETE INBOX\"\n"),
            6,
            "checks[0].password",
            "control characters",
        );
        refused(
            &format!("{imap}user = \"u\"\npassword_file = \"probe.password\"\n"),
            6,
            "checks[0].password_file",
            "absolute path",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"pop3\"\naddress = \"127.0.0.1:110\"\nuser = \"a b\"\npassword = \"p\"\n",
            5,
            "checks[0].user",
            "cannot contain spaces",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"docker\"\ncontainer = \"-rm\"\n",
            4,
            "checks[0].container",
            "not a Docker name",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"docker\"\ncontainer = \"x\"\ndocker_socket = \"docker.sock\"\n",
            5,
            "checks[0].docker_socket",
            "absolute path",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"systemd\"\nunit = \"--all\"\n",
            4,
            "checks[0].unit",
            "not a systemd unit name",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"systemd\"\nunit = \"post fix\"\n",
            4,
            "checks[0].unit",
            "not a systemd unit name",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"mariadb\"\nuser = \"u\"\nsocket = \"mysqld.sock\"\n",
            5,
            "checks[0].socket",
            "absolute path",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"mount\"\nmount_point = \"srv/mail\"\n",
            4,
            "checks[0].mount_point",
            "absolute path",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"postfix_queue\"\nmax_messages = 10\nqueue_directory = \"spool\"\n",
            5,
            "checks[0].queue_directory",
            "absolute path",
        );
    }

    #[test]
    fn wrong_types_and_kinds_are_parse_errors_with_the_key() {
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"postfix_queue\"\nmax_messages = -1\n",
            4,
            "checks[0].max_messages",
            "",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"smtps\"\naddress = \"127.0.0.1:465\"\n",
            3,
            "checks[0].kind",
            "unknown variant `smtps`",
        );
        refused(
            "[[checks]]\nname = \"c\"\nkind = \"smtp\"\naddress = \"127.0.0.1:25\"\nstarttls = \"yes\"\n",
            5,
            "checks[0].starttls",
            "",
        );
    }

    #[test]
    fn a_password_is_not_shown_by_debug() {
        let config = parse_checks(
            "[[checks]]\nname = \"c\"\nkind = \"imap\"\naddress = \"127.0.0.1:143\"\nuser = \"u\"\npassword = \"hunter2\"\n",
        )
        .unwrap_or_else(|p| panic!("{p}"));
        let check = &config.checks[0];
        assert!(!format!("{check:?}").contains("hunter2"));
        assert_eq!(check.read_password().unwrap().unwrap().expose(), "hunter2");
        // It survives a round trip through TOML (the lab writes configs).
        let again = Config::parse(Path::new("again.toml"), &config.to_toml()).unwrap();
        assert_eq!(again.checks[0].password, check.password);
    }

    #[test]
    fn a_password_file_is_read_without_its_line_ending() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let mut check = CheckSection::new("c", CheckKind::Imap);
        check.password_file = Some(file);
        assert_eq!(check.read_password().unwrap().unwrap().expose(), "s3cret");
        check.password_file = Some(dir.path().join("absent"));
        let error = check.read_password().unwrap_err().to_string();
        assert!(error.contains("absent"), "{error}");
    }
}
