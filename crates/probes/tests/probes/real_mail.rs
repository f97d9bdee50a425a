//! SMTP, IMAP and POP3 against real servers: a stock Debian Postfix and
//! Dovecot of the test's own. The probes pass (banner, EHLO, STARTTLS
//! verified against the test CA, the SMTP test message delivered into a
//! Maildir, IMAP and POP3 logins) and fail where they must (a foreign CA, a
//! wrong server name, an unknown recipient, a wrong password, a stopped
//! server).
//!
//! Each test starts the daemons it needs and stops them on drop, also when
//! an assertion fails. Everything a daemon writes lies under the test's temp
//! dir (`postfix -c` and `dovecot -c` with every path set there), and the
//! daemons run in a private mount namespace in which the host's Postfix and
//! Dovecot directories are read-only: a path the configuration missed fails
//! the start rather than touching the host. They listen on 127.0.0.1 only,
//! and Postfix sends nothing but to its one virtual mailbox (every other
//! transport is `error:`), so no traffic leaves the machine.
//!
//! The daemons are not optional: without them (scripts/install-deps.sh
//! installs postfix, dovecot-imapd and dovecot-pop3d) or without root, the
//! tests fail and say so.

use super::*;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use mailherd_config::Secret;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::net::TcpStream;

/// How long one probe of a real server may take: generous for a loaded
/// 2-core machine, and Dovecot alone holds the answer to a wrong password
/// back for 2 s (its `auth_failure_delay`).
const REAL_SERVER_TIMEOUT_MS: u64 = 10_000;
/// How long a daemon may take to greet after its start, and a test message
/// to reach the Maildir.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a daemon asked to stop may take before it is killed.
const STOP_WITHIN: Duration = Duration::from_secs(10);

const MAIL_DOMAIN: &str = "lab.test";
const MAILBOX: &str = "probe@lab.test";
/// With a quote and a backslash, which the IMAP LOGIN must escape.
const PASSWORD: &str = r#"s3cr"t\pw"#;
/// Owner of the mail store, as in the lab: Postfix's `virtual` agent and
/// Dovecot's mail processes run as it. No account of that id is needed.
const VMAIL_UID: u32 = 5000;
/// The greeting both Dovecot services send once they can log users in.
const DOVECOT_GREETING: &str = "mailherd test Dovecot ready.";

const POSTFIX_COMMAND: &str = "/usr/sbin/postfix";
const POSTFIX_MASTER: &str = "/usr/lib/postfix/sbin/master";
const DOVECOT_MASTER: &str = "/usr/sbin/dovecot";

/// Panics, naming the fix, unless every path exists and the test runs as
/// root: a real-server test that cannot run must not pass.
fn require(what: &str, paths: &[&str]) {
    for path in paths {
        assert!(
            Path::new(path).exists(),
            "{what}: {path} is missing: run scripts/install-deps.sh as root \
             (it installs postfix, dovecot-imapd and dovecot-pop3d)"
        );
    }
    assert!(
        Path::new("/usr/bin/unshare").exists(),
        "{what}: /usr/bin/unshare is missing: run scripts/install-deps.sh as root \
         (it installs util-linux)"
    );
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "{what} needs root: it starts mail daemons in a private mount namespace"
    );
}

