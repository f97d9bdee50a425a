//! Validation of `[signup]` and its backend section.

use std::collections::BTreeSet;

use super::alerts::check_http_url;
use super::{check_host_name, require_absolute, Collector};
use crate::signup::{SignupBackend, SignupSection, POSTFIX_MAP_TYPES};

pub(super) fn validate_signup(c: &mut Collector<'_>, signup: &SignupSection) {
    if signup.domains.is_empty() {
        c.push(
            "signup.domains",
            "must offer at least one domain (e.g. [\"example.net\"])",
        );
    }
    let mut seen = BTreeSet::new();
    for (i, domain) in signup.domains.iter().enumerate() {
        let key = format!("signup.domains[{i}]");
        if let Err(error) = check_host_name(domain) {
            c.push(key, error);
        } else if domain.parse::<std::net::IpAddr>().is_ok() || !domain.contains('.') {
            c.push(key, format!("`{domain}` is not a mail domain"));
        } else if domain.to_ascii_lowercase() != *domain {
            c.push(
                key,
                format!("write it in lower case (`{}`)", domain.to_ascii_lowercase()),
            );
        } else if !seen.insert(domain.clone()) {
            c.push(key, format!("`{domain}` is offered twice"));
        }
    }
    if signup.max_mailboxes_per_domain == 0 {
        c.push("signup.max_mailboxes_per_domain", "must be at least 1");
    }
    if signup.quota_mib == 0 {
        c.push("signup.quota_mib", "must be at least 1");
    }
    if !(8..=128).contains(&signup.min_password_length) {
        c.push(
            "signup.min_password_length",
            format!("must be 8 to 128 (got {})", signup.min_password_length),
        );
    }
    if let Some(path) = &signup.weak_passwords_file {
        require_absolute(c, "signup.weak_passwords_file".into(), path);
    }
    if signup.per_ip_limit == 0 {
        c.push("signup.per_ip_limit", "must be at least 1");
    }
    if signup.global_limit < signup.per_ip_limit {
        c.push(
            "signup.global_limit",
            format!(
                "must be at least per_ip_limit ({}), got {}",
                signup.per_ip_limit, signup.global_limit
            ),
        );
    }
    if signup.rate_window_s == 0 {
        c.push("signup.rate_window_s", "must be at least 1");
    }
    if signup.token_max_age_s < 60 {
        c.push(
            "signup.token_max_age_s",
            format!(
                "must be at least 60 (got {}): people need time to fill the form",
                signup.token_max_age_s
            ),
        );
    } else if signup.token_min_age_s >= signup.token_max_age_s {
        c.push(
            "signup.token_min_age_s",
            format!(
                "must be below token_max_age_s ({}), got {}",
                signup.token_max_age_s, signup.token_min_age_s
            ),
        );
    }
    if let Some(path) = &signup.token_key_file {
        require_absolute(c, "signup.token_key_file".into(), path);
    }
    for (i, agent) in signup.agents.iter().enumerate() {
        check_http_url(c, format!("signup.agents[{i}]"), agent);
    }

    let (needed, other) = match signup.backend {
        SignupBackend::Mailcow => ("mailcow", signup.dovecot.as_ref().map(|_| "dovecot")),
        SignupBackend::Dovecot => ("dovecot", signup.mailcow.as_ref().map(|_| "mailcow")),
    };
    if let Some(other) = other {
        c.push(
            format!("signup.{other}"),
            format!("not used by backend \"{needed}\"; remove [signup.{other}] or change signup.backend"),
        );
    }
    match signup.backend {
        SignupBackend::Mailcow => match &signup.mailcow {
            None => c.push(
                "signup.backend",
                "backend \"mailcow\" needs a [signup.mailcow] section (api_url, api_key_file)",
            ),
            Some(mailcow) => {
                check_http_url(c, "signup.mailcow.api_url".into(), &mailcow.api_url);
                require_absolute(c, "signup.mailcow.api_key_file".into(), &mailcow.api_key_file);
                if mailcow.timeout_ms == 0 {
                    c.push("signup.mailcow.timeout_ms", "must be above 0");
                }
            }
        },
        SignupBackend::Dovecot => match &signup.dovecot {
            None => c.push(
                "signup.backend",
                "backend \"dovecot\" needs a [signup.dovecot] section (users_file, mail_root, uid, gid)",
            ),
            Some(dovecot) => {
                require_absolute(c, "signup.dovecot.users_file".into(), &dovecot.users_file);
                require_absolute(c, "signup.dovecot.mail_root".into(), &dovecot.mail_root);
                if dovecot.uid == 0 || dovecot.gid == 0 {
                    let key = if dovecot.uid == 0 { "uid" } else { "gid" };
                    c.push(
                        format!("signup.dovecot.{key}"),
                        "must not be 0: mail must not be owned by root",
                    );
                }
                if let Some(map) = &dovecot.postfix_map {
                    check_postfix_map(c, map);
                }
            }
        },
    }
}

fn check_postfix_map(c: &mut Collector<'_>, map: &str) {
    let key = "signup.dovecot.postfix_map";
    match map.split_once(':') {
        Some((kind, path)) if POSTFIX_MAP_TYPES.contains(&kind) => {
            if !path.starts_with('/') {
                c.push(
                    key,
                    format!("the map's path must be absolute (got {path:?})"),
                );
            }
        }
        Some((kind, _)) => c.push(
            key,
            format!(
                "unknown map type `{kind}` (use one of: {})",
                POSTFIX_MAP_TYPES.join(", ")
            ),
        ),
        None => c.push(
            key,
            format!("must be TYPE:PATH, e.g. hash:/srv/mail/vmailbox (got {map:?})"),
        ),
    }
}
