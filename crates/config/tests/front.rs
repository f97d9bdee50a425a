//! `[haproxy]`, `[gateway]` and `[dns]`: the example's sections are valid,
//! and every broken value names the file, the line and the key.

mod common;

use common::{line_starting, parse, problem_about, EXAMPLE};
use mailherd_config::{HaproxyTls, TcpService};

#[test]
fn the_examples_front_sections_are_valid() {
    let config = parse(EXAMPLE).unwrap_or_else(|p| panic!("{p}"));
    let haproxy = config.haproxy.expect("[haproxy] is parsed");
    assert_eq!(haproxy.tls, HaproxyTls::Passthrough);
    assert_eq!(
        haproxy.tcp_services,
        [TcpService::Smtp, TcpService::Submission, TcpService::Imaps]
    );
    // The seed's timing is the default.
    assert_eq!(
        (
            haproxy.check_inter_ms,
            haproxy.check_fall,
            haproxy.check_rise
        ),
        (3_000, 3, 2)
    );
    let gateway = config.gateway.expect("[gateway] is parsed");
    assert_eq!(gateway.domains, ["example.net"]);
    assert!(gateway.soft_bounce);
    assert_eq!(gateway.maximal_queue_lifetime_s, 5 * 86_400);
    let dns = config.dns.expect("[dns] is parsed");
    assert_eq!((dns.mx_priority, dns.backup_mx_priority), (10, 20));
}

/// Replaces `from` by `to` in the example and expects a problem about
/// `key`, on the line where `line_start` begins, containing `needle`.
fn check(from: &str, to: &str, key: &str, line_start: &str, needle: &str) {
    assert!(EXAMPLE.contains(from), "the example lacks {from:?}");
    let text = EXAMPLE.replacen(from, to, 1);
    let (line, message) = problem_about(&text, key);
    let section = line_starting(&text, "[haproxy]", 1);
    assert_eq!(
        line,
        line_starting(&text, line_start, section),
        "line of {key}"
    );
    assert!(
        message.contains(needle),
        "{key}: {message:?} lacks {needle:?}"
    );
}

#[test]
fn broken_front_sections_name_line_and_key() {
    check(
        "tls = \"passthrough\"",
        "tls = \"terminate\"",
        "haproxy.crt",
        "[haproxy]",
        "needs crt",
    );
    check(
        "tls = \"passthrough\"",
        "tls = \"none\"",
        "haproxy.sni",
        "sni = ",
        "only used with tls = \"passthrough\"",
    );
    check(
        "sni = [\"mail.example.net\"]",
        "sni = [\"mail example\"]",
        "haproxy.sni[0]",
        "sni = ",
        "not a host name",
    );
    check(
        "[haproxy]\n",
        "[haproxy]\ncheck_inter_ms = 5\n",
        "haproxy.check_inter_ms",
        "check_inter_ms",
        "at least 100",
    );
    check(
        "[haproxy]\n",
        "[haproxy]\ncheck_fall = 0\n",
        "haproxy.check_fall",
        "check_fall",
        "at least 1",
    );
    check(
        "[haproxy]\n",
        "[haproxy]\nhttp_port = 587\n",
        "haproxy.tcp_services[1]",
        "tcp_services",
        "port 587 is already used by haproxy.http_port",
    );
    check(
        "tcp_services = [\"smtp\", \"submission\", \"imaps\"]",
        "tcp_services = []\nwebmail = false",
        "haproxy.webmail",
        "webmail = false",
        "serve nothing",
    );
    check(
        "domains = [\"example.net\"]",
        "domains = []",
        "gateway.domains",
        "domains = ",
        "at least one domain",
    );
    check(
        "domains = [\"example.net\"]",
        "domains = [\"example.net\", \"192.0.2.1\"]",
        "gateway.domains[1]",
        "domains = ",
        "is an IP address",
    );
    check(
        "fallback_relays = [\"[relay.example.org]:25\"]",
        "fallback_relays = [\"[relay.example.org]:smtp\"]",
        "gateway.fallback_relays[0]",
        "fallback_relays",
        "is not a port",
    );
    check(
        "fallback_relays = [\"[relay.example.org]:25\"]",
        "fallback_relays = [\"[relay.example.org\"]",
        "gateway.fallback_relays[0]",
        "fallback_relays",
        "without `]`",
    );
    check(
        "hostname = \"mx2.example.net\"",
        "hostname = \"mx2.example.net\"\nbounce_queue_lifetime_s = 900000",
        "gateway.bounce_queue_lifetime_s",
        "bounce_queue_lifetime_s",
        "at most maximal_queue_lifetime_s",
    );
    check(
        "hostname = \"mx2.example.net\"",
        "hostname = \"mx2.example.net\"\nminimal_backoff_s = 600",
        "gateway.maximal_backoff_s",
        "[gateway]",
        "at least minimal_backoff_s (600 s)",
    );
    check(
        "hostname = \"mx2.example.net\"",
        "hostname = \"mx2.example.net\"\nmynetworks = [\"10.0.0.0\"]",
        "gateway.mynetworks[0]",
        "mynetworks",
        "needs a prefix length",
    );
    check(
        "mail_host = \"mail.example.net\"",
        "mail_host = \"mail.example.net\"\nbackup_mx_priority = 10",
        "dns.backup_mx_priority",
        "backup_mx_priority",
        "must be above mx_priority (10)",
    );
    check(
        "spf = \"v=spf1 mx -all\"",
        "spf = \"mx -all\"",
        "dns.spf",
        "spf = ",
        "starting with `v=spf1`",
    );
}

#[test]
fn dns_needs_the_gateway() {
    let start = EXAMPLE.find("[gateway]").unwrap();
    let end = EXAMPLE.find("# DNS records").unwrap();
    let text = format!("{}{}", &EXAMPLE[..start], &EXAMPLE[end..]);
    let (line, message) = problem_about(&text, "dns");
    assert_eq!(line, line_starting(&text, "[dns]", 1));
    assert!(message.contains("needs a [gateway]"), "{message}");
}

#[test]
fn an_unknown_key_in_a_front_section_is_refused_with_its_line() {
    let text = EXAMPLE.replacen("[gateway]\n", "[gateway]\nsoftbounce = true\n", 1);
    let problems = parse(&text).expect_err("refused");
    let problem = &problems.0[0];
    assert_eq!(problem.line, Some(line_starting(&text, "softbounce", 1)));
    assert!(
        problem.message.contains("unknown field `softbounce`"),
        "{problem}"
    );
}
