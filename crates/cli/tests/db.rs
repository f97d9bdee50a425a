//! `mailherd db ...` against real mariadbd servers of the tests' own:
//! each a temp datadir and a loopback port, started with `--no-defaults`,
//! its binary log on and `read_only` (as every node's my.cnf should say),
//! and an admin account made outside the binary log.
//!
//! - primary-replica: setup (and a rerun that changes nothing), status,
//!   a promotion of a replica whose relay log still holds unapplied rows
//!   after the master died (no committed row lost, read_only flipped, the
//!   other replica repointed), the old master rejoining as a replica, and
//!   the `mariadb_replication` probe on the way;
//! - master-master: setup with the conflict warning, writes both ways;
//! - errors: a wrong password and a closed port name the node; a promotion
//!   whose relay log cannot be applied stops at the lag bound;
//! - four `db follow`s of one server at once take turns.
//!
//! They need mariadbd (scripts/install-deps.sh installs mariadb-server) and
//! fail without it.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::mariadb::{connect, rt, Cluster, Mariadbd, ADMIN_PW};
use common::{free_port, wait_for};
use mysql_async::prelude::Queryable;

fn mailherd(args: &[&str], config: &Path) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_mailherd"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("running mailherd");
    eprintln!(
        "$ mailherd {} --config {}\n{}{}",
        args.join(" "),
        config.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn status_json(config: &Path) -> serde_json::Value {
    serde_json::from_slice(&mailherd(&["db", "status", "--json"], config).stdout)
        .expect("db status --json prints JSON")
}

/// Node `name`'s entry of `db status --json`.
fn node_status<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {status}"))
}

fn replication_check(server: &Mariadbd) -> mailherd_config::CheckSection {
    mailherd_config::CheckSection {
        address: Some(server.address()),
        user: Some("mailherd".into()),
        password: Some(mailherd_config::Secret::new(ADMIN_PW)),
        timeout_ms: 2_000,
        ..mailherd_config::CheckSection::new(
            "replication",
            mailherd_config::CheckKind::MariadbReplication,
        )
    }
}

fn probe(server: &Mariadbd) -> mailherd_probes::ProbeResult {
    rt().block_on(mailherd_probes::probe(&replication_check(server)))
}

/// Waits until `replica` has received (not necessarily applied) everything
/// `master` wrote.
/// `n` servers replicating from n1 (`mailherd db setup-replication`, with
/// `extra` in every config's `[mariadb]`) and the table `app.t` made on n1.
fn replicating_app(n: usize, extra: &str) -> (Cluster, Vec<PathBuf>) {
    let cluster = Cluster::new(n);
    let configs = cluster.configs(extra);
    let output = mailherd(&["db", "setup-replication", "--master", "n1"], &configs[0]);
    assert!(output.status.success(), "{}", stdout(&output));
    cluster.servers[0].create_app_table();
    (cluster, configs)
}

fn wait_received(master: &Mariadbd, replica: &Mariadbd) {
    let target = master.value("SELECT @@gtid_binlog_pos").unwrap_or_default();
    wait_for(
        &format!("{} to receive {target}", replica.name),
        Duration::from_secs(20),
        || {
            let status: serde_json::Value = rt().block_on(async {
                let mut conn = connect(replica.port, "mailherd", ADMIN_PW).await.unwrap();
                let row: mysql_async::Row = conn
                    .query_first("SHOW SLAVE STATUS")
                    .await
                    .unwrap()
                    .unwrap();
                serde_json::Value::String(
                    row.get::<Option<String>, &str>("Gtid_IO_Pos")
                        .flatten()
                        .unwrap_or_default(),
                )
            });
            (status.as_str() == Some(target.as_str())).then_some(())
        },
    );
}

fn wait_rows(server: &Mariadbd, expected: &[String]) {
    wait_for(
        &format!("{} to hold {} rows", server.name, expected.len()),
        Duration::from_secs(20),
        // Until the replica has app.t itself, reading it fails: not yet.
        || (server.try_rows().ok()? == expected).then_some(()),
    );
}

