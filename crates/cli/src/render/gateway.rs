//! `mailherd render postfix-gateway`: main.cf and the transport map of a
//! Postfix mail gateway in front of the cluster.
//!
//! The gateway takes the cluster's domains (`relay_domains`) and relays
//! them to the floating IP (the transport map). While no master answers,
//! the mail stays in the gateway's queue and is retried every
//! `minimal_backoff_s` to `maximal_backoff_s`; `smtp_fallback_relay` takes
//! it meanwhile when configured; `soft_bounce = yes` turns a 5xx of a
//! half-started master into a retry instead of a bounce.

use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::bail;
use mailherd_config::{validate::parse_cidr, Config, GatewaySection};

/// The two files of a gateway: main.cf and `transport`, which main.cf
/// reads from its own directory.
pub struct GatewayFiles {
    pub main_cf: String,
    pub transport: String,
}

/// The name of the transport map beside main.cf.
pub const TRANSPORT_FILE: &str = "transport";

pub fn render_gateway(
    config: &Config,
    config_path: &std::path::Path,
) -> anyhow::Result<GatewayFiles> {
    let Some(gateway) = &config.gateway else {
        bail!("the config has no [gateway] section: see examples/mailherd.toml");
    };
    let destination = relay_destination(config, gateway)?;

    let mut main_cf = String::new();
    let w = &mut main_cf;
    writeln!(
        w,
        "# main.cf of the mail gateway {} in front of cluster {},",
        gateway.hostname, config.cluster.name
    )?;
    writeln!(
        w,
        "# made by `mailherd render postfix-gateway --config {}`.",
        config_path.display()
    )?;
    writeln!(
        w,
        "# The cluster's domains go to {destination} (the transport map); while no master"
    )?;
    writeln!(
        w,
        "# answers, mail stays queued here and is retried{}.",
        if gateway.soft_bounce {
            ", never bounced (soft_bounce)"
        } else {
            ""
        }
    )?;
    writeln!(w, "compatibility_level = 3.6")?;
    writeln!(w, "myhostname = {}", gateway.hostname)?;
    writeln!(w, "myorigin = $myhostname")?;
    writeln!(w, "# Nothing is delivered here: every domain is relayed.")?;
    writeln!(w, "mydestination =")?;
    writeln!(w, "local_recipient_maps =")?;
    writeln!(w, "alias_maps =")?;
    writeln!(w, "alias_database =")?;
    writeln!(w, "inet_interfaces = all")?;
    writeln!(w, "mynetworks = {}", mynetworks(gateway)?)?;
    writeln!(w, "relay_domains = {}", gateway.domains.join(", "))?;
    writeln!(
        w,
        "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination"
    )?;
    writeln!(w, "relay_transport = relay")?;
    writeln!(
        w,
        "transport_maps = texthash:${{config_directory}}/{TRANSPORT_FILE}"
    )?;
    if gateway.fallback_relays.is_empty() {
        writeln!(
            w,
            "# no fallback relay configured (gateway.fallback_relays)"
        )?;
    } else {
        writeln!(
            w,
            "smtp_fallback_relay = {}",
            gateway.fallback_relays.join(", ")
        )?;
    }
    writeln!(
        w,
        "soft_bounce = {}",
        if gateway.soft_bounce { "yes" } else { "no" }
    )?;
    writeln!(
        w,
        "maximal_queue_lifetime = {}s",
        gateway.maximal_queue_lifetime_s
    )?;
    writeln!(
        w,
        "bounce_queue_lifetime = {}s",
        gateway.bounce_queue_lifetime_s
    )?;
    writeln!(w, "queue_run_delay = {}s", gateway.queue_run_delay_s)?;
    writeln!(w, "minimal_backoff_time = {}s", gateway.minimal_backoff_s)?;
    writeln!(w, "maximal_backoff_time = {}s", gateway.maximal_backoff_s)?;
    writeln!(w, "smtp_connect_timeout = {}s", gateway.connect_timeout_s)?;

    let mut transport = String::new();
    writeln!(
        transport,
        "# The cluster's domains, relayed to the floating IP (no MX lookup)."
    )?;
    for domain in &gateway.domains {
        writeln!(transport, "{domain} relay:{destination}")?;
    }
    Ok(GatewayFiles { main_cf, transport })
}

/// `[host]:port` of the cluster: `gateway.relay_host`, else the floating
/// IP's address.
fn relay_destination(config: &Config, gateway: &GatewaySection) -> anyhow::Result<String> {
    let host = match (&gateway.relay_host, &config.floating_ip) {
        (Some(host), _) => host.clone(),
        (None, Some(floating_ip)) => floating_ip_address(&floating_ip.address)?.to_string(),
        (None, None) => bail!(
            "the config has neither gateway.relay_host nor a [floating_ip]: \
             the gateway has nowhere to relay to"
        ),
    };
    // Postfix's brackets: an IPv6 address is written `[ipv6:...]`.
    let host = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("ipv6:{v6}"),
        _ => host,
    };
    Ok(format!("[{host}]:{}", gateway.relay_port))
}

/// The floating IP without its prefix length (`hetzner` ones have none).
pub fn floating_ip_address(text: &str) -> anyhow::Result<IpAddr> {
    match text.split_once('/') {
        Some(_) => parse_cidr(text)
            .map(|(address, _)| address)
            .map_err(|error| anyhow::anyhow!("floating_ip.address: {error}")),
        None => text
            .parse()
            .map_err(|_| anyhow::anyhow!("floating_ip.address: `{text}` is not an IP address")),
    }
}

/// `mynetworks` as Postfix writes it (IPv6 in brackets).
fn mynetworks(gateway: &GatewaySection) -> anyhow::Result<String> {
    let mut networks = Vec::new();
    for network in &gateway.mynetworks {
        let (address, prefix) =
            parse_cidr(network).map_err(|error| anyhow::anyhow!("gateway.mynetworks: {error}"))?;
        networks.push(match address {
            IpAddr::V4(v4) => format!("{v4}/{prefix}"),
            IpAddr::V6(v6) => format!("[{v6}]/{prefix}"),
        });
    }
    Ok(networks.join(" "))
}
