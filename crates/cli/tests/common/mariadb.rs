//! Real mariadbd servers of a test's own: each a temp datadir and a
//! loopback port, started with `--no-defaults`, its binary log on and
//! `read_only` (as every node's my.cnf should say), and the accounts
//! `mailherd` (admin) and `app` (no SUPER: read_only applies to it) made
//! outside the binary log; plus node configs with `[mariadb]` naming them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use super::{free_port, members};

pub const ADMIN_PW: &str = "admin-pw";
pub const APP_PW: &str = "app-pw";

/// One mariadbd: a datadir that outlives restarts, killed on drop.
pub struct Mariadbd {
    pub name: String,
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Drop for Mariadbd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn find(names: &[&str]) -> PathBuf {
    names
        .iter()
        .flat_map(|name| {
            ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
                .into_iter()
                .map(move |dir| Path::new(dir).join(name))
        })
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("none of {names:?} is installed: run scripts/install-deps.sh"))
}

fn user_arg() -> &'static str {
    if nix_is_root() {
        "--user=root"
    } else {
        "--user="
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Mariadbd {
    /// Installs a datadir under `parent/name` and starts the server.
    pub fn install(parent: &Path, name: &str) -> Mariadbd {
        let dir = parent.join(name);
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let output = Command::new(find(&["mariadb-install-db", "mysql_install_db"]))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(user_arg())
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            // Its own temp dir: bootstraps running at once must not share
            // /tmp's temporary table files.
            .arg(format!("--tmpdir={}", tmp.display()))
            .output()
            .expect("running mariadb-install-db");
        assert!(
            output.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The accounts exist on every server on its own: outside the binary
        // log, so that replication does not make them again.
        std::fs::write(
            dir.join("init.sql"),
            format!(
                "SET SESSION sql_log_bin=0;\n\
                 CREATE USER IF NOT EXISTS 'mailherd'@'%' IDENTIFIED BY '{ADMIN_PW}';\n\
                 GRANT ALL PRIVILEGES ON *.* TO 'mailherd'@'%' WITH GRANT OPTION;\n\
                 CREATE USER IF NOT EXISTS 'app'@'%' IDENTIFIED BY '{APP_PW}';\n\
                 GRANT ALL PRIVILEGES ON app.* TO 'app'@'%';\n"
            ),
        )
        .unwrap();
        let mut server = Mariadbd {
            name: name.to_string(),
            port: free_port(),
            dir,
            child: None,
        };
        server.start();
        server
    }

    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts (or restarts) the server on its datadir and port and waits
    /// until the admin can log in.
    pub fn start(&mut self) {
        let dir = &self.dir;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stderr.log"))
            .unwrap();
        let child = Command::new(find(&["mariadbd", "mysqld"]))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .arg(format!("--init-file={}", dir.join("init.sql").display()))
            .arg(format!("--log-error={}", dir.join("error.log").display()))
            .arg(format!("--log-bin={}", dir.join("data/binlog").display()))
            .arg(format!("--relay-log={}", dir.join("data/relay").display()))
            .arg("--log-slave-updates")
            .arg("--read-only")
            .arg("--skip-name-resolve")
            .arg("--innodb-buffer-pool-size=16M")
            .arg("--innodb-log-file-size=16M")
            .arg("--performance-schema=OFF")
            .arg(user_arg())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting mariadbd");
        self.child = Some(child);
        let started = Instant::now();
        let runtime = rt();
        loop {
            if runtime
                .block_on(connect(self.port, "mailherd", ADMIN_PW))
                .is_ok()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{}: mariadbd exited ({status}): {}",
                    self.name,
                    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{}: mariadbd did not let the admin in within 30 s",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server at once (a power loss, as far as it knows).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn run(&self, sql: &str) {
        rt().block_on(async {
            let mut conn = connect(self.port, "mailherd", ADMIN_PW).await.unwrap();
            conn.query_drop(sql)
                .await
                .unwrap_or_else(|e| panic!("{}: {sql}: {e}", self.name));
        })
    }

    pub fn value(&self, sql: &str) -> Option<String> {
        rt().block_on(async {
            let mut conn = connect(self.port, "mailherd", ADMIN_PW).await.unwrap();
            let row: Option<mysql_async::Row> = conn.query_first(sql).await.unwrap();
            row.and_then(|row| row.get::<Option<String>, usize>(0).flatten())
        })
    }

    /// Makes the application's table, app.t, that `rows` and `app_insert`
    /// use.
    pub fn create_app_table(&self) {
        self.run("CREATE DATABASE app");
        self.run("CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20))");
    }

    /// The rows of app.t, in order.
    pub fn rows(&self) -> Vec<String> {
        self.try_rows().unwrap()
    }

    /// The rows of app.t, or why they cannot be read (on a replica, app.t
    /// may not have arrived yet).
    pub fn try_rows(&self) -> Result<Vec<String>, String> {
        rt().block_on(async {
            let mut conn = connect(self.port, "mailherd", ADMIN_PW).await.unwrap();
            conn.query("SELECT v FROM app.t ORDER BY id")
                .await
                .map_err(|error| format!("{}: {error}", self.name))
        })
    }

    /// Inserts as the application (no SUPER: read_only applies to it).
    pub fn app_insert(&self, value: &str) -> Result<(), String> {
        rt().block_on(async {
            let mut conn = connect(self.port, "app", APP_PW)
                .await
                .map_err(|e| e.to_string())?;
            conn.query_drop(format!("INSERT INTO app.t (v) VALUES ('{value}')"))
                .await
                .map_err(|e| e.to_string())
        })
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub async fn connect(port: u16, user: &str, password: &str) -> Result<mysql_async::Conn, String> {
    let options = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false);
    tokio::time::timeout(Duration::from_secs(2), mysql_async::Conn::new(options))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())
}

/// Servers and the config files of their nodes, with `[mariadb]`: the
/// members (and their ports) are fixed once, so agents can run on them.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub servers: Vec<Mariadbd>,
    /// Each member's (peer, api) port.
    pub ports: Vec<(u16, u16)>,
    members_toml: String,
}

impl Cluster {
    /// `nodes` servers, installed in parallel; with two, a third member is
    /// a witness.
    pub fn new(nodes: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let servers = std::thread::scope(|scope| {
            let handles: Vec<_> = (1..=nodes)
                .map(|i| {
                    let parent = dir.path().to_path_buf();
                    scope.spawn(move || Mariadbd::install(&parent, &format!("n{i}")))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        std::fs::write(dir.path().join("admin.pw"), format!("{ADMIN_PW}\n")).unwrap();
        std::fs::write(dir.path().join("repl.pw"), "repl-pw\n").unwrap();
        std::fs::write(dir.path().join("token"), "db-test-token-0123456789").unwrap();
        let (ports, mut members_toml) = members(nodes.max(3));
        if nodes == 2 {
            members_toml = members_toml.replace(
                "name = \"n3\"\nid = 3\n",
                "name = \"n3\"\nid = 3\nrole = \"witness\"\n",
            );
        }
        Cluster {
            dir,
            servers,
            ports,
            members_toml,
        }
    }

    /// Writes node `name`'s config with `[mariadb]` (`extra` goes into the
    /// section) naming `addresses` as n1, n2, ...; returns its path.
    pub fn config(&self, name: &str, extra: &str, addresses: &[SocketAddr]) -> PathBuf {
        let index: usize = name[1..].parse::<usize>().unwrap() - 1;
        let (peer, api) = self.ports[index];
        let mut text = format!(
            "[node]\nname = \"{name}\"\ndata_dir = \"{}\"\n\n[cluster]\nname = \"db-test\"\ntiming = \"safe\"\n\n\
             [api]\nlisten = \"127.0.0.1:{api}\"\npeer_listen = \"127.0.0.1:{peer}\"\ntoken_file = \"{}\"\n\n{}\
             [mariadb]\nadmin_user = \"mailherd\"\nadmin_password_file = \"{}\"\n\
             replication_user = \"repl\"\nreplication_password_file = \"{}\"\n\
             connect_timeout_ms = 2000\n{extra}\n",
            self.dir.path().join(name).display(),
            self.dir.path().join("token").display(),
            self.members_toml,
            self.dir.path().join("admin.pw").display(),
            self.dir.path().join("repl.pw").display(),
        );
        for (i, address) in addresses.iter().enumerate() {
            text.push_str(&format!(
                "\n[[mariadb.nodes]]\nname = \"n{}\"\naddress = \"{address}\"\n",
                i + 1
            ));
        }
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Every server's node config (`extra` in `[mariadb]`).
    pub fn configs(&self, extra: &str) -> Vec<PathBuf> {
        let addresses: Vec<SocketAddr> = self.servers.iter().map(Mariadbd::address).collect();
        (1..=self.servers.len())
            .map(|i| self.config(&format!("n{i}"), extra, &addresses))
            .collect()
    }
}
