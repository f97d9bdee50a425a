//! The mail stacks the agents start and stop: files per node.
//!
//! Each mail node gets one control script, `<node>/stack.sh start|stop|
//! status|kill`, that the agent's `command` services driver runs inside the
//! node (its network, mount and PID namespaces, so `/proc` shows only the
//! node's processes). Both stacks listen on 0.0.0.0:25 so that whichever
//! address the master holds, the floating IP included, serves them.
//!
//! - `banner`: the lab's own tiny SMTP-like server ([`crate::banner`]).
//! - `mail`: stock Debian Postfix and Dovecot. Node-init bind-mounts the
//!   node's own `/etc/postfix`, `/etc/dovecot` and `/var/lib/postfix` in the
//!   node's private mount namespace; `stack.sh start` bind-mounts the queue
//!   from the shared volume over `/var/spool/postfix`. The Dovecot mail store
//!   (`vmail/`) lies on the volume too, in the Maildir layout Postfix's
//!   `virtual` agent writes, so a new master serves the old mail and
//!   delivers the old queue.
//!
//! The scripts are shell on purpose: an operator can read them and run them
//! by hand inside a node (`nsenter`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use mailherd_config::{CheckKind, CheckSection, ServicesDriver, ServicesSection};

use crate::state::{LabState, NodeState, Stack};
use crate::topology::{IMAP_PORT, MAIL_DOMAIN, SMTP_PORT, VMAIL_UID};

/// Daemons of the mail stack whose death `fail --mode service` causes: the
/// main processes; their children notice and exit on their own.
pub const POSTFIX_MASTER: &str = "/usr/lib/postfix/sbin/master";
pub const DOVECOT_MASTER: &str = "/usr/sbin/dovecot";

/// How long the agent waits for `stack.sh start` and `stop`.
fn start_timeout_ms(stack: Stack) -> u64 {
    match stack {
        Stack::Banner => 5_000,
        Stack::Mail => 20_000,
    }
}

fn stop_timeout_ms(stack: Stack) -> u64 {
    // The mail stop script itself waits up to 7 s for the daemons to exit.
    match stack {
        Stack::Banner => 5_000,
        Stack::Mail => 12_000,
    }
}

pub fn control_script(node: &NodeState) -> PathBuf {
    node.dir.join("stack.sh")
}

/// The `[services]` section of a mail node's agent config.
pub fn services_section(state: &LabState, node: &NodeState) -> ServicesSection {
    let script = control_script(node).display().to_string();
    let argv = |action: &str| vec!["/bin/sh".to_string(), script.clone(), action.to_string()];
    ServicesSection {
        driver: ServicesDriver::Command,
        start: argv("start"),
        stop: argv("stop"),
        status: argv("status"),
        kill: argv("kill"),
        start_timeout_ms: start_timeout_ms(state.stack),
        stop_timeout_ms: stop_timeout_ms(state.stack),
        env: BTreeMap::new(),
        ..ServicesSection::default()
    }
}

/// The health checks of a mail node: SMTP always, IMAP with the mail stack.
/// Every 100 ms, down after two failures: a dead service is noticed within
/// 100–200 ms (a local connect costs next to nothing).
pub fn checks(stack: Stack) -> Vec<CheckSection> {
    let local = |port| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let check = |name: &str, kind, port| CheckSection {
        address: Some(local(port)),
        interval_ms: 100,
        timeout_ms: 300,
        fall: 2,
        rise: 1,
        critical: true,
        ehlo_name: (kind == CheckKind::Smtp).then(|| "check.lab.test".to_string()),
        ..CheckSection::new(name, kind)
    };
    let mut checks = vec![check("smtp", CheckKind::Smtp, SMTP_PORT)];
    if stack == Stack::Mail {
        checks.push(check("imap", CheckKind::Imap, IMAP_PORT));
    }
    checks
}

/// Bind mounts node-init makes in the node's private mount namespace:
/// (source in the node dir, target on the host path).
pub fn node_mounts(stack: Stack, node_dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    match stack {
        Stack::Banner => Vec::new(),
        Stack::Mail => {
            let mut mounts = vec![
                (node_dir.join("etc-postfix"), PathBuf::from("/etc/postfix")),
                (node_dir.join("etc-dovecot"), PathBuf::from("/etc/dovecot")),
                (
                    node_dir.join("lib-postfix"),
                    PathBuf::from("/var/lib/postfix"),
                ),
            ];
            // Dovecot's base_dir is the node's run/dovecot; where the host has
            // /run/dovecot, it is covered too, so `doveadm` finds the node's.
            if Path::new("/run/dovecot").is_dir() {
                mounts.push((node_dir.join("run/dovecot"), PathBuf::from("/run/dovecot")));
            }
            mounts
        }
    }
}