#[test]
fn primary_replica_setup_promotion_without_loss_and_rejoin() {
    let mut cluster = Cluster::new(3);
    let configs = cluster.configs("max_promotion_lag_ms = 20000");

    // Setup from n1: every server started read-only with server_id 1.
    let output = mailherd(&["db", "setup-replication", "--master", "n1"], &configs[0]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("read_only ON -> OFF"), "{text}");
    assert!(
        text.contains("created the replication account 'repl'@'%'"),
        "{text}"
    );
    assert!(
        text.contains("server_id 1 -> 2") && text.contains("server_id 1 -> 3"),
        "{text}"
    );
    assert!(
        text.contains("replicating from n1 (127.0.0.1:")
            && text.contains("MASTER_USE_GTID=slave_pos"),
        "{text}"
    );
    assert!(text.contains("add to each server's my.cnf"), "{text}");
    // A rerun changes nothing.
    let rerun = stdout(&mailherd(
        &["db", "setup-replication", "--master", "n1"],
        &configs[1],
    ));
    assert_eq!(rerun.matches("nothing to change").count(), 3, "{rerun}");

    let [n1, n2, n3] = &mut cluster.servers[..] else {
        unreachable!()
    };
    let status = status_json(&configs[2]);
    assert_eq!(node_status(&status, "n1")["role"], "primary");
    for name in ["n2", "n3"] {
        let node = node_status(&status, name);
        assert_eq!(node["role"], "replica", "{node}");
        assert_eq!(node["health"], "up", "{node}");
        assert_eq!(node["state"]["replica"]["using_gtid"], "Slave_Pos");
        assert_eq!(node["state"]["replica"]["master_port"], n1.port);
    }
    let human = stdout(&mailherd(&["db", "status"], &configs[0]));
    assert!(
        human.contains("n2 (127.0.0.1:") && human.contains("replica — up"),
        "{human}"
    );
    assert!(
        human.contains("IO Yes, SQL Yes, Seconds_Behind_Master 0"),
        "{human}"
    );

    // Rows on the master; the application cannot write to a replica.
    n1.create_app_table();
    let mut expected = Vec::new();
    for i in 0..20 {
        n1.app_insert(&format!("before-{i}")).unwrap();
        expected.push(format!("before-{i}"));
    }
    wait_rows(n2, &expected);
    wait_rows(n3, &expected);
    let refused = n2.app_insert("on-a-replica").unwrap_err();
    assert!(
        refused.contains("read-only") || refused.contains("READ ONLY"),
        "{refused}"
    );
    let probe_n2 = probe(n2);
    assert!(probe_n2.ok, "{probe_n2:?}");

    // n2 receives but does not apply the last rows; then the master dies.
    n2.run("STOP SLAVE SQL_THREAD");
    for i in 0..30 {
        n1.app_insert(&format!("late-{i}")).unwrap();
        expected.push(format!("late-{i}"));
    }
    wait_received(n1, n2);
    wait_rows(n3, &expected);
    assert!(
        n2.rows().len() < expected.len(),
        "n2 applied everything already"
    );
    let probe_stopped = probe(n2);
    assert!(!probe_stopped.ok);
    assert!(
        probe_stopped.detail.contains("down: SQL thread stopped"),
        "{probe_stopped:?}"
    );
    n1.kill();

    // Promotion of n2: it applies its relay log first, then becomes writable.
    let output = mailherd(&["db", "promote"], &configs[1]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("n2: applied all it received"), "{text}");
    assert!(text.contains("read_only OFF"), "{text}");
    assert!(text.contains("n3: replicating from n2"), "{text}");
    assert!(text.contains("n1: not repointed: n1 (127.0.0.1:"), "{text}");
    assert_eq!(n2.rows(), expected, "a committed row was lost");
    assert_eq!(n2.value("SELECT @@read_only").as_deref(), Some("0"));
    n2.app_insert("after").unwrap();
    expected.push("after".into());
    wait_rows(n3, &expected);
    let status = status_json(&configs[2]);
    assert_eq!(node_status(&status, "n2")["role"], "primary");
    assert_eq!(
        node_status(&status, "n3")["state"]["replica"]["master_port"],
        n2.port
    );
    assert_eq!(node_status(&status, "n1")["health"], "down");
    assert!(
        node_status(&status, "n1")["error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("n1 (127.0.0.1:{}): cannot connect", n1.port)),
        "{status}"
    );

    // The old master comes back (read-only, by its my.cnf) and follows n2.
    n1.start();
    assert_eq!(n1.value("SELECT @@read_only").as_deref(), Some("1"));
    let output = mailherd(&["db", "follow", "--master", "n2"], &configs[0]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("MASTER_DEMOTE_TO_SLAVE=1"), "{text}");
    wait_rows(n1, &expected);
    let again = stdout(&mailherd(&["db", "follow", "--master", "n2"], &configs[0]));
    assert!(again.contains("n1: unchanged"), "{again}");
    let status = status_json(&configs[0]);
    for name in ["n1", "n3"] {
        assert_eq!(node_status(&status, name)["health"], "up", "{status}");
    }
    let probe_n1 = probe(n1);
    assert!(probe_n1.ok, "{probe_n1:?}");
}

#[test]
fn master_master_setup_warns_and_replicates_both_ways() {
    let cluster = Cluster::new(2);
    let configs = cluster.configs("mode = \"master-master\"");
    let output = mailherd(&["db", "setup-replication", "--master", "n1"], &configs[0]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("WARNING: master-master"), "{text}");
    assert!(text.contains("error 1062 stops replication"), "{text}");
    assert!(text.contains("auto_increment_increment 1 -> 2"), "{text}");
    assert!(text.contains("auto_increment_offset 1 -> 2"), "{text}");
    let [n1, n2] = &cluster.servers[..] else {
        unreachable!()
    };
    assert_ne!(
        n1.value("SELECT @@gtid_domain_id"),
        n2.value("SELECT @@gtid_domain_id")
    );

    n1.create_app_table();
    n1.app_insert("from-n1").unwrap();
    wait_rows(n2, &["from-n1".to_string()]);
    assert!(
        n2.app_insert("refused").is_err(),
        "the passive side is read-only"
    );

    // Promote n2: writable; n1 read-only and still its replica.
    let output = mailherd(&["db", "promote"], &configs[1]);
    assert!(output.status.success(), "{}", stdout(&output));
    n2.app_insert("from-n2").unwrap();
    let expected = vec!["from-n1".to_string(), "from-n2".to_string()];
    wait_rows(n1, &expected);
    assert!(n1.app_insert("refused").is_err());
    // The keys interleave: n1 odd, n2 even.
    let ids: Vec<u64> = rt().block_on(async {
        let mut conn = connect(n1.port, "mailherd", ADMIN_PW).await.unwrap();
        conn.query("SELECT id FROM app.t ORDER BY id")
            .await
            .unwrap()
    });
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0] % 2, 1, "{ids:?}");
    assert_eq!(ids[1] % 2, 0, "{ids:?}");
    let status = status_json(&configs[0]);
    for name in ["n1", "n2"] {
        assert_eq!(node_status(&status, name)["health"], "up", "{status}");
    }
}

