//! Validation of `[mariadb]` and its `[[mariadb.nodes]]`.

use std::collections::BTreeMap;

use super::{require_absolute, Collector};
use crate::{Config, MariadbSection, MemberRole, ReplicationMode};

/// A MariaDB account name: what `'user'@'host'` can quote without escaping.
fn check_account_part(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".to_string());
    }
    if text.len() > 80 {
        return Err(format!(
            "must be at most 80 characters (got {})",
            text.len()
        ));
    }
    if let Some(bad) = text
        .chars()
        .find(|ch| ch.is_control() || matches!(ch, '\'' | '"' | '`' | '\\'))
    {
        return Err(format!("must not contain {bad:?}"));
    }
    Ok(())
}

pub(super) fn validate_mariadb(c: &mut Collector<'_>, config: &Config, section: &MariadbSection) {
    for (key, value) in [
        ("mariadb.admin_user", &section.admin_user),
        ("mariadb.replication_user", &section.replication_user),
        ("mariadb.replication_host", &section.replication_host),
    ] {
        if let Err(error) = check_account_part(value) {
            c.push(key, error);
        }
    }
    for (key, path) in [
        ("mariadb.admin_password_file", &section.admin_password_file),
        (
            "mariadb.replication_password_file",
            &section.replication_password_file,
        ),
    ] {
        if let Some(path) = path {
            require_absolute(c, key.to_string(), path);
        }
    }
    if section.replication_password_file.is_none() {
        c.push(
            "mariadb.replication_password_file",
            "missing: replicas log in to the master with this password (a file, mode 0600)",
        );
    }
    if section.max_promotion_lag_ms == 0 {
        c.push(
            "mariadb.max_promotion_lag_ms",
            "must be above 0 (how long a promotion waits for the relay log to be applied)",
        );
    }
    if section.connect_timeout_ms == 0 {
        c.push("mariadb.connect_timeout_ms", "must be above 0");
    }
    if section.follow_interval_ms < 100 {
        c.push(
            "mariadb.follow_interval_ms",
            format!("must be at least 100 (got {})", section.follow_interval_ms),
        );
    }

    if section.nodes.is_empty() {
        c.push(
            "mariadb.nodes",
            "at least one [[mariadb.nodes]] entry is needed (one per mail node)",
        );
    }
    let mut names = BTreeMap::new();
    let mut addresses = BTreeMap::new();
    let mut server_ids = BTreeMap::new();
    for (i, node) in section.nodes.iter().enumerate() {
        let key = |name: &str| format!("mariadb.nodes[{i}].{name}");
        if let Some(first) = names.insert(node.name.clone(), i) {
            c.push(
                key("name"),
                format!("`{}` is already used by mariadb.nodes[{first}]", node.name),
            );
        }
        match config.members.iter().find(|m| m.name == node.name) {
            None => c.push(
                key("name"),
                format!("`{}` is not among the [[members]]", node.name),
            ),
            Some(member) if member.role == MemberRole::Witness => c.push(
                key("name"),
                format!(
                    "`{}` is a witness: it never holds the role, so its database would never be promoted",
                    node.name
                ),
            ),
            Some(member) => {
                if node.server_id.is_none() && u32::try_from(member.id).is_err() {
                    c.push(
                        key("server_id"),
                        format!(
                            "missing: the member's id {} does not fit a server_id; give one",
                            member.id
                        ),
                    );
                }
            }
        }
        if let Some(first) = addresses.insert(node.address, i) {
            c.push(
                key("address"),
                format!("{} is already used by mariadb.nodes[{first}]", node.address),
            );
        }
        if node.address.ip().is_unspecified() || node.address.port() == 0 {
            c.push(
                key("address"),
                format!(
                    "must be an address the other nodes can reach, with a port (got {})",
                    node.address
                ),
            );
        }
        if node.server_id == Some(0) {
            c.push(
                key("server_id"),
                "must be 1 or more (0 refuses to replicate)",
            );
        }
        let server_id = config.mariadb_server_id(node);
        if server_id != 0 {
            if let Some(first) = server_ids.insert(server_id, i) {
                c.push(
                    key("server_id"),
                    format!("{server_id} is already used by mariadb.nodes[{first}]"),
                );
            }
        }
    }
    if section.mode == ReplicationMode::MasterMaster && section.nodes.len() != 2 {
        c.push(
            "mariadb.mode",
            format!(
                "\"master-master\" replicates between exactly two nodes (got {} [[mariadb.nodes]])",
                section.nodes.len()
            ),
        );
    }
    let me = &config.node.name;
    let is_mail = config
        .members
        .iter()
        .any(|m| &m.name == me && m.role == MemberRole::Mail);
    if is_mail && !section.nodes.is_empty() && section.node(me).is_none() {
        c.push(
            "mariadb.nodes",
            format!("this node (`{me}`) has no [[mariadb.nodes]] entry"),
        );
    }
}