/// Writes every stack file of a mail node.
pub fn write_node_files(state: &LabState, node: &NodeState) -> Result<()> {
    let script = match state.stack {
        Stack::Banner => banner_script(state, node),
        Stack::Mail => {
            write_postfix_files(state, node)?;
            write_dovecot_files(state, node)?;
            mail_script(state, node)
        }
    };
    let path = control_script(node);
    std::fs::write(&path, script).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Single-quotes `text` for sh.
pub(crate) fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn script_header(state: &LabState, node: &NodeState, what: &str) -> String {
    format!(
        "#!/bin/sh\n\
         # Generated by mailherd-lab at `up`: the {what} of node {name}.\n\
         # Usage: stack.sh start|stop|status|kill (the agent's command services driver runs it).\n\
         set -u\n\
         PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
         NODE={name_q}\n\
         DIR={dir}\n\
         RUN=\"$DIR/run\"\n\
         VOLUME={volume}\n\
         LAB_BIN={lab_bin}\n",
        name = node.name,
        name_q = sh_quote(&node.name),
        dir = sh_quote(&node.dir.display().to_string()),
        volume = sh_quote(&state.volume.mount_point.display().to_string()),
        lab_bin = sh_quote(&state.lab_bin.display().to_string()),
    )
}

/// Shell helpers both stacks share. `stack_pids` is defined per stack.
const SCRIPT_COMMON: &str = r#"
# Waits up to $1 seconds until no process of the stack is left.
wait_gone() {
    tries=$(( $1 * 20 ))
    while [ -n "$(stack_pids)" ]; do
        tries=$(( tries - 1 ))
        [ "$tries" -gt 0 ] || return 1
        sleep 0.05
    done
}

# SIGKILLs every process of the stack and waits for them to be gone.
kill_all() {
    pids=$(stack_pids)
    [ -z "$pids" ] || kill -9 $pids 2>/dev/null
    wait_gone 5
}
"#;

fn banner_script(state: &LabState, node: &NodeState) -> String {
    let mut script = script_header(state, node, "banner stack");
    script.push_str(&format!(
        "LISTEN={}\n",
        sh_quote(&format!("0.0.0.0:{SMTP_PORT}"))
    ));
    script.push_str(
        r#"PIDFILE="$RUN/banner.pid"

# The node has its own /proc, so this sees only the node's banner servers.
stack_pids() {
    for proc in /proc/[0-9]*; do
        case "$(tr '\0' ' ' < "$proc/cmdline" 2>/dev/null)" in
            *" banner --listen "*) echo "${proc#/proc/}" ;;
        esac
    done
}

is_running() {
    [ -r "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE")
    [ -n "$pid" ] || return 1
    case "$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)" in
        *" banner --listen "*) return 0 ;;
        *) return 1 ;;
    esac
}
"#,
    );
    script.push_str(SCRIPT_COMMON);
    script.push_str(
        r#"
case "${1:-}" in
start)
    is_running && exit 0
    kill_all || { echo "leftover banner servers survive SIGKILL: $(stack_pids)" >&2; exit 1; }
    mkdir -p "$RUN"
    # The server binds, forks into the background and writes the pid file
    # before this returns, so the port answers as soon as start succeeds.
    exec "$LAB_BIN" banner --listen "$LISTEN" --name "$NODE" --pidfile "$PIDFILE" --log "$DIR/banner.log" --daemon
    ;;
stop)
    pids=$(stack_pids)
    [ -z "$pids" ] || kill -TERM $pids 2>/dev/null
    wait_gone 3 || { echo "banner server still running after SIGTERM: $(stack_pids)" >&2; exit 1; }
    rm -f "$PIDFILE"
    ;;
status)
    is_running || { echo "the banner server of $NODE is not running" >&2; exit 1; }
    ;;
kill)
    kill_all || { echo "banner server survives SIGKILL: $(stack_pids)" >&2; exit 1; }
    rm -f "$PIDFILE"
    ;;
