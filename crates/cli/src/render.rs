//! `mailherd render keepalived`: the keepalived.conf matching a node's
//! config, for a keepalived setup that lets mailherd check and act:
//!
//! - one `vrrp_instance` holding the floating IP (`virtual_ipaddress`, when
//!   its driver is `local`), this member's priority, unicast to the other
//!   mail members' peer addresses (VRRP multicast rarely crosses cloud
//!   networks), `nopreempt` unless `cluster.preempt`;
//! - `track_script` running `mailherd check --degraded-ok` (keepalived
//!   faults the instance on any non-zero exit; a degraded stack is no
//!   reason to move);
//! - `notify` running `mailherd notify`, which runs the promotion and
//!   demotion pipelines.
//!
//! Every node derives the same `virtual_router_id` from `cluster.name`;
//! `--virtual-router-id` sets another when the segment already has one.
//!
//! What stands in front of the cluster is rendered by the submodules, from
//! the cluster-wide sections of any node's config: [`haproxy`]
//! (`[haproxy]`), [`gateway`] (`[gateway]`, a Postfix mail gateway) and
//! [`dns`] (`[dns]`, MX and address records).

mod dns;
mod gateway;
mod haproxy;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use mailherd_config::{validate::parse_cidr, Config, FloatingIpDriver, MemberRole};

#[derive(clap::Args)]
pub struct KeepalivedArgs {
    #[arg(long, default_value = mailherd_config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Write here instead of to standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// The mailherd program keepalived runs (default: this one).
    #[arg(long, value_name = "PATH")]
    pub mailherd: Option<PathBuf>,
    /// The VRRP router id, 1 to 255 (default: derived from cluster.name).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..))]
    pub virtual_router_id: Option<u8>,
}

/// The VRRP router id every node of `cluster` derives: FNV-1a of the name,
/// into 1..=255.
pub fn virtual_router_id(cluster: &str) -> u8 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in cluster.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash % 255) as u8 + 1
}

/// A path as one word of a keepalived script line.
fn script_word(path: &Path) -> anyhow::Result<String> {
    let text = path.display().to_string();
    if text.is_empty()
        || text
            .chars()
            .any(|ch| ch.is_whitespace() || ch == '"' || ch == '\'')
    {
        bail!("{text:?}: keepalived script paths must not contain spaces or quotes");
    }
    Ok(text)
}

