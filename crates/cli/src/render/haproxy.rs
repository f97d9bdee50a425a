//! `mailherd render haproxy`: haproxy.cfg for HAProxy in front of the
//! cluster.
//!
//! Every mail member is a server of every backend, health-checked with
//! `option httpchk GET /master` on its agent's API (`check port`): only
//! the master that finished its promotion and whose stack is fit answers
//! 200, so HAProxy sends traffic to exactly the node that serves, and
//! `on-marked-down shutdown-sessions` cuts the sessions of a master that
//! stopped being one instead of leaving them hanging. Webmail is HTTP, its
//! HTTPS passed through (TCP, optionally by SNI) or terminated; mail
//! services are passed on in TCP mode.

use std::fmt::Write as _;
use std::net::SocketAddr;

use anyhow::bail;
use mailherd_config::{Config, HaproxySection, HaproxyTls, MemberRole};

/// One backend: a name, its mode and the port on the nodes.
struct Backend<'a> {
    name: &'a str,
    mode: &'a str,
    port: u16,
    timeout_ms: u64,
}

pub fn render_haproxy(config: &Config, config_path: &std::path::Path) -> anyhow::Result<String> {
    let Some(haproxy) = &config.haproxy else {
        bail!("the config has no [haproxy] section: see examples/mailherd.toml");
    };
    let servers: Vec<(String, SocketAddr)> = config
        .members
        .iter()
        .filter(|member| member.role == MemberRole::Mail)
        .map(|member| (super::sanitize(&member.name), member.api))
        .collect();
    if servers.is_empty() {
        bail!("the config has no mail member: HAProxy would have no server");
    }

    let mut out = String::new();
    let w = &mut out;
    writeln!(
        w,
        "# haproxy.cfg of cluster {}, made by `mailherd render haproxy --config {}`.",
        config.cluster.name,
        config_path.display()
    )?;
    writeln!(
        w,
        "# Every mail node is a server; only the one whose agent answers GET /master"
    )?;
    writeln!(
        w,
        "# with 200 (the master, promoted and fit) gets traffic. Render again after"
    )?;
    writeln!(w, "# the members change.")?;
    writeln!(w)?;
    writeln!(w, "global")?;
    writeln!(w, "    log /dev/log local0")?;
    writeln!(w, "    maxconn 4096")?;
    writeln!(w)?;
    writeln!(w, "defaults")?;
    writeln!(w, "    log global")?;
    writeln!(w, "    option dontlognull")?;
    writeln!(
        w,
        "    timeout connect {}",
        duration(haproxy.timeout_connect_ms)
    )?;
    writeln!(
        w,
        "    timeout client {}",
        duration(haproxy.timeout_http_ms)
    )?;
    writeln!(
        w,
        "    timeout server {}",
        duration(haproxy.timeout_http_ms)
    )?;

    let http = Backend {
        name: "webmail_http",
        mode: "http",
        port: haproxy.http_port,
        timeout_ms: haproxy.timeout_http_ms,
    };
    if haproxy.webmail {
        writeln!(w)?;
        writeln!(w, "frontend webmail_http")?;
        writeln!(w, "    bind {}", bind(haproxy, haproxy.http_port))?;
        writeln!(w, "    mode http")?;
        if haproxy.tls == HaproxyTls::Terminate {
            writeln!(
                w,
                "    http-request redirect scheme https unless {{ ssl_fc }}"
            )?;
        }
        writeln!(w, "    default_backend webmail_http")?;
        write_backend(w, haproxy, &http, &servers)?;
        match haproxy.tls {
            HaproxyTls::None => {}
            HaproxyTls::Passthrough => {
                writeln!(w)?;
                writeln!(w, "frontend webmail_https")?;
                writeln!(w, "    bind {}", bind(haproxy, haproxy.https_port))?;
                writeln!(w, "    mode tcp")?;
                // Wait for the TLS ClientHello, so that its SNI can be read.
                writeln!(w, "    tcp-request inspect-delay 5s")?;
                writeln!(
                    w,
                    "    tcp-request content accept if {{ req_ssl_hello_type 1 }}"
                )?;
                if haproxy.sni.is_empty() {
                    writeln!(w, "    default_backend webmail_https")?;
                } else {
                    // No default backend: another name is refused.
                    writeln!(
                        w,
                        "    use_backend webmail_https if {{ req.ssl_sni -i {} }}",
                        haproxy.sni.join(" ")
                    )?;
                }
                let https = Backend {
                    name: "webmail_https",
                    mode: "tcp",
                    port: haproxy.https_port,
                    timeout_ms: haproxy.timeout_http_ms,
                };
                write_backend(w, haproxy, &https, &servers)?;
            }
            HaproxyTls::Terminate => {
                let Some(crt) = &haproxy.crt else {
                    bail!("haproxy.crt is missing (tls = \"terminate\")");
                };
                writeln!(w)?;
                writeln!(w, "frontend webmail_https")?;
                writeln!(
                    w,
                    "    bind {} ssl crt {}",
                    bind(haproxy, haproxy.https_port),
                    crt.display()
                )?;
                writeln!(w, "    mode http")?;
                writeln!(w, "    http-request set-header X-Forwarded-Proto https")?;
                writeln!(w, "    default_backend webmail_http")?;
            }
        }
    }

    for service in &haproxy.tcp_services {
        let name = service.name();
        writeln!(w)?;
        writeln!(w, "frontend {name}")?;
        writeln!(w, "    bind {}", bind(haproxy, service.port()))?;
        writeln!(w, "    mode tcp")?;
        writeln!(w, "    timeout client {}", duration(haproxy.timeout_tcp_ms))?;
        writeln!(w, "    default_backend {name}")?;
        let backend = Backend {
            name,
            mode: "tcp",
            port: service.port(),
            timeout_ms: haproxy.timeout_tcp_ms,
        };
        write_backend(w, haproxy, &backend, &servers)?;
    }
    Ok(out)
}

fn write_backend(
    w: &mut String,
    haproxy: &HaproxySection,
    backend: &Backend<'_>,
    servers: &[(String, SocketAddr)],
) -> anyhow::Result<()> {
    writeln!(w)?;
    writeln!(w, "backend {}", backend.name)?;
    writeln!(w, "    mode {}", backend.mode)?;
    if backend.mode == "http" {
        writeln!(w, "    option forwardfor")?;
    }
    writeln!(w, "    timeout server {}", duration(backend.timeout_ms))?;
    writeln!(w, "    timeout check {}", duration(haproxy.check_inter_ms))?;
    writeln!(w, "    option httpchk GET /master")?;
    writeln!(w, "    http-check expect status 200")?;
    writeln!(
        w,
        "    default-server inter {} fall {} rise {} on-marked-down shutdown-sessions",
        duration(haproxy.check_inter_ms),
        haproxy.check_fall,
        haproxy.check_rise
    )?;
    for (name, api) in servers {
        let address = SocketAddr::new(api.ip(), backend.port);
        writeln!(w, "    server {name} {address} check port {}", api.port())?;
    }
    Ok(())
}

/// `address:port` of a frontend's bind line.
fn bind(haproxy: &HaproxySection, port: u16) -> String {
    SocketAddr::new(haproxy.bind_address, port).to_string()
}

/// HAProxy's time: whole seconds as `3s` (as the seed writes them), else
/// milliseconds.
fn duration(ms: u64) -> String {
    if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn durations_read_like_the_seeds() {
        assert_eq!(duration(3_000), "3s");
        assert_eq!(duration(500), "500ms");
        assert_eq!(duration(1_800_000), "1800s");
    }
}
