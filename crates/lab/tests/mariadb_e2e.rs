//! MariaDB replication inside the lab (`mailherd-lab up --mariadb`): every
//! mail node runs a mariadbd of its own in its namespaces, the agents
//! promote and repoint them, `mailherd db setup-replication` set them up.
//!
//! A client in the lab's client namespace inserts rows through the
//! floating IP (the stock `mariadb` client, one process per insert, so an
//! insert is acknowledged exactly when the client exits 0) while the
//! master loses power. After the failover every acknowledged row is on the
//! new master, which takes writes; the other survivor replicates from it;
//! the old master, booted again, never becomes writable and either rejoins
//! as a replica or is refused with the GTIDs it would lose. The invariant
//! checker runs through the failover. Root needed; runs its own lab (`mm-`
//! namespaces, /tmp/mm-lab).

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{only_master, text, LabEnv};
use serde_json::Value;

static LAB: LabEnv = LabEnv {
    prefix: "mm",
    dir: "/tmp/mm-lab",
    lock: &LOCK,
};
static LOCK: Mutex<()> = Mutex::new(());

const FAILOVER_WAIT: Duration = Duration::from_secs(60);
/// A backup's agent checks its server follows the master every second.
const FOLLOW_WAIT: Duration = Duration::from_secs(60);

fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    common::wait_for(what, timeout, check, diagnostics)
}

fn diagnostics() -> String {
    LAB.diagnostics(&["node.log", "agent.log", "mariadb/error.log"], 20)
}

/// The lab's application account, from `status --json`.
#[derive(Clone)]
struct Account {
    client_namespace: String,
    user: String,
    password: String,
}

impl Account {
    fn of(status: &Value) -> Account {
        Account {
            client_namespace: status["client_namespace"].as_str().unwrap().to_string(),
            user: status["mariadb"]["user"].as_str().unwrap().to_string(),
            password: status["mariadb"]["password"].as_str().unwrap().to_string(),
        }
    }

    /// `sql` on `host`:3306 with the stock client, from the client
    /// namespace; stdout on success (exit 0), else the error. Bounded by
    /// `timeout` (a dead server does not answer at all).
    fn sql(&self, host: &str, sql: &str) -> Result<String, String> {
        let output = Command::new("timeout")
            .args([
                "-s",
                "KILL",
                "8",
                "ip",
                "netns",
                "exec",
                &self.client_namespace,
            ])
            .args([
                "mariadb",
                "--protocol=TCP",
                "--connect-timeout=2",
                "-N",
                "-B",
            ])
            .args(["-h", host, "-P", "3306", "-u", &self.user])
            .arg(format!("-p{}", self.password))
            .args(["app", "-e", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|error| error.to_string())?;
        if output.status.success() {
            Ok(text(&output.stdout))
        } else {
            Err(format!(
                "{}: {}",
                output.status,
                text(&output.stderr).trim()
            ))
        }
    }

    fn rows(&self, host: &str) -> Option<Vec<String>> {
        self.sql(host, "SELECT v FROM t ORDER BY id")
            .ok()
            .map(|out| out.lines().map(str::to_string).collect())
    }
}

/// Node `name`'s server in `status --json`'s `mariadb`.
fn server<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["mariadb"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no mariadb nodes in {status:#}"))
        .iter()
        .find(|node| node["name"] == name)
        .unwrap_or_else(|| panic!("no server {name} in {status:#}"))
}

fn node_address(status: &Value, name: &str) -> String {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["name"] == name)
        .and_then(|node| node["address"].as_str())
        .unwrap()
        .to_string()
}

/// True when `name`'s server is a running replica of `source` (an
/// address), read-only.
fn replicates_from(status: &Value, name: &str, source: &str) -> bool {
    let server = server(status, name);
    server["read_only"] == true
        && server["replicating_from"]
            .as_str()
            .is_some_and(|from| from.starts_with(&format!("{source}:")))
        && server["io_running"] == "Yes"
        && server["sql_running"] == "Yes"
}

/// Inserts `w-0`, `w-1`, ... through the floating IP until stopped;
/// records which inserts were acknowledged and when.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, Instant)>>>,
    handle: std::thread::JoinHandle<usize>,
}