#[test]
fn errors_name_the_node_and_the_lag_bound_holds() {
    let cluster = Cluster::new(2);
    let [n1, n2] = &cluster.servers[..] else {
        unreachable!()
    };

    // A closed port and a wrong password: setup names the node and stops.
    let closed = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = cluster.config("n1", "", &[n1.address(), closed]);
    let output = mailherd(&["db", "setup-replication", "--master", "n1"], &config);
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success());
    assert!(
        err.contains(&format!("n2 ({closed}): cannot connect: connect refused")),
        "{err}"
    );
    std::fs::write(cluster.dir.path().join("admin.pw"), "wrong-pw\n").unwrap();
    let configs = cluster.configs("max_promotion_lag_ms = 1500");
    let output = mailherd(&["db", "setup-replication", "--master", "n1"], &configs[0]);
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success());
    for node in [n1, n2] {
        assert!(
            err.contains(&format!(
                "{} (127.0.0.1:{}): cannot connect: ",
                node.name, node.port
            )) && err.contains("Access denied for user 'mailherd'"),
            "{err}"
        );
    }
    assert!(!err.contains("wrong-pw"), "{err}");
    let status = status_json(&configs[0]);
    assert_eq!(node_status(&status, "n2")["health"], "down");

    // With the right password: a replica whose SQL thread is blocked by a
    // lock cannot apply what it received; its promotion fails at the bound.
    std::fs::write(cluster.dir.path().join("admin.pw"), format!("{ADMIN_PW}\n")).unwrap();
    let output = mailherd(&["db", "setup-replication", "--master", "n1"], &configs[0]);
    assert!(output.status.success(), "{}", stdout(&output));
    n1.create_app_table();
    wait_for("the table on n2", Duration::from_secs(20), || {
        (n2.value("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema='app'")
            .as_deref()
            == Some("1"))
        .then_some(())
    });
    let runtime = rt();
    let mut lock = runtime
        .block_on(connect(n2.port, "mailherd", ADMIN_PW))
        .unwrap();
    runtime
        .block_on(lock.query_drop("LOCK TABLES app.t WRITE"))
        .unwrap();
    n1.app_insert("blocked").unwrap();
    wait_received(n1, n2);
    let started = Instant::now();
    let output = mailherd(&["db", "promote"], &configs[1]);
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success());
    assert!(
        err.contains(&format!(
            "n2 (127.0.0.1:{}): relay log not applied within",
            n2.port
        )) && err.contains("(max_promotion_lag_ms)")
            && err.contains("1 transactions behind"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        n2.value("SELECT @@read_only").as_deref(),
        Some("1"),
        "a failed promotion leaves the server read-only"
    );
    runtime.block_on(lock.query_drop("UNLOCK TABLES")).unwrap();
    wait_rows(n2, &["blocked".to_string()]);
}