*)
    echo "usage: $0 start|stop|status|kill" >&2
    exit 2
    ;;
esac
"#,
    );
    script
}

fn mail_script(state: &LabState, node: &NodeState) -> String {
    let mut script = script_header(state, node, "Postfix + Dovecot stack");
    script.push_str(&format!(
        "SPOOL=/var/spool/postfix\nPOSTFIX_MASTER={}\nDOVECOT_MASTER={}\n",
        sh_quote(POSTFIX_MASTER),
        sh_quote(DOVECOT_MASTER)
    ));
    script.push_str(
        r#"
# Every Postfix or Dovecot process of this node (the node has its own /proc).
stack_pids() {
    for proc in /proc/[0-9]*; do
        exe=$(readlink "$proc/exe" 2>/dev/null) || continue
        case "$exe" in
            /usr/lib/postfix/sbin/*|/usr/sbin/dovecot|/usr/lib/dovecot/*) echo "${proc#/proc/}" ;;
        esac
    done
}

# True when pid file $1 names a live process running executable $2.
pidfile_runs() {
    [ -r "$1" ] || return 1
    pid=$(tr -d ' \n' < "$1")
    [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$2" ]
}

# Postfix's pid file is in the queue: only ours while the volume's queue is bound.
postfix_runs() { mountpoint -q "$SPOOL" && pidfile_runs "$SPOOL/pid/master.pid" "$POSTFIX_MASTER"; }
dovecot_runs() { pidfile_runs "$RUN/dovecot/master.pid" "$DOVECOT_MASTER"; }

# Removes the volume's queue from /var/spool/postfix (all stacked binds).
release_spool() {
    while mountpoint -q "$SPOOL"; do
        umount "$SPOOL" 2>/dev/null || umount -l "$SPOOL" || return 1
    done
}

signal_master() {
    if [ -r "$2" ]; then
        pid=$(tr -d ' \n' < "$2")
        [ -z "$pid" ] || kill "-$1" "$pid" 2>/dev/null
    fi
    return 0
}

# Starts a daemon that forks into the background; its own output goes to a
# file, not to the agent's pipe, which the daemon would otherwise keep open.
start_daemon() {
    name=$1
    shift
    if ! "$@" </dev/null >"$RUN/$name-start.out" 2>&1; then
        echo "$name did not start: $(cat "$RUN/$name-start.out")" >&2
        [ ! -r "$DIR/$name.log" ] || tail -n 5 "$DIR/$name.log" >&2
        return 1
    fi
}
"#,
    );
    script.push_str(SCRIPT_COMMON);
    script.push_str(
        r#"
case "${1:-}" in
start)
    if postfix_runs && dovecot_runs; then exit 0; fi
    # Leftovers of a killed stack would hold the ports and the old queue bind.
    kill_all || { echo "leftover mail daemons survive SIGKILL: $(stack_pids)" >&2; exit 1; }
    release_spool || { echo "cannot unmount $SPOOL" >&2; exit 1; }
    if [ ! -d "$VOLUME/postfix-spool" ]; then
        echo "the shared volume is not mounted at $VOLUME (no postfix-spool there)" >&2
        exit 1
    fi
    mount --bind "$VOLUME/postfix-spool" "$SPOOL" || exit 1
    mkdir -p "$RUN/dovecot"
    rm -f "$RUN/dovecot/master.pid"
    start_daemon postfix "$POSTFIX_MASTER" -w || exit 1
    start_daemon dovecot "$DOVECOT_MASTER" || exit 1
    ;;
stop)
    signal_master TERM "$SPOOL/pid/master.pid"
    signal_master TERM "$RUN/dovecot/master.pid"
    if ! wait_gone 5; then
        # Children whose master is already gone get the signal themselves.
        pids=$(stack_pids)
        [ -z "$pids" ] || kill -TERM $pids 2>/dev/null
        wait_gone 2 || { echo "mail daemons still running after SIGTERM: $(stack_pids)" >&2; exit 1; }
    fi
    release_spool || { echo "cannot unmount $SPOOL" >&2; exit 1; }
    rm -f "$RUN/dovecot/master.pid"
    ;;
status)
    postfix_runs || { echo "postfix is not running on $NODE" >&2; exit 1; }
    dovecot_runs || { echo "dovecot is not running on $NODE" >&2; exit 1; }
    ;;
kill)
    kill_all || { echo "mail daemons survive SIGKILL: $(stack_pids)" >&2; exit 1; }
    release_spool || { echo "cannot unmount $SPOOL" >&2; exit 1; }
    rm -f "$RUN/dovecot/master.pid"
    ;;
*)
    echo "usage: $0 start|stop|status|kill" >&2
    exit 2
    ;;
esac
"#,
    );
    script
}

/// Where Postfix's `virtual` agent and Dovecot keep mail, on the volume.
fn vmail_dir(state: &LabState) -> PathBuf {
    state.volume.mount_point.join("vmail")
}

fn write_postfix_files(state: &LabState, node: &NodeState) -> Result<()> {
    let config_dir = node.dir.join("etc-postfix");
    std::fs::create_dir_all(&config_dir)?;
    // Start from the package's /etc/postfix (postfix-files, dynamicmaps.cf,
    // post-install, ...) that Postfix's own tools expect next to main.cf.
    crate::host::run(
        "cp",
        &[
            "-a",
            "/etc/postfix/.",
            config_dir.to_str().context("node dir is not UTF-8")?,
        ],
    )
    .context("cannot copy /etc/postfix into the node's Postfix config")?;
    let debian_main = std::fs::read_to_string("/usr/share/postfix/main.cf.debian")
        .context("cannot read /usr/share/postfix/main.cf.debian (Debian package postfix)")?;
    std::fs::write(
        config_dir.join("main.cf"),
        postfix_main_cf(&debian_main, state, node),
    )?;
    let master_dist = std::fs::read_to_string("/usr/share/postfix/master.cf.dist")
        .context("cannot read /usr/share/postfix/master.cf.dist (Debian package postfix)")?;
    std::fs::write(
        config_dir.join("master.cf"),
        master_cf_without_chroot(&master_dist),
    )?;
    let data_dir = node.dir.join("lib-postfix");
    std::fs::create_dir_all(&data_dir)?;
    let postfix = nix::unistd::User::from_name("postfix")
        .context("cannot look up user postfix")?
        .context("there is no user postfix (is the Debian package postfix installed?)")?;
    nix::unistd::chown(&data_dir, Some(postfix.uid), Some(postfix.gid))
        .with_context(|| format!("cannot chown {}", data_dir.display()))?;
    Ok(())
}

/// `domain/user/` for `user@domain`: Postfix `virtual` reads a trailing
/// slash as "Maildir", and Dovecot finds the same directory as the user's home.
fn maildir_of(address: &str) -> String {
    let (user, domain) = address.split_once('@').expect("mail addresses have an @");
    format!("{domain}/{user}/")
}

fn postfix_main_cf(debian_main: &str, state: &LabState, node: &NodeState) -> String {
    format!(
        "{debian_main}\n\
         # --- mailherd-lab: node {name} ---\n\
         myhostname = {name}.{MAIL_DOMAIN}\n\
         mydestination =\n\
         inet_interfaces = all\n\
         inet_protocols = ipv4\n\
         mynetworks = 10.77.0.0/24 127.0.0.0/8\n\
         # The lab namespaces have no DNS: do not look up client names.\n\
         smtpd_peername_lookup = no\n\
         alias_maps =\n\
         alias_database =\n\
         virtual_mailbox_domains = {MAIL_DOMAIN}\n\
         virtual_mailbox_maps = hash:{vmailbox}\n\
         virtual_mailbox_base = {vmail}\n\
         virtual_uid_maps = static:{VMAIL_UID}\n\
         virtual_gid_maps = static:{VMAIL_UID}\n\
         # Deferred mail is retried within seconds, not Postfix's default minutes,\n\
         # so a lab run sees the outcome.\n\
         queue_run_delay = 10s\n\
         minimal_backoff_time = 10s\n\
         maximal_backoff_time = 60s\n\
         # postlogd (in master.cf) writes this; it starts with the master.\n\
         maillog_file = {log}\n",
        name = node.name,
        vmail = vmail_dir(state).display(),
        vmailbox = postfix_map_file(state).display(),
        log = node.dir.join("postfix.log").display(),
    )
}

/// master.cf with every service's chroot column set to `n`: the node's
/// Postfix runs without the chroot jail, whose copies of /etc files would
/// not follow the node's private mounts.
pub fn master_cf_without_chroot(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let is_service =
            !line.starts_with('#') && !line.starts_with(char::is_whitespace) && !line.is_empty();
        let fields: Vec<&str> = line.split_whitespace().collect();
        if is_service && fields.len() >= 8 {
            let mut fields = fields;
            fields[4] = "n";
            out.push_str(&fields.join(" "));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

fn write_dovecot_files(state: &LabState, node: &NodeState) -> Result<()> {
    let config_dir = node.dir.join("etc-dovecot");
    std::fs::create_dir_all(&config_dir)?;
    std::fs::create_dir_all(node.dir.join("dovecot-state"))?;
    std::fs::write(
        config_dir.join("dovecot.conf"),
        dovecot_conf(node, &users_file(state)),
    )?;
    Ok(())
}

/// Where the accounts live: on the shared volume, so that every master
/// serves the same ones and an account made on one master (the signup
/// service's `dovecot` backend) survives a failover.
pub fn accounts_dir(state: &LabState) -> PathBuf {
    state.volume.mount_point.join("mail-accounts")
}

/// Dovecot's passwd-file (passdb and userdb).
pub fn users_file(state: &LabState) -> PathBuf {
    accounts_dir(state).join("users")
}

/// Postfix's virtual mailbox map (`hash:`; `postmap` builds `vmailbox.db`).
pub fn postfix_map_file(state: &LabState) -> PathBuf {
    accounts_dir(state).join("vmailbox")
}

/// The Maildir (home) of `address` on the volume.
pub fn home_of(state: &LabState, address: &str) -> PathBuf {
    vmail_dir(state).join(maildir_of(address))
}

fn dovecot_conf(node: &NodeState, users: &Path) -> String {
    format!(
        r#"# Generated by mailherd-lab: Dovecot of node {name}.
protocols = imap
listen = *
# Per node: sockets and pid file on the node's tmpfs, state next to them.
base_dir = {run}/dovecot
state_dir = {dir}/dovecot-state
instance_name = dovecot-{name}
log_path = {dir}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = {VMAIL_UID}
last_valid_uid = {VMAIL_UID}
first_valid_gid = {VMAIL_UID}
# The user's home is its Maildir on the shared volume, as Postfix writes it.
mail_location = maildir:~
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu {users}
}}
userdb {{
  driver = passwd-file
  args = username_format=%Lu {users}
}}
service imap-login {{
  inet_listener imap {{
    port = {IMAP_PORT}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"#,
        name = node.name,
        run = node.run_dir().display(),
        dir = node.dir.display(),
        users = users.display(),
    )
}

/// The script `up` runs once, in a private mount namespace, to prepare the
/// freshly made file system.
pub fn volume_preparation_script(state: &LabState) -> Result<String> {
    let device = state.loop_device()?;
    let mut script = format!(
        "#!/bin/sh\n\
         # Generated by mailherd-lab: prepares the shared volume once at `up`.\n\
         # Runs in a private mount namespace, so its mounts vanish with it.\n\
         set -eu\n\
         PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
         DEVICE={device}\n\
         MNT={mnt}\n\
         mount -t ext4 \"$DEVICE\" \"$MNT\"\n",
        device = sh_quote(&device.display().to_string()),
        mnt = sh_quote(&state.volume.mount_point.display().to_string()),
    );
    script.push_str(&volume_content_script(state)?);
    script.push_str("umount \"$MNT\"\n");
    Ok(script)
}

/// The shell lines that fill a fresh volume mounted on `$MNT` (the mail
/// store, the Postfix queue, the accounts): the same for the shared volume
/// and for the seed snapshot of `--storage btrfs`.
pub fn volume_content_script(state: &LabState) -> Result<String> {
    let mut script = String::new();
    if state.stack == Stack::Mail {
        let first = state
            .nodes
            .iter()
            .find(|node| node.is_mail())
            .context("a lab has mail nodes")?;
        let account = state.mail.as_ref().context("a mail lab has a mailbox")?;
        let maildir = format!("vmail/{}", maildir_of(&account.user));
        script.push_str(&format!(
            "# The mail store: owned by the virtual mail user.\n\
             for sub in cur new tmp; do mkdir -p \"$MNT/{maildir}$sub\"; done\n\
             chown -R {VMAIL_UID}:{VMAIL_UID} \"$MNT/vmail\"\n\
             chmod -R u=rwX,go= \"$MNT/vmail\"\n\
             # The Postfix queue: `postfix check` creates its directories with\n\
             # the owners and modes Postfix wants, once, so starting a master\n\
             # on failover is fast.\n\
             mkdir -p \"$MNT/postfix-spool\"\n\
             mount --bind {config} /etc/postfix\n\
             mount --bind {data} /var/lib/postfix\n\
             mount --bind \"$MNT/postfix-spool\" /var/spool/postfix\n\
             # The accounts: Dovecot's passwd-file and Postfix's mailbox map,\n\
             # on the volume (the signup service adds to both on the master).\n\
             mkdir -p {accounts}\n\
             printf '%s\\n' {users_line} > {users}\n\
             chmod 0644 {users}\n\
             printf '%s\\n' {map_line} > {map}\n\
             postmap hash:{map}\n\
             postfix check\n\
             umount /var/spool/postfix /var/lib/postfix /etc/postfix\n",
            config = sh_quote(&first.dir.join("etc-postfix").display().to_string()),
            data = sh_quote(&first.dir.join("lib-postfix").display().to_string()),
            accounts = sh_quote(&accounts_dir(state).display().to_string()),
            users = sh_quote(&users_file(state).display().to_string()),
            map = sh_quote(&postfix_map_file(state).display().to_string()),
            users_line = sh_quote(&format!(
                "{user}:{{PLAIN}}{password}:{VMAIL_UID}:{VMAIL_UID}::{home}::",
                user = account.user,
                password = account.password,
                home = home_of(state, &account.user)
                    .display()
                    .to_string()
                    .trim_end_matches('/'),
            )),
            map_line = sh_quote(&format!("{} {}", account.user, maildir_of(&account.user))),
        ));
    }
    Ok(script)
}

/// True when a process of a node (given its executable and argv) is a main
/// process of `stack`: what `fail --mode service` kills.
pub fn is_main_process(stack: Stack, exe: &Path, argv: &[String]) -> bool {
    match stack {
        Stack::Mail => exe == Path::new(POSTFIX_MASTER) || exe == Path::new(DOVECOT_MASTER),
        Stack::Banner => argv.get(1).map(String::as_str) == Some("banner"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_cf_services_lose_their_chroot_and_keep_everything_else() {
        let text = "# comment y\n\
                    smtp      inet  n       -       y       -       -       smtpd\n\
                    relay     unix  -       -       y       -       -       smtp\n\
                    \x20       -o syslog_name=postfix/$service_name\n\
                    postlog   unix-dgram n  -       n       -       1       postlogd\n";
        let out = master_cf_without_chroot(text);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "# comment y");
        assert_eq!(lines[1], "smtp inet n - n - - smtpd");
        assert_eq!(lines[2], "relay unix - - n - - smtp");
        assert_eq!(lines[3], "        -o syslog_name=postfix/$service_name");
        assert_eq!(lines[4], "postlog unix-dgram n - n - 1 postlogd");
    }

    #[test]
    fn the_maildir_postfix_writes_is_the_home_dovecot_reads() {
        assert_eq!(maildir_of("alice@lab.test"), "lab.test/alice/");
    }

    #[test]
    fn sh_quote_survives_single_quotes() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn service_failure_targets_the_main_processes_only() {
        let argv = |words: &[&str]| {
            words
                .iter()
                .map(|word| word.to_string())
                .collect::<Vec<_>>()
        };
        assert!(is_main_process(
            Stack::Mail,
            Path::new(POSTFIX_MASTER),
            &argv(&["master", "-w"])
        ));
        assert!(is_main_process(
            Stack::Mail,
            Path::new(DOVECOT_MASTER),
            &argv(&["dovecot"])
        ));
        assert!(!is_main_process(
            Stack::Mail,
            Path::new("/usr/lib/postfix/sbin/smtpd"),
            &argv(&["smtpd"])
        ));
        assert!(!is_main_process(
            Stack::Mail,
            Path::new("/x/mailherd"),
            &argv(&["mailherd", "agent"])
        ));
        assert!(is_main_process(
            Stack::Banner,
            Path::new("/x/mailherd-lab"),
            &argv(&["/x/mailherd-lab", "banner"])
        ));
        assert!(!is_main_process(
            Stack::Banner,
            Path::new("/x/mailherd-lab"),
            &argv(&["/x/mailherd-lab", "node-init"])
        ));
    }
}
