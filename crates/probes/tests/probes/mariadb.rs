//! MariaDB: a closed port, a missing socket and a silent server always;
//! a real mariadbd of the test's own (temp datadir, loopback port and a
//! socket) where the binaries are installed (scripts/install-deps.sh
//! installs mariadb-server), skipped with a message otherwise.

use super::*;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use mailherd_config::Secret;

fn mariadb_check(address: SocketAddr) -> CheckSection {
    CheckSection {
        user: Some("probe".to_string()),
        password: Some(Secret::new("probe-pw")),
        ..check(CheckKind::Mariadb, address, 2_000)
    }
}

#[tokio::test]
async fn mariadb_replication_fails_on_a_closed_port() {
    let check = CheckSection {
        kind: CheckKind::MariadbReplication,
        ..mariadb_check(closed_port().await)
    };
    let result = probe(&check).await;
    assert!(!result.ok);
    assert_eq!(result.detail, "connect refused");
}

#[tokio::test]
async fn mariadb_fails_on_a_closed_port_a_missing_socket_and_a_silent_server() {
    let result = probe(&mariadb_check(closed_port().await)).await;
    assert!(!result.ok);
    assert_eq!(result.detail, "connect refused");

    let socket = CheckSection {
        address: None,
        socket: Some(PathBuf::from("/nonexistent/mysqld.sock")),
        ..mariadb_check(closed_port().await)
    };
    let result = probe(&socket).await;
    assert_failed(&result, "no socket at /nonexistent/mysqld.sock");

    let (address, _server) = scripted_server(vec![Step::Silence]).await;
    let mut silent = mariadb_check(address);
    silent.timeout_ms = 300;
    let started = Instant::now();
    let result = probe(&silent).await;
    assert_failed(
        &result,
        "timed out after 300 ms waiting for the MariaDB login",
    );
    assert!(started.elapsed() < Duration::from_millis(1_500));
}

/// A mariadbd on a temp datadir, killed on drop.
struct Mariadbd {
    child: Child,
    port: u16,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Mariadbd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(names: &[&str]) -> Option<PathBuf> {
    names
        .iter()
        .flat_map(|name| {
            ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"]
                .into_iter()
                .map(move |dir| Path::new(dir).join(name))
        })
        .find(|path| path.exists())
}

/// Starts mariadbd with a user `probe` (password `probe-pw`); `Err` says
/// why it cannot run here.
async fn start_mariadbd() -> Result<Mariadbd, String> {
    let server = find(&["mariadbd", "mysqld"]).ok_or("no mariadbd installed")?;
    let install_db = find(&["mariadb-install-db", "mysql_install_db"])
        .ok_or("no mariadb-install-db installed")?;
    let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
    let datadir = dir.path().join("data");
    let user = if nix::unistd::Uid::effective().is_root() {
        "--user=root"
    } else {
        "--user="
    };
    let output = Command::new(&install_db)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", datadir.display()))
        .arg(user)
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .output()
        .map_err(|error| format!("{}: {error}", install_db.display()))?;
    if !output.status.success() {
        return Err(format!(
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let init = dir.path().join("init.sql");
    std::fs::write(
        &init,
        "CREATE USER 'probe'@'%' IDENTIFIED BY 'probe-pw';\n\
         CREATE USER 'probe'@'localhost' IDENTIFIED BY 'probe-pw';\n\
         GRANT SLAVE MONITOR ON *.* TO 'probe'@'%';\n\
         GRANT SLAVE MONITOR ON *.* TO 'probe'@'localhost';\n",
    )
    .map_err(|error| error.to_string())?;
    let port = closed_port().await.port();
    let socket = dir.path().join("mysqld.sock");
    let child = Command::new(&server)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", datadir.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!(
            "--pid-file={}",
            dir.path().join("mysqld.pid").display()
        ))
        .arg(format!("--init-file={}", init.display()))
        .arg(format!(
            "--log-error={}",
            dir.path().join("error.log").display()
        ))
        .arg("--skip-name-resolve")
        .arg("--skip-log-bin")
        .arg("--innodb-buffer-pool-size=16M")
        .arg(user)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("{}: {error}", server.display()))?;
    let mut mariadbd = Mariadbd {
        child,
        port,
        socket,
        _dir: dir,
    };
    // Ready when the probe itself passes.
    let check = mariadb_check(SocketAddr::from(([127, 0, 0, 1], port)));
    let started = Instant::now();
    loop {
        if probe(&check).await.ok {
            return Ok(mariadbd);
        }
        if let Ok(Some(status)) = mariadbd.child.try_wait() {
            let log =
                std::fs::read_to_string(mariadbd._dir.path().join("error.log")).unwrap_or_default();
            return Err(format!("mariadbd exited ({status}): {log}"));
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err("mariadbd did not accept the probe within 20 s".to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn mariadb_against_a_real_server() {
    let mariadbd = match start_mariadbd().await {
        Ok(mariadbd) => mariadbd,
        Err(why) => {
            eprintln!("SKIPPED: the real-server cases of the mariadb probe: {why}");
            return;
        }
    };
    let address = SocketAddr::from(([127, 0, 0, 1], mariadbd.port));
    let result = probe(&mariadb_check(address)).await;
    assert!(result.ok, "{result:?}");
    eprintln!("mariadb probe: {}", result.detail);
    assert!(
        result.detail.starts_with("SELECT 1 answered by 1"),
        "{result:?}"
    );
    assert!(
        result.detail.ends_with(&format!("at {address}")),
        "{result:?}"
    );

    let over_socket = CheckSection {
        address: None,
        socket: Some(mariadbd.socket.clone()),
        ..mariadb_check(address)
    };
    let result = probe(&over_socket).await;
    assert!(result.ok, "{result:?}");

    let wrong_password = CheckSection {
        password: Some(Secret::new("wrong-pw")),
        ..mariadb_check(address)
    };
    let result = probe(&wrong_password).await;
    assert_failed(&result, "Access denied for user 'probe'");
    assert!(!result.detail.contains("wrong-pw"));

    // This server replicates from nobody and is writable: a primary. (The
    // replica cases are in crates/cli/tests/db.rs, with servers that
    // replicate.)
    let replication = CheckSection {
        kind: CheckKind::MariadbReplication,
        ..mariadb_check(address)
    };
    let result = probe(&replication).await;
    assert!(result.ok, "{result:?}");
    assert!(
        result
            .detail
            .starts_with("primary: writable, replicates from nobody"),
        "{result:?}"
    );
}