/// With semi-synchronous replication the dying master's acknowledgement may
/// come from either replica. Here n2's IO thread is stopped, so only n3
/// receives the last rows; the master dies; n2 is promoted. It must fetch
/// those rows from n3 before it takes writes, and say so.
#[test]
fn a_promotion_fetches_what_another_replica_received_first() {
    let (mut cluster, configs) = replicating_app(3, "max_promotion_lag_ms = 20000");
    let [n1, n2, n3] = &mut cluster.servers[..] else {
        unreachable!()
    };
    let mut expected = Vec::new();
    for i in 0..5 {
        n1.app_insert(&format!("both-{i}")).unwrap();
        expected.push(format!("both-{i}"));
    }
    wait_rows(n2, &expected);
    wait_rows(n3, &expected);

    n2.run("STOP SLAVE IO_THREAD");
    for i in 0..10 {
        n1.app_insert(&format!("only-n3-{i}")).unwrap();
        expected.push(format!("only-n3-{i}"));
    }
    wait_rows(n3, &expected);
    assert!(
        n2.rows().len() < expected.len(),
        "n2 received the rows anyway"
    );
    n1.kill();

    let output = mailherd(&["db", "promote"], &configs[1]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("caught up from n3") && text.contains("10 transaction(s)"),
        "{text}"
    );
    assert_eq!(n2.rows(), expected, "a row n3 had received was lost");
    assert_eq!(n2.value("SELECT @@read_only").as_deref(), Some("0"));
    // n3 follows n2 and gets what n2 writes now, without error 1236.
    n2.app_insert("after").unwrap();
    expected.push("after".into());
    wait_rows(n3, &expected);
}

/// The old master's last commit reached no replica (their IO threads were
/// stopped), and the new master then wrote more transactions than that, so
/// its position is past the old master's in sequence numbers. Following it
/// would lose the commit (MariaDB would stop with error 1236): `db follow`
/// refuses, naming the GTID, and leaves the old master read-only.
#[test]
fn an_old_master_whose_last_commit_nobody_received_is_refused() {
    let (mut cluster, configs) = replicating_app(3, "max_promotion_lag_ms = 20000");
    let [n1, n2, n3] = &mut cluster.servers[..] else {
        unreachable!()
    };
    n1.app_insert("shared").unwrap();
    wait_rows(n2, &["shared".to_string()]);
    wait_rows(n3, &["shared".to_string()]);
    n2.run("STOP SLAVE IO_THREAD");
    n3.run("STOP SLAVE IO_THREAD");
    n1.app_insert("only-on-n1").unwrap();
    let lost = n1.value("SELECT @@gtid_binlog_pos").unwrap();
    n1.kill();

    let output = mailherd(&["db", "promote"], &configs[1]);
    assert!(output.status.success(), "{}", stdout(&output));
    for i in 0..20 {
        n2.app_insert(&format!("new-{i}")).unwrap();
    }

    n1.start();
    let output = mailherd(&["db", "follow", "--master", "n2"], &configs[0]);
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{}", stdout(&output));
    assert!(
        err.contains(&format!("has transactions the master n2 lacks ({lost})"))
            && err.contains("following it would lose them"),
        "{err}"
    );
    assert_eq!(n1.value("SELECT @@read_only").as_deref(), Some("1"));
    assert!(n1.rows().contains(&"only-on-n1".to_string()));
}

/// The new master repoints a replica while that replica's own agent makes
/// it follow: `follow`s of one server at once (four, so that they overlap;
/// two rarely did). Each must see the others' work, not fail halfway with
/// ERROR 1198 (a running slave) or leave the server stopped.
#[test]
fn two_repointings_of_one_server_at_once_take_turns() {
    let (mut cluster, configs) = replicating_app(2, "");
    let [n1, n2] = &mut cluster.servers[..] else {
        unreachable!()
    };
    let mut expected = Vec::new();
    for round in 0..8 {
        // Not replicating at all: both will want CHANGE MASTER.
        n2.run("STOP SLAVE");
        n2.run("RESET SLAVE ALL");
        let follow = || {
            Command::new(env!("CARGO_BIN_EXE_mailherd"))
                .args(["db", "follow", "--master", "n1", "--config"])
                .arg(&configs[1])
                .output()
                .expect("mailherd runs")
        };
        let outputs: Vec<Output> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4).map(|_| scope.spawn(follow)).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for output in &outputs {
            assert!(
                output.status.success(),
                "round {round}: {}{}",
                stdout(output),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let row = format!("round-{round}");
        n1.app_insert(&row).unwrap();
        expected.push(row);
        wait_rows(n2, &expected);
    }
}
