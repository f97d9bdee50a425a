//! `[alerts]`, `[[alerts.channels]]` and `[uptime_kuma]`: the example's
//! commented block is valid, and every broken value names the file, the
//! line and the key.

mod common;

use common::{line_starting, parse, problem_about, EXAMPLE};
use mailherd_config::ChannelKind;

/// The example with its commented `[alerts]` ... `[uptime_kuma]` block
/// switched on.
fn example_with_alerts() -> String {
    common::example_enabled_from("# [alerts]")
}

#[test]
fn the_examples_alerts_and_kuma_sections_are_valid() {
    assert!(parse(EXAMPLE).unwrap().alerts.is_none());
    let config = parse(&example_with_alerts()).unwrap_or_else(|p| panic!("{p}"));
    let alerts = config.alerts.expect("[alerts] is parsed");
    assert_eq!(alerts.window_s, 300);
    assert_eq!(alerts.queue, 64);
    let kinds: Vec<ChannelKind> = alerts.channels.iter().map(|c| c.kind).collect();
    assert_eq!(
        kinds,
        [
            ChannelKind::Webhook,
            ChannelKind::Ntfy,
            ChannelKind::Slack,
            ChannelKind::Telegram,
            ChannelKind::Email
        ]
    );
    assert_eq!(alerts.channels[4].port, Some(587));
    let kuma = config.uptime_kuma.expect("[uptime_kuma] is parsed");
    assert_eq!(kuma.interval_s, 30);
    assert_eq!(kuma.timeout_ms, 5_000);
}

#[test]
fn broken_alert_settings_name_file_line_and_key() {
    let base = example_with_alerts();
    let alerts_line = line_starting(&base, "[alerts]", 1);
    // (from, to, key, the line starts with, needle); `from` is replaced
    // once, after the [alerts] header.
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        (
            "burst = 5",
            "burst = 0",
            "alerts.burst",
            "burst = 0",
            "at least 1",
        ),
        (
            "retries = 3",
            "retries = 30",
            "alerts.retries",
            "retries = 30",
            "at most 10",
        ),
        (
            "window_s = 300",
            "window_s = -1",
            "alerts.window_s",
            "window_s",
            "",
        ),
        (
            "name = \"chat\"",
            "name = \"ops\"",
            "alerts.channels[2].name",
            "name = \"ops\"\nurl = \"https://hooks.slack",
            "already used by alerts.channels[0]",
        ),
        (
            "url = \"https://hooks.example.net/mailherd\"",
            "url = \"hooks.example.net\"",
            "alerts.channels[0].url",
            "url = \"hooks.example.net\"",
            "http:// or https://",
        ),
        (
            "url = \"https://hooks.example.net/mailherd\"",
            "url = \"https://hooks.example.net/mailherd\"\nchat_id = \"1\"",
            "alerts.channels[0].chat_id",
            "chat_id = \"1\"",
            "not used by kind \"webhook\"",
        ),
        (
            "token_file = \"/etc/mailherd/ntfy-token\"",
            "token_file = \"ntfy-token\"",
            "alerts.channels[1].token_file",
            "token_file = \"ntfy-token\"",
            "absolute",
        ),
        (
            "chat_id = \"-1001234567890\"\n",
            "",
            "alerts.channels[3].chat_id",
            "[[alerts.channels]]\nkind = \"telegram\"",
            "missing",
        ),
        (
            "token_file = \"/etc/mailherd/telegram-token\"\n",
            "",
            "alerts.channels[3].token_file",
            "[[alerts.channels]]\nkind = \"telegram\"",
            "bot token",
        ),
        (
            "kind = \"telegram\"",
            "kind = \"pager\"",
            "alerts.channels[3].kind",
            "kind = \"pager\"",
            "unknown variant",
        ),
        (
            "host = \"smtp.example.net\"\n",
            "",
            "alerts.channels[4].host",
            "[[alerts.channels]]\nkind = \"email\"",
            "missing",
        ),
        (
            "to = [\"ops@example.net\"]",
            "to = [\"ops\"]",
            "alerts.channels[4].to",
            "to = [\"ops\"]",
            "not a mail address",
        ),
        (
            "password_file = \"/etc/mailherd/smtp-password\"\n",
            "",
            "alerts.channels[4].password_file",
            "[[alerts.channels]]\nkind = \"email\"",
            "with username",
        ),
        (
            "port = 587",
            "port = 70000",
            "alerts.channels[4].port",
            "port = 70000",
            "",
        ),
        (
            "push_url = \"https://kuma.example.net/api/push/XXXXXXXXXX\"",
            "push_url = \"kuma\"",
            "uptime_kuma.push_url",
            "push_url",
            "http:// or https://",
        ),
        (
            "interval_s = 30",
            "interval_s = 0",
            "uptime_kuma.interval_s",
            "interval_s = 0",
            "at least 1",
        ),
        (
            "interval_s = 30",
            "interval_s = 2\ntimeout_ms = 5000",
            "uptime_kuma.timeout_ms",
            "timeout_ms = 5000",
            "below interval_s",
        ),
    ];
    let (head, tail) = base.split_at(base.find("[alerts]").unwrap());
    for (from, to, key, line_start, needle) in cases {
        assert!(tail.contains(from), "the example lacks {from:?}");
        let text = format!("{head}{}", tail.replacen(from, to, 1));
        let (line, message) = problem_about(&text, key);
        let expected = match line_start.split_once('\n') {
            // A multi-line start: the line of its first line where the
            // whole text follows.
            Some(_) => {
                let offset = text[text.find("[alerts]").unwrap()..]
                    .find(line_start)
                    .unwrap()
                    + text.find("[alerts]").unwrap();
                text[..offset].matches('\n').count() + 1
            }
            None => line_starting(&text, line_start, alerts_line),
        };
        assert_eq!(line, expected, "line of {key} after {from:?} -> {to:?}");
        assert!(
            message.contains(needle),
            "{key}: {message:?} lacks {needle:?}"
        );
    }
}
