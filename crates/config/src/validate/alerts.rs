//! Validation of `[alerts]`, its channels (the keys of each kind) and
//! `[uptime_kuma]`.

use std::collections::BTreeMap;

use super::{refuse_unused_keys, require_absolute, Collector};
use crate::alerts::{AlertsSection, ChannelKind, ChannelSection, UptimeKumaSection};

/// The kind-specific keys `kind` reads.
fn keys_of_kind(kind: ChannelKind) -> &'static [&'static str] {
    match kind {
        ChannelKind::Webhook | ChannelKind::Slack => &["url"],
        ChannelKind::Ntfy => &["url", "token_file"],
        ChannelKind::Telegram => &["chat_id", "token_file", "api_url"],
        ChannelKind::Email => &[
            "host",
            "port",
            "starttls",
            "username",
            "password_file",
            "from",
            "to",
        ],
    }
}

/// An `http://` or `https://` URL with a host.
pub(super) fn check_http_url(c: &mut Collector<'_>, key: String, url: &str) {
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

/// Loosely a mail address: `local@domain`, optionally as `Name <local@domain>`.
fn looks_like_mailbox(text: &str) -> bool {
    let address = match (text.rfind('<'), text.strip_suffix('>')) {
        (Some(open), Some(inner)) => &inner[open + 1..],
        _ => text.trim(),
    };
    match address.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !address.contains(char::is_whitespace)
                && !domain.contains('@')
        }
        None => false,
    }
}

pub(super) fn validate_alerts(c: &mut Collector<'_>, alerts: &AlertsSection) {
    if alerts.rate_per_minute == 0 {
        c.push(
            "alerts.rate_per_minute",
            "must be at least 1 (remove the channel to silence it)",
        );
    }
    if alerts.burst == 0 {
        c.push("alerts.burst", "must be at least 1");
    }
    if alerts.queue == 0 || alerts.queue > 10_000 {
        c.push(
            "alerts.queue",
            format!("must be 1 to 10000 (got {})", alerts.queue),
        );
    }
    if alerts.retries > 10 {
        c.push(
            "alerts.retries",
            format!("must be at most 10 (got {})", alerts.retries),
        );
    }
    if alerts.retry_backoff_ms == 0 {
        c.push("alerts.retry_backoff_ms", "must be above 0");
    }
    if alerts.timeout_ms == 0 {
        c.push("alerts.timeout_ms", "must be above 0");
    }

    let mut names = BTreeMap::new();
    for (i, channel) in alerts.channels.iter().enumerate() {
        let key = |name: &str| format!("alerts.channels[{i}].{name}");
        if channel.name.trim().is_empty() {
            c.push(key("name"), "must not be empty");
        } else if let Some(first) = names.insert(channel.name.clone(), i) {
            c.push(
                key("name"),
                format!(
                    "`{}` is already used by alerts.channels[{first}]",
                    channel.name
                ),
            );
        }
        if channel.rate_per_minute == Some(0) {
            c.push(key("rate_per_minute"), "must be at least 1");
        }
        if channel.burst == Some(0) {
            c.push(key("burst"), "must be at least 1");
        }
        validate_channel_keys(c, i, channel);
    }
}

fn validate_channel_keys(c: &mut Collector<'_>, i: usize, channel: &ChannelSection) {
    let kind = channel.kind;
    let key = |name: &str| format!("alerts.channels[{i}].{name}");

    // Keys of another kind: refused, so that a mistake is not silently
    // ignored (a token meant for another channel, a wrong kind).
    let set: [(&str, bool); 11] = [
        ("url", channel.url.is_some()),
        ("token_file", channel.token_file.is_some()),
        ("chat_id", channel.chat_id.is_some()),
        ("api_url", channel.api_url.is_some()),
        ("host", channel.host.is_some()),
        ("port", channel.port.is_some()),
        ("starttls", channel.starttls.is_some()),
        ("username", channel.username.is_some()),
        ("password_file", channel.password_file.is_some()),
        ("from", channel.from.is_some()),
        ("to", channel.to.is_some()),
    ];
    refuse_unused_keys(c, &key, kind.as_str(), &set, keys_of_kind(kind));
    let missing = |c: &mut Collector<'_>, name: &str, what: &str| {
        c.push(
            key(name),
            format!("missing: kind \"{}\" needs {what}", kind.as_str()),
        )
    };

    match kind {
        ChannelKind::Webhook | ChannelKind::Ntfy | ChannelKind::Slack => match &channel.url {
            None => missing(c, "url", "the URL to POST to"),
            Some(url) => check_http_url(c, key("url"), url),
        },
        ChannelKind::Telegram => {
            match channel.chat_id.as_deref().map(str::trim) {
                None => missing(c, "chat_id", "the chat to write to"),
                Some("") => c.push(key("chat_id"), "must not be empty"),
                Some(_) => {}
            }
            if channel.token_file.is_none() {
                missing(c, "token_file", "the file holding the bot token");
            }
            if let Some(url) = &channel.api_url {
                check_http_url(c, key("api_url"), url);
            }
        }
        ChannelKind::Email => {
            match channel.host.as_deref().map(str::trim) {
                None => missing(c, "host", "the SMTP relay"),
                Some("") => c.push(key("host"), "must not be empty"),
                Some(_) => {}
            }
            if channel.port == Some(0) {
                c.push(key("port"), "must be 1 or more");
            }
            match &channel.from {
                None => missing(c, "from", "the sender address"),
                Some(from) if !looks_like_mailbox(from) => c.push(
                    key("from"),
                    format!("`{from}` is not a mail address (local@domain)"),
                ),
                Some(_) => {}
            }
            match &channel.to {
                None => missing(c, "to", "at least one recipient"),
                Some(to) if to.is_empty() => c.push(key("to"), "needs at least one recipient"),
                Some(to) => {
                    for address in to.iter().filter(|a| !looks_like_mailbox(a)) {
                        c.push(
                            key("to"),
                            format!("`{address}` is not a mail address (local@domain)"),
                        );
                    }
                }
            }
            match (&channel.username, &channel.password_file) {
                (Some(_), None) => missing(c, "password_file", "a password_file with username"),
                (None, Some(_)) => missing(c, "username", "a username with password_file"),
                _ => {}
            }
        }
    }
    for (path, name) in [
        (&channel.token_file, "token_file"),
        (&channel.password_file, "password_file"),
    ] {
        if let Some(path) = path {
            require_absolute(c, key(name), path);
        }
    }
}

pub(super) fn validate_uptime_kuma(c: &mut Collector<'_>, kuma: &UptimeKumaSection) {
    check_http_url(c, "uptime_kuma.push_url".into(), &kuma.push_url);
    if kuma.interval_s == 0 {
        c.push("uptime_kuma.interval_s", "must be at least 1");
    }
    if kuma.timeout_ms == 0 {
        c.push("uptime_kuma.timeout_ms", "must be above 0");
    } else if kuma.interval_s > 0 && kuma.timeout_ms >= kuma.interval_s * 1_000 {
        c.push(
            "uptime_kuma.timeout_ms",
            format!(
                "must be below interval_s ({} ms >= {} s): pushes would overlap",
                kuma.timeout_ms, kuma.interval_s
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like_mailbox;

    #[test]
    fn mailboxes() {
        assert!(looks_like_mailbox("ops@example.net"));
        assert!(looks_like_mailbox("mailherd <alerts@example.net>"));
        assert!(!looks_like_mailbox("ops"));
        assert!(!looks_like_mailbox("mailherd <alerts>"));
        assert!(!looks_like_mailbox("a b@example.net"));
    }
}
