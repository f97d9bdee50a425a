//! Validation of `[haproxy]`, `[gateway]` and `[dns]`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{check_host_name, parse_cidr, require_absolute, Collector};
use crate::front::{DnsSection, GatewaySection, HaproxySection, HaproxyTls};

pub(super) fn validate_haproxy(c: &mut Collector<'_>, haproxy: &HaproxySection) {
    if haproxy.check_inter_ms < 100 {
        c.push(
            "haproxy.check_inter_ms",
            format!("must be at least 100 (got {})", haproxy.check_inter_ms),
        );
    }
    if haproxy.check_fall == 0 {
        c.push("haproxy.check_fall", "must be at least 1");
    }
    if haproxy.check_rise == 0 {
        c.push("haproxy.check_rise", "must be at least 1");
    }
    for (key, value) in [
        ("timeout_connect_ms", haproxy.timeout_connect_ms),
        ("timeout_http_ms", haproxy.timeout_http_ms),
        ("timeout_tcp_ms", haproxy.timeout_tcp_ms),
    ] {
        if value == 0 {
            c.push(format!("haproxy.{key}"), "must be above 0");
        }
    }

    match (haproxy.tls, &haproxy.crt) {
        (HaproxyTls::Terminate, None) => c.push(
            "haproxy.crt",
            "tls = \"terminate\" needs crt, the PEM file with certificate and key",
        ),
        (HaproxyTls::Terminate, Some(crt)) => require_absolute(c, "haproxy.crt".into(), crt),
        (_, Some(_)) => c.push(
            "haproxy.crt",
            "only used with tls = \"terminate\" (HAProxy holds the certificate)",
        ),
        (_, None) => {}
    }
    if !haproxy.sni.is_empty() && haproxy.tls != HaproxyTls::Passthrough {
        c.push(
            "haproxy.sni",
            "only used with tls = \"passthrough\" (terminate serves crt's names)",
        );
    }
    for (i, name) in haproxy.sni.iter().enumerate() {
        if let Err(error) = check_dns_name(name) {
            c.push(format!("haproxy.sni[{i}]"), error);
        }
    }
    if !haproxy.webmail && haproxy.tcp_services.is_empty() {
        c.push(
            "haproxy.webmail",
            "false and no tcp_services: HAProxy would serve nothing",
        );
    }

    // Every frontend needs its own port.
    let mut ports: BTreeMap<u16, String> = BTreeMap::new();
    let mut claim = |c: &mut Collector<'_>, key: String, port: u16| {
        if port == 0 {
            c.push(key, "must be a port from 1 to 65535");
        } else if let Some(first) = ports.insert(port, key.clone()) {
            c.push(key, format!("port {port} is already used by {first}"));
        }
    };
    if haproxy.webmail {
        claim(c, "haproxy.http_port".into(), haproxy.http_port);
        if haproxy.tls != HaproxyTls::None {
            claim(c, "haproxy.https_port".into(), haproxy.https_port);
        }
    }
    for (i, service) in haproxy.tcp_services.iter().enumerate() {
        claim(c, format!("haproxy.tcp_services[{i}]"), service.port());
    }
}

