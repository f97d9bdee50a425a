//! `mailherd render dns`: zone-file records for the cluster's mail.
//!
//! Each of `[gateway]`'s domains gets two MX records: `dns.mail_host` (on
//! the floating IP) at `mx_priority` and the gateway at the higher
//! `backup_mx_priority`. Senders try the lowest preference first and the
//! next one when it fails (RFC 5321 §5.1), so mail reaches the gateway,
//! which queues it, whenever no master answers on the floating IP. Then
//! the address records of those names, optionally of every mail node, and
//! an SPF policy. Names are absolute (a trailing dot), so the records can
//! be pasted into any zone.

use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::{bail, Context};
use mailherd_config::{Config, MemberRole};

pub fn render_dns(config: &Config, config_path: &std::path::Path) -> anyhow::Result<String> {
    let Some(dns) = &config.dns else {
        bail!("the config has no [dns] section: see examples/mailherd.toml");
    };
    let gateway = config
        .gateway
        .as_ref()
        .context("the config has no [gateway]: it is the backup MX")?;
    let mail_address = match (dns.mail_address, &config.floating_ip) {
        (Some(address), _) => address,
        (None, Some(floating_ip)) => super::gateway::floating_ip_address(&floating_ip.address)?,
        (None, None) => bail!(
            "the config has neither dns.mail_address nor a [floating_ip]: \
             {} has no address",
            dns.mail_host
        ),
    };
    let ttl = dns.ttl_s;

    let mut out = String::new();
    let w = &mut out;
    writeln!(
        w,
        "; DNS records of cluster {}, made by `mailherd render dns --config {}`.",
        config.cluster.name,
        config_path.display()
    )?;
    writeln!(
        w,
        "; Senders try the lowest MX preference first: the floating IP's host, then the"
    )?;
    writeln!(
        w,
        "; gateway, which queues the mail while no master answers."
    )?;
    for domain in &gateway.domains {
        let domain = absolute(domain);
        writeln!(
            w,
            "{domain} {ttl} IN MX {} {}",
            dns.mx_priority,
            absolute(&dns.mail_host)
        )?;
        writeln!(
            w,
            "{domain} {ttl} IN MX {} {}",
            dns.backup_mx_priority,
            absolute(&gateway.hostname)
        )?;
        if let Some(spf) = &dns.spf {
            writeln!(w, "{domain} {ttl} IN TXT \"{spf}\"")?;
        }
    }
    address_record(w, &dns.mail_host, mail_address, ttl)?;
    match gateway.address {
        Some(address) => address_record(w, &gateway.hostname, address, ttl)?,
        None => writeln!(
            w,
            "; {} has no gateway.address: add its address record where it is kept",
            absolute(&gateway.hostname)
        )?,
    }
    if let Some(node_domain) = &dns.node_domain {
        for member in config.members.iter().filter(|m| m.role == MemberRole::Mail) {
            let label_ok = !member.name.is_empty()
                && member.name.len() <= 63
                && !member.name.starts_with('-')
                && member
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-');
            if !label_ok {
                bail!(
                    "member `{}` is not a DNS label (letters, digits, `-`):                      it cannot be a name under dns.node_domain",
                    member.name
                );
            }
            let name = format!("{}.{}", member.name, node_domain.trim_end_matches('.'));
            address_record(w, &name, member.api.ip(), ttl)?;
        }
    }
    Ok(out)
}

/// An A or AAAA record.
fn address_record(w: &mut String, name: &str, address: IpAddr, ttl: u32) -> anyhow::Result<()> {
    let kind = if address.is_ipv4() { "A" } else { "AAAA" };
    writeln!(w, "{} {ttl} IN {kind} {address}", absolute(name))?;
    Ok(())
}

/// `name.` (the zone-file way of saying "not relative to $ORIGIN").
fn absolute(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}