/// `--config` and `--output` of the renderers of one file.
#[derive(clap::Args)]
pub struct FileArgs {
    #[arg(long, default_value = mailherd_config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Write here instead of to standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct GatewayArgs {
    #[arg(long, default_value = mailherd_config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Write DIR/main.cf and DIR/transport (default: both to standard
    /// output, the transport map after a `# ==> transport <==` line).
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

/// Writes `text` to `output`, or to standard output without one.
fn write_output(output: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

fn load(path: &Path) -> anyhow::Result<Config> {
    crate::load(path).with_context(|| format!("loading {}", path.display()))
}

pub fn haproxy(args: &FileArgs) -> anyhow::Result<ExitCode> {
    let config = load(&args.config)?;
    let text = haproxy::render_haproxy(&config, &args.config)?;
    write_output(args.output.as_deref(), &text)?;
    Ok(ExitCode::SUCCESS)
}

pub fn dns(args: &FileArgs) -> anyhow::Result<ExitCode> {
    let config = load(&args.config)?;
    let text = dns::render_dns(&config, &args.config)?;
    write_output(args.output.as_deref(), &text)?;
    Ok(ExitCode::SUCCESS)
}

pub fn postfix_gateway(args: &GatewayArgs) -> anyhow::Result<ExitCode> {
    let config = load(&args.config)?;
    let files = gateway::render_gateway(&config, &args.config)?;
    match &args.output_dir {
        Some(dir) => {
            write_output(Some(&dir.join("main.cf")), &files.main_cf)?;
            write_output(Some(&dir.join(gateway::TRANSPORT_FILE)), &files.transport)?;
        }
        None => {
            print!("{}", files.main_cf);
            println!("# ==> {} <==", gateway::TRANSPORT_FILE);
            print!("{}", files.transport);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn keepalived(args: &KeepalivedArgs) -> anyhow::Result<ExitCode> {
    let config = load(&args.config)?;
    // keepalived runs the scripts from its own working directory.
    let config_path = std::path::absolute(&args.config)
        .with_context(|| format!("resolving {}", args.config.display()))?;
    let mailherd = match &args.mailherd {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("finding this program's path")?,
    };
    let text = render_keepalived(
        &config,
        &config_path,
        &mailherd,
        args.virtual_router_id
            .unwrap_or_else(|| virtual_router_id(&config.cluster.name)),
    )?;
    write_output(args.output.as_deref(), &text)?;
    Ok(ExitCode::SUCCESS)
}

pub fn render_keepalived(
    config: &Config,
    config_path: &Path,
    mailherd: &Path,
    virtual_router_id: u8,
) -> anyhow::Result<String> {
    let me = config.me();
    if me.role == MemberRole::Witness {
        bail!(
            "{} is a witness: keepalived runs on the mail nodes only",
            me.name
        );
    }
    let Some(floating_ip) = &config.floating_ip else {
        bail!("the config has no [floating_ip]: keepalived has no address to move");
    };
    let mailherd = script_word(mailherd)?;
    let config_word = script_word(config_path)?;
    let check_timeout_s = crate::notify::check_timeout(config).as_secs() + 5;
    let priority = me.priority.clamp(1, 254);
    let peers: Vec<String> = config
        .members
        .iter()
        .filter(|m| m.name != me.name && m.role == MemberRole::Mail)
        .map(|m| m.peer.ip().to_string())
        .collect();
    let instance = format!("mailherd_{}", sanitize(&config.cluster.name));

    let mut out = String::new();
    let w = &mut out;
    writeln!(
        w,
        "# keepalived.conf of {} in cluster {}, made by `mailherd render keepalived --config {}`.",
        me.name,
        config.cluster.name,
        config_path.display()
    )?;
    writeln!(
        w,
        "# keepalived moves the address; mailherd checks the stack and runs the pipelines."
    )?;
    writeln!(w)?;
    writeln!(w, "global_defs {{")?;
    writeln!(w, "    router_id mailherd_{}", sanitize(&me.name))?;
    writeln!(w, "    script_user root")?;
    writeln!(w, "    enable_script_security")?;
    writeln!(w, "}}")?;
    writeln!(w)?;
    writeln!(w, "vrrp_script mailherd_check {{")?;
    writeln!(
        w,
        "    script \"{mailherd} check --config {config_word} --degraded-ok\""
    )?;
    writeln!(w, "    interval 1")?;
    writeln!(w, "    timeout {check_timeout_s}")?;
    writeln!(w, "    fall 2")?;
    writeln!(w, "    rise 1")?;
    writeln!(w, "}}")?;
    writeln!(w)?;
    writeln!(w, "vrrp_instance {instance} {{")?;
    // Every node starts as a backup; the election decides.
    writeln!(w, "    state BACKUP")?;
    writeln!(w, "    interface {}", floating_ip.interface)?;
    writeln!(w, "    virtual_router_id {virtual_router_id}")?;
    writeln!(w, "    priority {priority}")?;
    writeln!(w, "    advert_int 1")?;
    if !config.cluster.preempt {
        writeln!(w, "    nopreempt")?;
    }
    if !peers.is_empty() {
        writeln!(w, "    unicast_src_ip {}", me.peer.ip())?;
        writeln!(w, "    unicast_peer {{")?;
        for peer in &peers {
            writeln!(w, "        {peer}")?;
        }
        writeln!(w, "    }}")?;
    }
    match floating_ip.driver {
        FloatingIpDriver::Local => {
            let (address, prefix) = parse_cidr(&floating_ip.address)
                .map_err(|error| anyhow::anyhow!("floating_ip.address: {error}"))?;
            writeln!(w, "    virtual_ipaddress {{")?;
            writeln!(
                w,
                "        {address}/{prefix} dev {}",
                floating_ip.interface
            )?;
            writeln!(w, "    }}")?;
        }
        // keepalived cannot move a cloud address; `mailherd notify` runs
        // the floating IP driver in the promotion.
        _ => {
            writeln!(
                w,
                "    # the floating IP ({}) is moved by `mailherd notify` through its driver",
                floating_ip.address
            )?;
        }
    }
    writeln!(w, "    track_script {{")?;
    writeln!(w, "        mailherd_check")?;
    writeln!(w, "    }}")?;
    writeln!(w, "    notify \"{mailherd} notify --config {config_word}\"")?;
    writeln!(w, "}}")?;
    Ok(out)
}

/// Letters, digits and `_` only (keepalived and HAProxy names).
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
        .collect()
}
