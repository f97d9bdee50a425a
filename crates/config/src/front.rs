//! `[haproxy]`, `[gateway]` and `[dns]`: what stands in front of the
//! cluster, as `mailherd render haproxy`, `render postfix-gateway` and
//! `render dns` write it.
//!
//! The schema only; validation is in `validate/front.rs`, rendering in the
//! CLI. These sections are cluster-wide (every node may carry the same
//! ones); the agent itself does not read them.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[haproxy]`: HAProxy in front of the nodes, sending traffic to the one
/// node whose agent answers `GET /master` with 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaproxySection {
    /// The address HAProxy's frontends bind (default every address).
    #[serde(default = "default_bind_address")]
    pub bind_address: IpAddr,
    /// Whether HAProxy serves webmail (HTTP, and HTTPS as `tls` says).
    #[serde(default = "default_true")]
    pub webmail: bool,
    /// Webmail's HTTP port, on HAProxy and on the nodes.
    #[serde(default = "default_http_port")]
    pub http_port: u16,
    /// Webmail's HTTPS port on HAProxy (and on the nodes, for passthrough).
    #[serde(default = "default_https_port")]
    pub https_port: u16,
    /// HTTPS: `none` (HTTP only), `passthrough` (TCP, the nodes hold the
    /// certificate; `sni` may restrict the names) or `terminate` (HAProxy
    /// holds `crt` and speaks HTTP to the nodes).
    #[serde(default)]
    pub tls: HaproxyTls,
    /// `terminate`: the PEM file with certificate and key (HAProxy's `crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crt: Option<PathBuf>,
    /// `passthrough`: only TLS connections naming one of these servers (SNI)
    /// are passed on; empty passes every one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni: Vec<String>,
    /// Mail services HAProxy also passes on in TCP mode, on their standard
    /// ports: `smtp` 25, `smtps` 465, `submission` 587, `imap` 143, `imaps`
    /// 993, `pop3` 110, `pop3s` 995, `sieve` 4190.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_services: Vec<TcpService>,
    /// Health check interval (the seed's `inter 3s`).
    #[serde(default = "default_check_inter_ms")]
    pub check_inter_ms: u64,
    /// Failed checks before a server is out (the seed's `fall 3`).
    #[serde(default = "default_check_fall")]
    pub check_fall: u32,
    /// Passed checks before a server is in again (the seed's `rise 2`).
    #[serde(default = "default_check_rise")]
    pub check_rise: u32,
    #[serde(default = "default_timeout_connect_ms")]
    pub timeout_connect_ms: u64,
    /// Client and server inactivity timeout of webmail.
    #[serde(default = "default_timeout_http_ms")]
    pub timeout_http_ms: u64,
    /// Client and server inactivity timeout of the mail services (IMAP IDLE
    /// keeps a connection quiet for up to 29 minutes).
    #[serde(default = "default_timeout_tcp_ms")]
    pub timeout_tcp_ms: u64,
}

/// How HAProxy handles webmail's HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HaproxyTls {
    /// HTTP only.
    #[default]
    None,
    /// TCP mode: the TLS connection goes through untouched.
    Passthrough,
    /// HAProxy ends TLS with `crt` and forwards HTTP.
    Terminate,
}

/// A mail service HAProxy passes on in TCP mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpService {
    Smtp,
    Smtps,
    Submission,
    Imap,
    Imaps,
    Pop3,
    Pop3s,
    Sieve,
}

impl TcpService {
    /// The name written in the config.
    pub fn name(self) -> &'static str {
        match self {
            TcpService::Smtp => "smtp",
            TcpService::Smtps => "smtps",
            TcpService::Submission => "submission",
            TcpService::Imap => "imap",
            TcpService::Imaps => "imaps",
            TcpService::Pop3 => "pop3",
            TcpService::Pop3s => "pop3s",
            TcpService::Sieve => "sieve",
        }
    }

    /// The service's standard port, on HAProxy and on the nodes.
    pub fn port(self) -> u16 {
        match self {
            TcpService::Smtp => 25,
            TcpService::Smtps => 465,
            TcpService::Submission => 587,
            TcpService::Imap => 143,
            TcpService::Imaps => 993,
            TcpService::Pop3 => 110,
            TcpService::Pop3s => 995,
            TcpService::Sieve => 4190,
        }
    }
}

fn default_bind_address() -> IpAddr {
    IpAddr::from([0, 0, 0, 0])
}
fn default_true() -> bool {
    true
}
fn default_http_port() -> u16 {
    80
}
fn default_https_port() -> u16 {
    443
}
fn default_check_inter_ms() -> u64 {
    3_000
}
fn default_check_fall() -> u32 {
    3
}
fn default_check_rise() -> u32 {
    2
}
fn default_timeout_connect_ms() -> u64 {
    5_000
}
fn default_timeout_http_ms() -> u64 {
    60_000
}
fn default_timeout_tcp_ms() -> u64 {
    30 * 60_000
}

impl Default for HaproxySection {
    fn default() -> Self {
        HaproxySection {
            bind_address: default_bind_address(),
            webmail: true,
            http_port: default_http_port(),
            https_port: default_https_port(),
            tls: HaproxyTls::default(),
            crt: None,
            sni: Vec::new(),
            tcp_services: Vec::new(),
            check_inter_ms: default_check_inter_ms(),
            check_fall: default_check_fall(),
            check_rise: default_check_rise(),
            timeout_connect_ms: default_timeout_connect_ms(),
            timeout_http_ms: default_timeout_http_ms(),
            timeout_tcp_ms: default_timeout_tcp_ms(),
        }
    }
}

