//! `up --haproxy` and `up --gateway`: HAProxy and a Postfix mail gateway
//! in front of the nodes, each in its own namespace on the bridge (like the
//! client), configured the way an operator would: the mail nodes' configs
//! carry `[haproxy]` and `[gateway]`, and `mailherd render haproxy` and
//! `mailherd render postfix-gateway` write the files the daemons read.
//!
//! - HAProxy (`<prefix>-haproxy`, 10.77.0.3) passes SMTP (and IMAP with
//!   the mail stack) in TCP mode to the node whose agent answers
//!   `GET /master`; its checks run every 500 ms, fall 2, rise 1 (the seed's
//!   3 s, 3, 2 would make a test wait ten seconds per failover).
//! - The gateway (`<prefix>-gw`, 10.77.0.4, `--stack mail` only) is stock
//!   Postfix in a private mount namespace, its /etc/postfix, /var/lib/postfix
//!   and queue bound from `gateway/` in the lab dir (as the nodes do). It
//!   relays `lab.test` to the floating IP and retries every few seconds,
//!   so mail queued during a failover arrives soon after it.
//!
//! `down` finds both by the lab's namespace prefix, like every other part.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mailherd_config::{GatewaySection, HaproxySection, TcpService};

use crate::state::{ClientState, LabState, Stack};
use crate::topology::{self, MAIL_DOMAIN, SMTP_PORT};

/// The HAProxy binary of Debian's package `haproxy`.
pub const HAPROXY_BIN: &str = "/usr/sbin/haproxy";

/// `[haproxy]` of the lab's mail nodes.
pub fn haproxy_section(state: &LabState) -> HaproxySection {
    let mut tcp_services = vec![TcpService::Smtp];
    if state.stack == Stack::Mail {
        tcp_services.push(TcpService::Imap);
    }
    HaproxySection {
        // The nodes serve no webmail; mail in TCP mode is what is tested.
        webmail: false,
        tcp_services,
        check_inter_ms: 500,
        check_fall: 2,
        check_rise: 1,
        ..HaproxySection::default()
    }
}

/// `[gateway]` of the lab's mail nodes.
pub fn gateway_section() -> GatewaySection {
    GatewaySection {
        mynetworks: vec!["127.0.0.0/8".to_string()],
        // Retries every few seconds and a connect timeout of one: a
        // failover takes seconds, and the test waits for the queue.
        queue_run_delay_s: 2,
        minimal_backoff_s: 2,
        maximal_backoff_s: 5,
        connect_timeout_s: 1,
        ..GatewaySection::new(vec![MAIL_DOMAIN.to_string()], topology::GATEWAY_HOSTNAME)
    }
}

/// The namespaces of `up --haproxy` and `up --gateway`.
pub fn plan(haproxy: bool, gateway: bool) -> (Option<ClientState>, Option<ClientState>) {
    (
        haproxy.then(|| ClientState {
            namespace: topology::haproxy_namespace(),
            address: topology::HAPROXY_ADDRESS,
            switch_veth: topology::HAPROXY_SWITCH_VETH.to_string(),
        }),
        gateway.then(|| ClientState {
            namespace: topology::gateway_namespace(),
            address: topology::GATEWAY_ADDRESS,
            switch_veth: topology::GATEWAY_SWITCH_VETH.to_string(),
        }),
    )
}

/// Where a client reaches SMTP through HAProxy or the gateway.
pub fn smtp_address(front: &ClientState) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(front.address, SMTP_PORT))
}

/// The config `mailherd render` reads: the first mail node's.
fn render_config(state: &LabState) -> Result<&Path> {
    state
        .nodes
        .iter()
        .find(|node| node.is_mail())
        .map(|node| node.config.as_path())
        .context("a lab has mail nodes")
}