impl Writer {
    fn start(account: Account, floating_ip: String) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let handle = std::thread::spawn({
            let (stop, acked) = (stop.clone(), acked.clone());
            move || {
                let mut attempts = 0;
                while !stop.load(Ordering::SeqCst) {
                    let value = format!("w-{attempts}");
                    attempts += 1;
                    match account.sql(
                        &floating_ip,
                        &format!("INSERT INTO t (v) VALUES ('{value}')"),
                    ) {
                        Ok(_) => acked.lock().unwrap().push((value, Instant::now())),
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
                attempts
            }
        });
        Writer {
            stop,
            acked,
            handle,
        }
    }

    fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn acked_since(&self, since: Instant) -> usize {
        self.acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, at)| *at > since)
            .count()
    }

    /// Stops it; returns the acknowledged rows and the number of attempts.
    fn finish(self) -> (Vec<String>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let attempts = self.handle.join().expect("the writer ran");
        let acked = self
            .acked
            .lock()
            .unwrap()
            .iter()
            .map(|(v, _)| v.clone())
            .collect();
        (acked, attempts)
    }
}

#[test]
fn mariadb_refuses_keepalived() {
    let _lab = LAB.exclusive();
    let error = LAB.fails(&["up", "--mariadb", "--manager", "keepalived"]);
    assert!(
        error.contains("--mariadb does not go with --manager keepalived"),
        "{error}"
    );
}

