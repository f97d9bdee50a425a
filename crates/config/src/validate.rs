//! Cross-field validation: everything serde cannot check.
//!
//! Every check pushes a [`Problem`] with the dotted key it is about; the
//! line is looked up in the source text, so messages read
//! `file:line: key: what is wrong`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use crate::locate;
use crate::{Config, MemberRole, ServicesDriver};

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
        if let Err(error) = parse_cidr(&fip.address) {
            c.push("floating_ip.address", error);
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
        if !volume.device.is_absolute() {
            c.push(format!("volumes[{i}].device"), "must be an absolute path");
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

    // Services.
    if let Some(services) = &config.services {
        match services.driver {
            ServicesDriver::Command => {
                for (argv, key) in [
                    (&services.start, "services.start"),
                    (&services.stop, "services.stop"),
                    (&services.status, "services.status"),
                ] {
                    if argv.is_empty() || argv[0].is_empty() {
                        c.push(key, "the command driver needs this command (an argv list)");
                    }
                }
            }
        }
        if services.start_timeout_ms == 0 {
            c.push("services.start_timeout_ms", "must be above 0");
        }
        if services.stop_timeout_ms == 0 {
            c.push("services.stop_timeout_ms", "must be above 0");
        }
    }

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
    }

    Problems(c.problems)
}