/// `mailherd render ARGS...`, as an operator runs it.
fn render(state: &LabState, args: &[&str]) -> Result<()> {
    let agent = state.agent_bin.display().to_string();
    let config = render_config(state)?.display().to_string();
    let mut all = vec!["render"];
    all.extend_from_slice(&args[..1]);
    all.extend(["--config", config.as_str()]);
    all.extend_from_slice(&args[1..]);
    crate::host::run(&agent, &all)?;
    Ok(())
}

fn haproxy_config(lab_dir: &Path) -> PathBuf {
    topology::haproxy_dir(lab_dir).join("haproxy.cfg")
}

/// Renders haproxy.cfg and has HAProxy check it.
pub fn write_haproxy_files(state: &LabState) -> Result<()> {
    let dir = topology::haproxy_dir(&state.lab_dir);
    std::fs::create_dir_all(&dir)?;
    let config = haproxy_config(&state.lab_dir);
    let config_text = config.display().to_string();
    render(state, &["haproxy", "--output", &config_text])?;
    crate::host::run(HAPROXY_BIN, &["-c", "-q", "-f", &config_text])
        .context("HAProxy refuses the rendered haproxy.cfg")?;
    Ok(())
}

/// Starts HAProxy in its namespace (it forks into the background).
pub fn start_haproxy(state: &LabState, front: &ClientState) -> Result<()> {
    let config = haproxy_config(&state.lab_dir).display().to_string();
    let pid_file = topology::haproxy_dir(&state.lab_dir)
        .join("haproxy.pid")
        .display()
        .to_string();
    crate::host::ip(&[
        "netns",
        "exec",
        &front.namespace,
        HAPROXY_BIN,
        "-D",
        "-f",
        &config,
        "-p",
        &pid_file,
    ])
    .context("cannot start HAProxy")?;
    Ok(())
}

/// The gateway's directories: its /etc/postfix, /var/lib/postfix and queue.
struct GatewayDirs {
    config: PathBuf,
    data: PathBuf,
    spool: PathBuf,
    log: PathBuf,
    script: PathBuf,
}

fn gateway_dirs(lab_dir: &Path) -> GatewayDirs {
    let dir = topology::gateway_dir(lab_dir);
    GatewayDirs {
        config: dir.join("etc-postfix"),
        data: dir.join("lib-postfix"),
        spool: dir.join("spool"),
        log: dir.join("postfix.log"),
        script: dir.join("start.sh"),
    }
}