/// `[gateway]`: a Postfix mail gateway in front of the cluster. It takes
/// the cluster's domains from the Internet and relays them to the floating
/// IP; while no master answers, it keeps the mail queued (`soft_bounce`)
/// and retries, or hands it to a fallback relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// The cluster's mail domains (`relay_domains` and the transport map;
    /// `render dns` writes their MX records).
    pub domains: Vec<String>,
    /// The gateway's own name (`myhostname`, the backup MX's name).
    pub hostname: String,
    /// The gateway's public address, for its A record in `render dns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// Where the cluster's mail goes: default the floating IP's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_host: Option<String>,
    /// The port of `relay_host` (SMTP on the floating IP).
    #[serde(default = "default_relay_port")]
    pub relay_port: u16,
    /// `smtp_fallback_relay`: tried in order when the cluster does not
    /// answer or defers; `host`, `[host]` (no MX lookup), with `:port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_relays: Vec<String>,
    /// `soft_bounce`: keep mail queued instead of bouncing it, also on a
    /// 5xx answer from a half-started master.
    #[serde(default = "default_true")]
    pub soft_bounce: bool,
    /// How long mail may stay queued before it is returned (Postfix: 5d).
    #[serde(default = "default_queue_lifetime_s")]
    pub maximal_queue_lifetime_s: u64,
    /// The same for bounces (Postfix: 5d); at most the one above.
    #[serde(default = "default_queue_lifetime_s")]
    pub bounce_queue_lifetime_s: u64,
    /// How often the queue manager scans the deferred queue.
    #[serde(default = "default_queue_run_delay_s")]
    pub queue_run_delay_s: u64,
    /// The least and the most time between two attempts at a deferred
    /// message: a failover takes seconds, so shorter than Postfix's
    /// defaults (300 s and 4000 s).
    #[serde(default = "default_minimal_backoff_s")]
    pub minimal_backoff_s: u64,
    #[serde(default = "default_maximal_backoff_s")]
    pub maximal_backoff_s: u64,
    /// `smtp_connect_timeout`: the cluster is near, so shorter than
    /// Postfix's 30 s.
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: u64,
    /// Clients that may relay anywhere through the gateway (`mynetworks`),
    /// as CIDR.
    #[serde(default = "default_mynetworks")]
    pub mynetworks: Vec<String>,
}

fn default_relay_port() -> u16 {
    25
}
fn default_queue_lifetime_s() -> u64 {
    5 * 86_400
}
fn default_queue_run_delay_s() -> u64 {
    60
}
fn default_minimal_backoff_s() -> u64 {
    60
}
fn default_maximal_backoff_s() -> u64 {
    300
}
fn default_connect_timeout_s() -> u64 {
    10
}
fn default_mynetworks() -> Vec<String> {
    vec!["127.0.0.0/8".to_string(), "::1/128".to_string()]
}

impl GatewaySection {
    /// A gateway for `domains` named `hostname` with every default.
    pub fn new(domains: Vec<String>, hostname: impl Into<String>) -> GatewaySection {
        GatewaySection {
            domains,
            hostname: hostname.into(),
            address: None,
            relay_host: None,
            relay_port: default_relay_port(),
            fallback_relays: Vec::new(),
            soft_bounce: true,
            maximal_queue_lifetime_s: default_queue_lifetime_s(),
            bounce_queue_lifetime_s: default_queue_lifetime_s(),
            queue_run_delay_s: default_queue_run_delay_s(),
            minimal_backoff_s: default_minimal_backoff_s(),
            maximal_backoff_s: default_maximal_backoff_s(),
            connect_timeout_s: default_connect_timeout_s(),
            mynetworks: default_mynetworks(),
        }
    }
}

/// `[dns]`: the records `render dns` writes for `[gateway]`'s domains: MX
/// to the floating IP's name and to the gateway (the backup MX), the A
/// records of those names and, optionally, of every mail node and SPF.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// The name on the floating IP, the preferred MX.
    pub mail_host: String,
    /// The address of `mail_host`: default the floating IP's address (give
    /// the public one when the floating IP is private).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_address: Option<IpAddr>,
    /// MX preference of `mail_host` (lower is tried first).
    #[serde(default = "default_mx_priority")]
    pub mx_priority: u16,
    /// MX preference of the gateway; must be above `mx_priority`.
    #[serde(default = "default_backup_mx_priority")]
    pub backup_mx_priority: u16,
    #[serde(default = "default_ttl_s")]
    pub ttl_s: u32,
    /// When set, every mail node gets `<name>.<node_domain>` on its
    /// member address (`members[].api`'s IP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_domain: Option<String>,
    /// An SPF policy written as TXT on every domain, e.g. `v=spf1 mx -all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spf: Option<String>,
}

fn default_mx_priority() -> u16 {
    10
}
fn default_backup_mx_priority() -> u16 {
    20
}
fn default_ttl_s() -> u32 {
    300
}

impl DnsSection {
    /// Records for `mail_host` with every default.
    pub fn new(mail_host: impl Into<String>) -> DnsSection {
        DnsSection {
            mail_host: mail_host.into(),
            mail_address: None,
            mx_priority: default_mx_priority(),
            backup_mx_priority: default_backup_mx_priority(),
            ttl_s: default_ttl_s(),
            node_domain: None,
            spf: None,
        }
    }
}