/// A free port on 127.0.0.1 for a daemon that binds it a moment later.
/// Below Linux's ephemeral range (32768 and up), so that an outgoing
/// connection cannot take it meanwhile; walks 14000..20000 from a start
/// that differs per process, never handing out the same port twice.
fn daemon_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id() % 60 * 100;
    for _ in 0..6_000 {
        let step = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 14_000 + ((offset + step) % 6_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 14000..20000");
}

/// A temp dir the daemons' unprivileged processes can walk through (to
/// the Maildir, the log), whatever the umask.
fn daemon_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("mailherd-real-mail-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A Maildir (`cur`, `new`, `tmp`) at `relative` under the mail store
/// `store`, every directory from the store down owned by the store's owner
/// (who creates files next to the Maildir too, e.g. Dovecot's indexes).
fn make_maildir(store: &Path, relative: &Path) {
    let maildir = store.join(relative);
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let mut owned = vec![store.to_path_buf()];
    for component in relative.components() {
        let next = owned.last().unwrap().join(component);
        owned.push(next);
    }
    owned.extend(["cur", "new", "tmp"].map(|sub| maildir.join(sub)));
    let owner = nix::unistd::Uid::from_raw(VMAIL_UID);
    let group = nix::unistd::Gid::from_raw(VMAIL_UID);
    for path in owned {
        nix::unistd::chown(&path, Some(owner), Some(group)).unwrap();
    }
}

/// A CA that signed nothing the servers show, PEM, in `dir`. Its own name:
/// a CA named like the test CA would fail on the signature instead.
fn write_foreign_ca(dir: &Path) -> PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "mailherd foreign test CA");
    let ca = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
    let path = dir.join("foreign-ca.pem");
    std::fs::write(&path, ca.pem()).unwrap();
    path
}

/// Makes the host's Postfix and Dovecot directories read-only in the new
/// mount namespace, then runs the command.
const WITH_HOST_DIRS_READ_ONLY: &str = r#"set -eu
for dir in /etc/postfix /etc/dovecot /var/spool/postfix /var/lib/postfix /var/lib/dovecot /run/dovecot; do
    [ -d "$dir" ] || continue
    mount --bind "$dir" "$dir"
    mount -o remount,bind,ro "$dir"
done
exec "$@"
"#;

/// Runs `argv` in a new private mount namespace (see
/// [`WITH_HOST_DIRS_READ_ONLY`]); a daemon it starts in the background
/// keeps the namespace alive. The output goes to the file `output`, not to
/// a pipe, which such a daemon would hold open.
fn run_in_private_mount_namespace(argv: &[&str], output: &Path) -> Result<(), String> {
    let file = std::fs::File::create(output).map_err(|error| error.to_string())?;
    let status = Command::new("/usr/bin/unshare")
        .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
        .arg(WITH_HOST_DIRS_READ_ONLY)
        .arg("sh")
        .args(argv)
        .stdin(Stdio::null())
        .stdout(file.try_clone().map_err(|error| error.to_string())?)
        .stderr(file)
        .status()
        .map_err(|error| format!("unshare: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` exited with {status}: {}",
            argv.join(" "),
            std::fs::read_to_string(output).unwrap_or_default()
        ))
    }
}

/// The pid a daemon wrote into `pid_file`, if it did.
fn read_pid(pid_file: &Path) -> Option<Pid> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    text.trim().parse().ok().map(Pid::from_raw)
}

