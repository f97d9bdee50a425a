//! The mariadb probe: log in (TCP or unix socket) and `SELECT 1`; and the
//! mariadb_replication probe: log in, read the replication state and
//! judge it (`mailherd_mariadb::health`).

use std::io::ErrorKind;

use mailherd_config::CheckSection;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use tokio::time::Instant;

use crate::{login_password, timed_out, Goodbye, Verdict};

/// Logs in as the check says; the connection and what it reached.
async fn connect(check: &CheckSection, deadline: Instant) -> Result<(Conn, String), String> {
    let password = match check.password.is_some() || check.password_file.is_some() {
        true => Some(login_password(check)?),
        false => None,
    };
    let mut options = OptsBuilder::default()
        .user(check.user.clone())
        .pass(password.map(|secret| secret.expose().to_string()))
        // After a TCP login to localhost the client would otherwise look
        // for the server's socket and reconnect there: one attempt is one
        // connection to what is configured.
        .prefer_socket(false)
        // A probe prepares nothing; keep the connection light.
        .stmt_cache_size(0);
    let target = match (&check.socket, check.address) {
        (Some(socket), _) => {
            options = options.socket(Some(socket.display().to_string()));
            socket.display().to_string()
        }
        (None, Some(address)) => {
            options = options
                .ip_or_hostname(address.ip().to_string())
                .tcp_port(address.port());
            address.to_string()
        }
        (None, None) => return Err("no address or socket configured".to_string()),
    };

    match tokio::time::timeout_at(deadline, Conn::new(options)).await {
        Err(_) => Err(timed_out(check.timeout_ms, "the MariaDB login")),
        Ok(Err(error)) => Err(describe(&error, &target)),
        Ok(Ok(conn)) => Ok((conn, target)),
    }
}

pub(crate) async fn probe(check: &CheckSection, deadline: Instant) -> Result<Verdict, String> {
    let (mut conn, target) = connect(check, deadline).await?;
    let answer: Option<i64> =
        match tokio::time::timeout_at(deadline, conn.query_first("SELECT 1")).await {
            Err(_) => return Err(timed_out(check.timeout_ms, "the answer to SELECT 1")),
            Ok(Err(error)) => return Err(format!("SELECT 1: {}", describe(&error, &target))),
            Ok(Ok(answer)) => answer,
        };
    if answer != Some(1) {
        return Err(format!("SELECT 1 answered {answer:?}"));
    }
    let (major, minor, patch) = conn.server_version();
    Ok(Verdict {
        detail: format!("SELECT 1 answered by {major}.{minor}.{patch} at {target}"),
        goodbye: Some(Goodbye::future(async move {
            let _ = conn.disconnect().await;
        })),
    })
}

/// Passes while the server's replication is healthy: a replica whose IO
/// and SQL threads run without errors within `max_lag_s`, or a writable
/// server that replicates from nobody (the primary). Anything else fails
/// with the reason (the check's `critical` decides Down or Degraded).
pub(crate) async fn probe_replication(
    check: &CheckSection,
    deadline: Instant,
) -> Result<Verdict, String> {
    let (mut conn, target) = connect(check, deadline).await?;
    let state =
        match tokio::time::timeout_at(deadline, mailherd_mariadb::read_state(&mut conn)).await {
            Err(_) => return Err(timed_out(check.timeout_ms, "the replication state")),
            Ok(Err(error)) => {
                return Err(format!(
                    "reading the replication state at {target}: {error}"
                ))
            }
            Ok(Ok(state)) => state,
        };
    let max_lag_s = check
        .max_lag_s
        .unwrap_or(mailherd_config::DEFAULT_MAX_REPLICATION_LAG_S);
    // A writable replica is the master of a master-master pair; the probe
    // cannot tell the mode, and the agent's own read-only fence covers
    // primary-replica.
    let (health, detail) = mailherd_mariadb::health(&state, max_lag_s, true);
    let goodbye = Some(Goodbye::future(async move {
        let _ = conn.disconnect().await;
    }));
    match health {
        mailherd_mariadb::Health::Up => Ok(Verdict {
            detail: format!("{detail} ({target})"),
            goodbye,
        }),
        other => Err(format!("{}: {detail} ({target})", other.as_str())),
    }
}

/// "connect refused" as the other probes say it; the server's own error
/// (access denied, too many connections) otherwise.
fn describe(error: &mysql_async::Error, target: &str) -> String {
    if let mysql_async::Error::Io(mysql_async::IoError::Io(io)) = error {
        return match io.kind() {
            ErrorKind::ConnectionRefused => "connect refused".to_string(),
            ErrorKind::NotFound => format!("no socket at {target}"),
            _ => format!("connect to {target}: {io}"),
        };
    }
    error.to_string()
}