/// The package's /etc/postfix, then main.cf and the transport map from
/// `mailherd render postfix-gateway`, plus what the lab's namespaces need.
pub fn write_gateway_files(state: &LabState) -> Result<()> {
    let dirs = gateway_dirs(&state.lab_dir);
    for dir in [&dirs.config, &dirs.data, &dirs.spool] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let config = dirs.config.display().to_string();
    crate::host::run("cp", &["-a", "/etc/postfix/.", &config])
        .context("cannot copy /etc/postfix into the gateway's Postfix config")?;
    render(state, &["postfix-gateway", "--output-dir", &config])?;
    let main_cf = dirs.config.join("main.cf");
    let rendered = std::fs::read_to_string(&main_cf)?;
    std::fs::write(
        &main_cf,
        format!(
            "{rendered}\n\
             # --- mailherd-lab: the gateway's namespace ---\n\
             inet_protocols = ipv4\n\
             # The lab namespaces have no DNS and no syslog.\n\
             smtpd_peername_lookup = no\n\
             maillog_file_prefixes = {dir}\n\
             maillog_file = {log}\n",
            dir = topology::gateway_dir(&state.lab_dir).display(),
            log = dirs.log.display()
        ),
    )?;
    let master_dist = std::fs::read_to_string("/usr/share/postfix/master.cf.dist")
        .context("cannot read /usr/share/postfix/master.cf.dist (Debian package postfix)")?;
    std::fs::write(
        dirs.config.join("master.cf"),
        crate::stack::master_cf_without_chroot(&master_dist),
    )?;
    let postfix = nix::unistd::User::from_name("postfix")
        .context("cannot look up user postfix")?
        .context("there is no user postfix (is the Debian package postfix installed?)")?;
    nix::unistd::chown(&dirs.data, Some(postfix.uid), Some(postfix.gid))
        .with_context(|| format!("cannot chown {}", dirs.data.display()))?;

    let script = format!(
        "#!/bin/sh\n\
         # Generated by mailherd-lab: starts the mail gateway's Postfix. Runs in\n\
         # the gateway's network namespace and a private mount namespace of its\n\
         # own, which the Postfix master keeps alive.\n\
         set -eu\n\
         PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
         mount --bind {config} /etc/postfix\n\
         mount --bind {data} /var/lib/postfix\n\
         mount --bind {spool} /var/spool/postfix\n\
         exec postfix start\n",
        config = sh_word(&dirs.config)?,
        data = sh_word(&dirs.data)?,
        spool = sh_word(&dirs.spool)?,
    );
    std::fs::write(&dirs.script, script)?;
    std::fs::set_permissions(&dirs.script, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// A path as one shell word (the lab's paths have no quotes).
fn sh_word(path: &Path) -> Result<String> {
    let text = path.display().to_string();
    if text.contains(['\'', '\n']) {
        bail!("{text:?}: the lab's paths must not contain quotes");
    }
    Ok(format!("'{text}'"))
}

/// Starts the gateway's Postfix in its namespace.
pub fn start_gateway(state: &LabState, front: &ClientState) -> Result<()> {
    let script = gateway_dirs(&state.lab_dir).script.display().to_string();
    crate::host::ip(&[
        "netns",
        "exec",
        &front.namespace,
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "/bin/sh",
        &script,
    ])
    .context("cannot start the mail gateway's Postfix")?;
    Ok(())
}

/// Builds what `up --haproxy` / `--gateway` asked for and starts it.
pub fn build(state: &LabState) -> Result<()> {
    if let Some(front) = &state.haproxy {
        write_haproxy_files(state)?;
        start_haproxy(state, front)?;
    }
    if let Some(front) = &state.gateway {
        write_gateway_files(state)?;
        start_gateway(state, front)?;
    }
    Ok(())
}

/// Waits until HAProxy and the gateway greet clients with an SMTP banner:
/// through HAProxy that means its checks found the master.
pub fn wait_ready(state: &LabState, wait: Duration) -> Result<()> {
    for (what, front) in [("HAProxy", &state.haproxy), ("the gateway", &state.gateway)] {
        let Some(front) = front else { continue };
        let address = smtp_address(front);
        let deadline = Instant::now() + wait;
        loop {
            let probe = crate::netns::run_in(&state.client.namespace, || {
                Ok(crate::probe::read_banner(
                    address,
                    Duration::from_millis(500),
                ))
            })?;
            let last = match probe {
                Ok(banner) if crate::probe::is_ready_banner(&banner) => break,
                Ok(banner) => format!("banner {banner:?}"),
                Err(reason) => reason,
            };
            if Instant::now() >= deadline {
                bail!(
                    "{what} served no SMTP banner on {address} within {} s (last probe: {last})",
                    wait.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

/// The host PID of the gateway's Postfix master, whose mount namespace
/// holds the gateway's /etc/postfix and queue.
pub fn gateway_master_pid(front: &ClientState) -> Result<Option<i32>> {
    for pid in crate::netns::pids(&front.namespace)? {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if exe == Path::new(crate::stack::POSTFIX_MASTER) {
            return Ok(Some(pid));
        }
    }
    Ok(None)
}

/// Whether something listens for SMTP in `front`, for `status`.
pub fn serves_smtp(front: &ClientState) -> bool {
    let address = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, SMTP_PORT));
    crate::netns::run_in(&front.namespace, || {
        Ok(std::net::TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok())
    })
    .unwrap_or(false)
}