/// Whether `pid` runs. A zombie does not: where no init reaps the
/// daemon's exit (a container), its pid lingers as one.
fn is_running(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) STATE ...`; comm may hold spaces and parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Waits for the daemon `pid`, already asked to stop, to exit; after
/// [`STOP_WITHIN`] it is killed with its children (its process group: the
/// daemons start their own session).
fn wait_for_exit_or_kill(pid: Pid) {
    let started = Instant::now();
    while is_running(pid) {
        if started.elapsed() > STOP_WITHIN {
            eprintln!("daemon {pid} still runs {STOP_WITHIN:?} after the stop: killing it");
            if nix::unistd::getpgid(Some(pid)) == Ok(pid) {
                let _ = killpg(pid, Signal::SIGKILL);
            } else {
                let _ = kill(pid, Signal::SIGKILL);
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until a fresh connection to `address` is greeted with a line
/// starting with `greeting`; panics with `log()` after [`READY_WITHIN`].
async fn wait_for_greeting(address: SocketAddr, greeting: &str, log: impl Fn() -> String) {
    let started = Instant::now();
    loop {
        let last = match first_line(address).await {
            Ok(line) if line.starts_with(greeting) => return,
            Ok(line) => format!("greeted with {line:?}"),
            Err(error) => error,
        };
        assert!(
            started.elapsed() < READY_WITHIN,
            "{address} did not greet with {greeting:?} within {READY_WITHIN:?}; last: {last}\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn first_line(address: SocketAddr) -> Result<String, String> {
    let bound = Duration::from_secs(5);
    let stream = tokio::time::timeout(bound, TcpStream::connect(address))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|error| format!("connect: {error}"))?;
    let mut line = String::new();
    tokio::time::timeout(bound, BufReader::new(stream).read_line(&mut line))
        .await
        .map_err(|_| "no greeting within 5 s".to_string())?
        .map_err(|error| format!("reading the greeting: {error}"))?;
    Ok(line.trim_end().to_string())
}

/// The last lines of a daemon's log, for a failure message.
fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            format!("--- last lines of {} ---\n{tail}", path.display())
        }
        Err(error) => format!("(no log at {}: {error})", path.display()),
    }
}

/// A stock Postfix of the test's own, stopped on drop: configuration,
/// queue, data and the Maildir of [`MAILBOX`] under a temp dir, SMTP with
/// STARTTLS (the test certificate) on 127.0.0.1.
struct Postfix {
    port: u16,
    dir: tempfile::TempDir,
}

impl Postfix {
    async fn start() -> Postfix {
        require(
            "the real Postfix of the smtp probe tests",
            &[POSTFIX_COMMAND, POSTFIX_MASTER],
        );
        let postfix = Postfix {
            port: daemon_port(),
            dir: daemon_dir(),
        };
        postfix.write_files();
        let config = postfix.path("config");
        let config = config.to_str().unwrap();
        if let Err(error) = run_in_private_mount_namespace(
            &[POSTFIX_COMMAND, "-c", config, "start"],
            &postfix.path("start.out"),
        ) {
            panic!("Postfix did not start: {error}\n{}", postfix.log());
        }
        wait_for_greeting(postfix.address(), "220 ", || postfix.log()).await;
        postfix
    }

    fn write_files(&self) {
        let dir = self.dir.path();
        let config = self.path("config");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::create_dir_all(self.path("queue")).unwrap();
        // Postfix's master locks a file here as user postfix.
        let data = self.path("data");
        std::fs::create_dir_all(&data).unwrap();
        let postfix_user = nix::unistd::User::from_name("postfix")
            .unwrap()
            .expect("the Debian package postfix makes a user postfix");
        nix::unistd::chown(&data, Some(postfix_user.uid), Some(postfix_user.gid)).unwrap();
        make_maildir(&self.path("vmail"), &Path::new(MAIL_DOMAIN).join("probe"));

        let tls = test_tls();
        let outbound_disabled = "error:mail beyond the test mailbox is disabled in this test";
        std::fs::write(
            config.join("main.cf"),
            format!(
                "# A Postfix of mailherd's probe tests (crates/probes/tests/probes/real_mail.rs).\n\
                 compatibility_level = 3.6\n\
                 myhostname = mail.{MAIL_DOMAIN}\n\
                 mydestination =\n\
                 inet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\n\
                 mynetworks = 127.0.0.0/8\n\
                 # Every file Postfix writes lies under the test's temp dir.\n\
                 queue_directory = {dir}/queue\n\
                 data_directory = {dir}/data\n\
                 maillog_file = {dir}/postfix.log\n\
                 maillog_file_prefixes = {dir}\n\
                 # No DNS, and no mail but to the one virtual mailbox.\n\
                 smtpd_peername_lookup = no\n\
                 alias_maps =\n\
                 alias_database =\n\
                 default_transport = {outbound_disabled}\n\
                 relay_transport = {outbound_disabled}\n\
                 virtual_mailbox_domains = {MAIL_DOMAIN}\n\
                 virtual_mailbox_maps = texthash:{dir}/config/vmailbox\n\
                 virtual_mailbox_base = {dir}/vmail\n\
                 virtual_uid_maps = static:{VMAIL_UID}\n\
                 virtual_gid_maps = static:{VMAIL_UID}\n\
                 smtpd_tls_security_level = may\n\
                 smtpd_tls_cert_file = {cert}\n\
                 smtpd_tls_key_file = {key}\n",
                dir = dir.display(),
                cert = tls.cert_file.display(),
                key = tls.key_file.display(),
            ),
        )
        .unwrap();
        // The services this Postfix needs, none chrooted (a chroot jail
        // would want copies of /etc files in the queue).
        std::fs::write(
            config.join("master.cf"),
            format!(
                "127.0.0.1:{port} inet n - n - - smtpd\n\
                 cleanup unix n - n - 0 cleanup\n\
                 qmgr unix n - n 300 1 qmgr\n\
                 tlsmgr unix - - n 1000? 1 tlsmgr\n\
                 rewrite unix - - n - - trivial-rewrite\n\
                 bounce unix - - n - 0 bounce\n\
                 defer unix - - n - 0 bounce\n\
                 trace unix - - n - 0 bounce\n\
                 verify unix - - n - 1 verify\n\
                 flush unix n - n 1000? 0 flush\n\
                 proxymap unix - - n - - proxymap\n\
                 showq unix n - n - - showq\n\
                 error unix - - n - - error\n\
                 retry unix - - n - - error\n\
                 discard unix - - n - - discard\n\
                 virtual unix - n n - - virtual\n\
                 anvil unix - - n - 1 anvil\n\
                 scache unix - - n - 1 scache\n\
                 postlog unix-dgram n - n - 1 postlogd\n",
                port = self.port,
            ),
        )
        .unwrap();
        std::fs::write(
            config.join("vmailbox"),
            format!("{MAILBOX} {MAIL_DOMAIN}/probe/\n"),
        )
        .unwrap();
    }

    fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Where the `virtual` agent delivers mail for [`MAILBOX`].
    fn maildir(&self) -> PathBuf {
        self.path("vmail").join(MAIL_DOMAIN).join("probe")
    }

    fn log(&self) -> String {
        log_tail(&self.path("postfix.log"))
    }

    /// The message in the Maildir's `new/` that holds `text`; panics
    /// after [`READY_WITHIN`].
    async fn wait_for_delivery(&self, text: &str) -> String {
        let new = self.maildir().join("new");
        let started = Instant::now();
        loop {
            for entry in std::fs::read_dir(&new).unwrap() {
                let message = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
                if message.contains(text) {
                    return message;
                }
            }
            assert!(
                started.elapsed() < READY_WITHIN,
                "no message with {text:?} in {} within {READY_WITHIN:?}\n{}",
                new.display(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        // `postfix stop` asks the master to stop its children and then
        // itself; the pid is read first, as the master may remove its file.
        let master = read_pid(&self.path("queue/pid/master.pid"));
        // No unwrap in a drop, which may run while a panic unwinds.
        let config = self.path("config").to_string_lossy().into_owned();
        let _ = run_in_private_mount_namespace(
            &[POSTFIX_COMMAND, "-c", &config, "stop"],
            &self.path("stop.out"),
        );
        if let Some(master) = master {
            wait_for_exit_or_kill(master);
        }
    }
}

/// A stock Dovecot of the test's own, stopped on drop: IMAP and POP3 with
/// STARTTLS (the test certificate) on 127.0.0.1, one passwd-file user
/// ([`MAILBOX`], [`PASSWORD`]) whose Maildir lies under a temp dir.
struct Dovecot {
    imap_port: u16,
    pop3_port: u16,
    dir: tempfile::TempDir,
}

impl Dovecot {
    async fn start() -> Dovecot {
        require(
            "the real Dovecot of the imap and pop3 probe tests",
            &[
                DOVECOT_MASTER,
                "/usr/lib/dovecot/imap-login",
                "/usr/lib/dovecot/pop3-login",
            ],
        );
        let dovecot = Dovecot {
            imap_port: daemon_port(),
            pop3_port: daemon_port(),
            dir: daemon_dir(),
        };
        dovecot.write_files();
        let config = dovecot.path("dovecot.conf");
        if let Err(error) = run_in_private_mount_namespace(
            &[DOVECOT_MASTER, "-c", config.to_str().unwrap()],
            &dovecot.path("start.out"),
        ) {
            panic!("Dovecot did not start: {error}\n{}", dovecot.log());
        }
        // The ports accept before Dovecot's auth process is up; the
        // greetings wait for it, so a greeting is readiness.
        let log = || dovecot.log();
        wait_for_greeting(dovecot.imap_address(), "* OK [CAPABILITY ", log).await;
        wait_for_greeting(
            dovecot.pop3_address(),
            &format!("+OK {DOVECOT_GREETING}"),
            log,
        )
        .await;
        dovecot
    }

    fn write_files(&self) {
        let dir = self.dir.path();
        let home = Path::new(MAIL_DOMAIN).join("probe");
        make_maildir(&self.path("vmail"), &home.join("Maildir"));
        let home = self.path("vmail").join(home);
        std::fs::write(
            self.path("users"),
            format!(
                "{MAILBOX}:{{PLAIN}}{PASSWORD}:{VMAIL_UID}:{VMAIL_UID}::{home}::\n",
                home = home.display()
            ),
        )
        .unwrap();
        let tls = test_tls();
        std::fs::write(
            self.path("dovecot.conf"),
            format!(
                r#"# A Dovecot of mailherd's probe tests (crates/probes/tests/probes/real_mail.rs).
protocols = imap pop3
listen = 127.0.0.1
# Every file Dovecot writes lies under the test's temp dir.
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = mailherd-test-{imap_port}
log_path = {dir}/dovecot.log
login_greeting = {DOVECOT_GREETING}
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
auth_mechanisms = plain login
first_valid_uid = {VMAIL_UID}
last_valid_uid = {VMAIL_UID}
first_valid_gid = {VMAIL_UID}
last_valid_gid = {VMAIL_UID}
mail_location = maildir:~/Maildir
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%Lu {dir}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%Lu {dir}/users
}}
service imap-login {{
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"#,
                dir = dir.display(),
                imap_port = self.imap_port,
                pop3_port = self.pop3_port,
                cert = tls.cert_file.display(),
                key = tls.key_file.display(),
            ),
        )
        .unwrap();
    }

    fn imap_address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.imap_port))
    }

    fn pop3_address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.pop3_port))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        log_tail(&self.path("dovecot.log"))
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SIGTERM is Dovecot's own way to stop (`doveadm stop` sends it).
        if let Some(master) = read_pid(&self.path("run/master.pid")) {
            let _ = kill(master, Signal::SIGTERM);
            wait_for_exit_or_kill(master);
        }
    }
}

/// A check of `kind` against a real server, with a timeout fit for a
/// loaded machine.
fn real_check(kind: CheckKind, address: SocketAddr) -> CheckSection {
    CheckSection {
        name: format!("real-{}", kind.as_str()),
        ..check(kind, address, REAL_SERVER_TIMEOUT_MS)
    }
}

/// STARTTLS verified against the test CA, as an operator with a private
/// CA configures it.
fn with_starttls(check: CheckSection) -> CheckSection {
    CheckSection {
        starttls: Some(true),
        tls_ca_file: Some(test_tls().ca_file.clone()),
        ..check
    }
}

fn with_login(check: CheckSection, password: &str) -> CheckSection {
    CheckSection {
        user: Some(MAILBOX.to_string()),
        password: Some(Secret::new(password)),
        ..check
    }
}

#[tokio::test]
async fn smtp_against_a_real_postfix_passes_starttls_and_delivers_the_test_message() {
    let postfix = Postfix::start().await;

    let result = probe(&real_check(CheckKind::Smtp, postfix.address())).await;
    assert!(result.ok, "{result:?}\n{}", postfix.log());
    assert_eq!(result.detail, "220 mail.lab.test ESMTP Postfix");

    let starttls = with_starttls(real_check(CheckKind::Smtp, postfix.address()));
    let result = probe(&starttls).await;
    assert!(result.ok, "{result:?}\n{}", postfix.log());
    // The certificate's DNS name verifies as well as its IP address.
    let by_name = CheckSection {
        server_name: Some("mail.lab.test".to_string()),
        ..with_starttls(real_check(CheckKind::Smtp, postfix.address()))
    };
    let result = probe(&by_name).await;
    assert!(result.ok, "{result:?}\n{}", postfix.log());

    // The whole transaction over TLS; the check's name marks the message.
    let transaction = CheckSection {
        name: format!("real-smtp-transaction-{}", postfix.port),
        test_rcpt: Some(MAILBOX.to_string()),
        ..with_starttls(real_check(CheckKind::Smtp, postfix.address()))
    };
    let result = probe(&transaction).await;
    assert!(result.ok, "{result:?}\n{}", postfix.log());
    eprintln!("smtp probe against Postfix: {}", result.detail);
    let queue_id = result
        .detail
        .strip_prefix("220 mail.lab.test ESMTP Postfix | test message: 250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("unexpected detail {:?}", result.detail));
    let message = postfix
        .wait_for_delivery(&format!("X-Mailherd-Probe: {}", transaction.name))
        .await;
    assert!(
        message.contains(&format!("Delivered-To: {MAILBOX}")),
        "{message}"
    );
    // Postfix's own Received line: this queue id, and ESMTPS (TLS).
    assert!(
        message.contains(&format!("with ESMTPS id {queue_id}")),
        "{message}"
    );
    assert!(
        message.contains(&format!("Subject: mailherd probe {}", transaction.name)),
        "{message}"
    );
}

#[tokio::test]
async fn smtp_against_a_real_postfix_fails_on_a_foreign_ca_a_wrong_name_an_unknown_recipient_and_when_stopped(
) {
    let postfix = Postfix::start().await;

    let foreign_ca = CheckSection {
        tls_ca_file: Some(write_foreign_ca(postfix.dir.path())),
        ..with_starttls(real_check(CheckKind::Smtp, postfix.address()))
    };
    let result = probe(&foreign_ca).await;
    assert_failed(
        &result,
        "TLS handshake: invalid peer certificate: UnknownIssuer",
    );

    let wrong_name = CheckSection {
        server_name: Some("other.lab.test".to_string()),
        ..with_starttls(real_check(CheckKind::Smtp, postfix.address()))
    };
    let result = probe(&wrong_name).await;
    assert_failed(&result, "not valid for name \"other.lab.test\"");

    let unknown_recipient = CheckSection {
        test_rcpt: Some(format!("nobody@{MAIL_DOMAIN}")),
        test_from: Some(MAILBOX.to_string()),
        ..real_check(CheckKind::Smtp, postfix.address())
    };
    let result = probe(&unknown_recipient).await;
    assert_failed(
        &result,
        "RCPT TO refused: 550 5.1.1 <nobody@lab.test>: Recipient address rejected: \
         User unknown in virtual mailbox table",
    );

    // Dropping stops Postfix: its port refuses from then on.
    let address = postfix.address();
    drop(postfix);
    let result = probe(&real_check(CheckKind::Smtp, address)).await;
    assert_failed(&result, "connect refused");
}

#[tokio::test]
async fn imap_against_a_real_dovecot_passes_capability_starttls_and_login() {
    let dovecot = Dovecot::start().await;

    let result = probe(&real_check(CheckKind::Imap, dovecot.imap_address())).await;
    assert!(result.ok, "{result:?}\n{}", dovecot.log());
    assert!(
        result.detail.starts_with("* OK [CAPABILITY IMAP4rev1 ")
            && result.detail.ends_with(DOVECOT_GREETING),
        "{result:?}"
    );

    let login = with_login(
        with_starttls(real_check(CheckKind::Imap, dovecot.imap_address())),
        PASSWORD,
    );
    let result = probe(&login).await;
    assert!(result.ok, "{result:?}\n{}", dovecot.log());
    eprintln!("imap probe against Dovecot: {}", result.detail);
    assert!(
        result
            .detail
            .ends_with(&format!("{DOVECOT_GREETING} | logged in as {MAILBOX}")),
        "{result:?}"
    );
    assert!(!result.detail.contains(PASSWORD), "{result:?}");
}

#[tokio::test]
async fn imap_against_a_real_dovecot_fails_on_a_wrong_password_a_foreign_ca_and_when_stopped() {
    let dovecot = Dovecot::start().await;

    let wrong_password = with_login(
        with_starttls(real_check(CheckKind::Imap, dovecot.imap_address())),
        "wrong-pw",
    );
    let result = probe(&wrong_password).await;
    assert_failed(
        &result,
        "LOGIN refused: a4 NO [AUTHENTICATIONFAILED] Authentication failed.",
    );
    assert!(!result.detail.contains("wrong-pw"), "{result:?}");

    let foreign_ca = CheckSection {
        tls_ca_file: Some(write_foreign_ca(dovecot.dir.path())),
        ..with_login(
            with_starttls(real_check(CheckKind::Imap, dovecot.imap_address())),
            PASSWORD,
        )
    };
    let result = probe(&foreign_ca).await;
    assert_failed(
        &result,
        "TLS handshake: invalid peer certificate: UnknownIssuer",
    );

    let address = dovecot.imap_address();
    drop(dovecot);
    let result = probe(&real_check(CheckKind::Imap, address)).await;
    assert_failed(&result, "connect refused");
}

#[tokio::test]
async fn pop3_against_a_real_dovecot_passes_capa_stls_and_login() {
    let dovecot = Dovecot::start().await;

    let result = probe(&real_check(CheckKind::Pop3, dovecot.pop3_address())).await;
    assert!(result.ok, "{result:?}\n{}", dovecot.log());
    assert_eq!(result.detail, format!("+OK {DOVECOT_GREETING}"));

    let login = with_login(
        with_starttls(real_check(CheckKind::Pop3, dovecot.pop3_address())),
        PASSWORD,
    );
    let result = probe(&login).await;
    assert!(result.ok, "{result:?}\n{}", dovecot.log());
    eprintln!("pop3 probe against Dovecot: {}", result.detail);
    assert_eq!(
        result.detail,
        format!("+OK {DOVECOT_GREETING} | logged in as {MAILBOX}")
    );
}

#[tokio::test]
async fn pop3_against_a_real_dovecot_fails_on_a_wrong_password_a_foreign_ca_and_when_stopped() {
    let dovecot = Dovecot::start().await;

    let wrong_password = with_login(
        with_starttls(real_check(CheckKind::Pop3, dovecot.pop3_address())),
        "wrong-pw",
    );
    let result = probe(&wrong_password).await;
    assert_failed(&result, "PASS refused: -ERR [AUTH] Authentication failed.");
    assert!(!result.detail.contains("wrong-pw"), "{result:?}");

    let foreign_ca = CheckSection {
        tls_ca_file: Some(write_foreign_ca(dovecot.dir.path())),
        ..with_login(
            with_starttls(real_check(CheckKind::Pop3, dovecot.pop3_address())),
            PASSWORD,
        )
    };
    let result = probe(&foreign_ca).await;
    assert_failed(
        &result,
        "TLS handshake: invalid peer certificate: UnknownIssuer",
    );

    let address = dovecot.pop3_address();
    drop(dovecot);
    let result = probe(&real_check(CheckKind::Pop3, address)).await;
    assert_failed(&result, "connect refused");
}