pub(super) fn validate_gateway(c: &mut Collector<'_>, gateway: &GatewaySection) {
    if gateway.domains.is_empty() {
        c.push(
            "gateway.domains",
            "needs at least one domain (the cluster's mail domains)",
        );
    }
    let mut seen = BTreeMap::new();
    for (i, domain) in gateway.domains.iter().enumerate() {
        let key = format!("gateway.domains[{i}]");
        if let Err(error) = check_dns_name(domain) {
            c.push(key, error);
        } else if let Some(first) = seen.insert(domain.to_ascii_lowercase(), i) {
            c.push(
                key,
                format!("`{domain}` is already gateway.domains[{first}]"),
            );
        }
    }
    if let Err(error) = check_dns_name(&gateway.hostname) {
        c.push("gateway.hostname", error);
    }
    if let Some(host) = &gateway.relay_host {
        if let Err(error) = check_host_name(host) {
            c.push("gateway.relay_host", error);
        }
    }
    if gateway.relay_port == 0 {
        c.push("gateway.relay_port", "must be a port from 1 to 65535");
    }
    for (i, relay) in gateway.fallback_relays.iter().enumerate() {
        if let Err(error) = parse_relay(relay) {
            c.push(format!("gateway.fallback_relays[{i}]"), error);
        }
    }
    for (key, value) in [
        ("maximal_queue_lifetime_s", gateway.maximal_queue_lifetime_s),
        ("queue_run_delay_s", gateway.queue_run_delay_s),
        ("minimal_backoff_s", gateway.minimal_backoff_s),
        ("connect_timeout_s", gateway.connect_timeout_s),
    ] {
        if value == 0 {
            c.push(format!("gateway.{key}"), "must be above 0");
        }
    }
    if gateway.bounce_queue_lifetime_s > gateway.maximal_queue_lifetime_s {
        c.push(
            "gateway.bounce_queue_lifetime_s",
            format!(
                "must be at most maximal_queue_lifetime_s ({} s; Postfix would cut it there)",
                gateway.maximal_queue_lifetime_s
            ),
        );
    }
    if gateway.maximal_backoff_s < gateway.minimal_backoff_s {
        c.push(
            "gateway.maximal_backoff_s",
            format!(
                "must be at least minimal_backoff_s ({} s)",
                gateway.minimal_backoff_s
            ),
        );
    }
    for (i, network) in gateway.mynetworks.iter().enumerate() {
        if let Err(error) = parse_cidr(network) {
            c.push(format!("gateway.mynetworks[{i}]"), error);
        }
    }
}

pub(super) fn validate_dns(c: &mut Collector<'_>, dns: &DnsSection, has_gateway: bool) {
    if !has_gateway {
        c.push(
            "dns",
            "needs a [gateway]: its domains get the MX records and it is the backup MX",
        );
    }
    if let Err(error) = check_dns_name(&dns.mail_host) {
        c.push("dns.mail_host", error);
    }
    if dns.backup_mx_priority <= dns.mx_priority {
        c.push(
            "dns.backup_mx_priority",
            format!(
                "must be above mx_priority ({}): senders try the lowest first, and the \
                 gateway is the backup",
                dns.mx_priority
            ),
        );
    }
    if dns.ttl_s == 0 {
        c.push("dns.ttl_s", "must be above 0");
    }
    if let Some(domain) = &dns.node_domain {
        if let Err(error) = check_dns_name(domain) {
            c.push("dns.node_domain", error);
        }
    }
    if let Some(spf) = &dns.spf {
        if !spf.starts_with("v=spf1") || spf.contains('"') || spf.contains('\\') || spf.len() > 255
        {
            c.push(
                "dns.spf",
                format!(
                    "must be an SPF policy starting with `v=spf1`, without quotes or \
                     backslashes, at most 255 characters (got {spf:?})"
                ),
            );
        }
    }
}

/// A DNS name: a host name that is not an IP address.
fn check_dns_name(name: &str) -> Result<(), String> {
    if name.parse::<IpAddr>().is_ok() {
        return Err(format!("`{name}` is an IP address; a DNS name is needed"));
    }
    check_host_name(name)
}

/// `host`, `[host]` (no MX lookup) or either with `:port`, as Postfix's
/// `smtp_fallback_relay` takes them.
fn parse_relay(relay: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = relay.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{relay}`: `[` without `]`"))?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| format!("`{relay}`: only `:port` may follow `]`"))?,
                ),
            ),
        }
    } else {
        match relay.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (relay, None),
        }
    };
    check_host_name(host).map_err(|error| format!("`{relay}`: {error}"))?;
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(port) if port > 0 => {}
            _ => return Err(format!("`{relay}`: `{port}` is not a port")),
        }
    }
    Ok(())
}