#[test]
fn no_acknowledged_row_is_lost_when_the_master_loses_power() {
    let _lab = LAB.exclusive();
    LAB.ok(&["up", "--nodes", "3", "--mariadb"]);
    let setup_log = std::fs::read_to_string(format!("{}/mariadb-setup.log", LAB.dir)).unwrap();
    assert!(
        setup_log.contains("mailherd db setup-replication --master"),
        "{setup_log}"
    );

    // The master's server is the only writable one; the others replicate
    // from it (set up by `db setup-replication`).
    let (old_master, before) = wait_for(
        "the servers to replicate from the master",
        FOLLOW_WAIT,
        || {
            let status = LAB.status();
            let master = only_master(&status)?;
            let address = node_address(&status, &master);
            let primary = server(&status, &master);
            let replicas_ok = ["n1", "n2", "n3"]
                .into_iter()
                .filter(|name| *name != master)
                .all(|name| replicates_from(&status, name, &address));
            (primary["read_only"] == false && primary["role"] == "primary" && replicas_ok)
                .then_some((master, status))
        },
    );
    let account = Account::of(&before);
    let floating_ip = before["floating_ip"].as_str().unwrap().to_string();
    // The first commit may wait for a replica's semi-synchronous
    // acknowledgement while the replicas are still connecting (the client
    // gives up after 8 s): the application retries, as one would.
    wait_for(
        "the application to create its table through the floating IP",
        Duration::from_secs(60),
        || match account.sql(
            &floating_ip,
            "CREATE TABLE IF NOT EXISTS t \
             (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40) NOT NULL UNIQUE)",
        ) {
            Ok(_) => Some(()),
            Err(error) => {
                eprintln!("CREATE TABLE through the floating IP failed, retrying: {error}");
                None
            }
        },
    );

    let writer = Writer::start(account.clone(), floating_ip.clone());
    wait_for("20 acknowledged inserts", Duration::from_secs(60), || {
        (writer.acked_count() >= 20).then_some(())
    });
    let checker = LAB.start_invariants(Duration::from_secs(25));
    let fault_at = Instant::now();
    LAB.ok(&["fail", &old_master, "--mode", "power"]);

    let new_master = wait_for(
        "a new master whose server is writable",
        FAILOVER_WAIT,
        || {
            let status = LAB.status();
            let master = only_master(&status).filter(|m| *m != old_master)?;
            (server(&status, &master)["read_only"] == false).then_some(master)
        },
    );
    wait_for(
        "5 inserts acknowledged after the failover",
        FAILOVER_WAIT,
        || (writer.acked_since(fault_at) >= 5).then_some(()),
    );
    let (acked, attempts) = writer.finish();
    let status = LAB.status();
    let new_address = node_address(&status, &new_master);
    // The power cut took the old master's server with the node.
    assert_eq!(server(&status, &old_master)["role"], "down", "{status:#}");

    // Every acknowledged row is on the new master (nothing twice: the
    // column is UNIQUE), and it takes writes.
    let rows = account.rows(&new_address).expect("the new master answers");
    let on_master: BTreeSet<&String> = rows.iter().collect();
    let missing: Vec<&String> = acked.iter().filter(|v| !on_master.contains(v)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged rows missing on the new master {new_master}: {missing:?}\n{}",
        missing.len(),
        acked.len(),
        diagnostics()
    );
    eprintln!(
        "{} of {attempts} inserts acknowledged, {} rows on the new master {new_master}",
        acked.len(),
        rows.len()
    );
    account
        .sql(&new_address, "INSERT INTO t (v) VALUES ('after-failover')")
        .expect("the new master takes writes");

    // The other survivor follows the new master and has what it has.
    let other = ["n1", "n2", "n3"]
        .into_iter()
        .find(|name| *name != old_master && *name != new_master)
        .unwrap();
    let other_address = node_address(&status, other);
    wait_for(
        "the other survivor to replicate from the new master",
        FOLLOW_WAIT,
        || {
            let status = LAB.status();
            replicates_from(&status, other, &new_address).then_some(())
        },
    );
    let master_rows = account.rows(&new_address).unwrap();
    wait_for("the other survivor to have every row", FOLLOW_WAIT, || {
        (account.rows(&other_address)? == master_rows).then_some(())
    });
    assert!(
        account
            .sql(&other_address, "INSERT INTO t (v) VALUES ('refused')")
            .is_err(),
        "a replica refuses the application's writes"
    );

    let output = checker.wait_with_output().expect("invariants runs");
    let report: Value = serde_json::from_slice(&output.stdout).expect("invariants prints JSON");
    assert_eq!(report["dual_holder_ms"], 0, "{report}\n{}", diagnostics());

    // What the promotion took, from the replicated history (a figure
    // for the report, not asserted: timing belongs to `bench`).
    let last = &LAB.status()["mariadb"]["last_promotion"];
    assert_eq!(last["node"], new_master.as_str(), "{last}");
    assert_eq!(last["ok"], true, "{last}");
    eprintln!(
        "promote_database on {new_master}: {} ms (agent log: {})",
        last["duration_ms"],
        std::fs::read_to_string(format!("{}/{new_master}/agent.log", LAB.dir))
            .unwrap_or_default()
            .lines()
            .rfind(|line| line.contains("database promoted"))
            .unwrap_or("-")
    );

    // The old master boots again: its server starts read-only (my.cnf) and
    // never becomes writable; its agent makes it follow the new master, or
    // refuses to, naming the transactions it would lose.
    let old_address = node_address(&status, &old_master);
    LAB.ok(&["heal", &old_master]);
    // crate mariadb's DbError::Diverged.
    let lacks = "following it would lose them";
    let outcome = wait_for(
        "the old master to rejoin or be refused",
        FOLLOW_WAIT,
        || {
            let status = LAB.status();
            let old = server(&status, &old_master);
            assert_ne!(
                old["read_only"], false,
                "the old master's server is writable: {status:#}"
            );
            if replicates_from(&status, &old_master, &new_address)
                && account.rows(&old_address)? == account.rows(&new_address)?
            {
                return Some("rejoined");
            }
            let log =
                std::fs::read_to_string(format!("{}/{old_master}/agent.log", LAB.dir)).ok()?;
            (old["read_only"] == true && log.contains(lacks)).then_some("refused")
        },
    );
    eprintln!("the old master {old_master}: {outcome}");
    assert!(
        account
            .sql(&old_address, "INSERT INTO t (v) VALUES ('old-master')")
            .is_err(),
        "the old master refuses the application's writes"
    );
    let status = LAB.status();
    assert_eq!(
        server(&status, &old_master)["read_only"],
        true,
        "{status:#}"
    );
    assert_eq!(only_master(&status).as_deref(), Some(new_master.as_str()));
}
