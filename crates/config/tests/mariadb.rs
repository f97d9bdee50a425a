//! `[mariadb]` and `[[mariadb.nodes]]`, and the `mariadb_replication`
//! check: the example's commented block is valid, and every broken value
//! names the file, the line and the key.

mod common;

use common::{line_starting, parse, problem_about, EXAMPLE};
use mailherd_config::{CheckKind, ReplicationMode};

/// The example with its commented `[mariadb]` block switched on.
fn example_with_mariadb() -> String {
    common::example_enabled_from("# [mariadb]")
}

#[test]
fn the_examples_mariadb_section_is_valid() {
    assert!(parse(EXAMPLE).unwrap().mariadb.is_none());
    let config = parse(&example_with_mariadb()).unwrap_or_else(|p| panic!("{p}"));
    let section = config.mariadb.clone().expect("[mariadb] is parsed");
    assert_eq!(section.mode, ReplicationMode::PrimaryReplica);
    assert_eq!(section.max_promotion_lag_ms, 30_000);
    assert_eq!(section.nodes.len(), 3);
    // server_id defaults to the member's id.
    let ids: Vec<u32> = section
        .nodes
        .iter()
        .map(|node| config.mariadb_server_id(node))
        .collect();
    assert_eq!(ids, [1, 2, 3]);
}

#[test]
fn broken_mariadb_settings_name_file_line_and_key() {
    let base = example_with_mariadb();
    let section_line = line_starting(&base, "[mariadb]", 1);
    // (from, to, key, the line starts with, needle); `from` is replaced
    // once, after the [mariadb] header.
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        (
            "name = \"n2\"\naddress",
            "name = \"n9\"\naddress",
            "mariadb.nodes[1].name",
            "name = \"n9\"",
            "not among the [[members]]",
        ),
        (
            "10.0.0.13:3306",
            "10.0.0.11:3306",
            "mariadb.nodes[2].address",
            "address = \"10.0.0.11:3306\"",
            "already used by mariadb.nodes[0]",
        ),
        (
            "10.0.0.12:3306",
            "0.0.0.0:3306",
            "mariadb.nodes[1].address",
            "address = \"0.0.0.0",
            "the other nodes can reach",
        ),
        (
            "mode = \"primary-replica\"",
            "mode = \"master-master\"",
            "mariadb.mode",
            "mode = ",
            "exactly two nodes (got 3",
        ),
        (
            "max_promotion_lag_ms = 30000",
            "max_promotion_lag_ms = 0",
            "mariadb.max_promotion_lag_ms",
            "max_promotion_lag_ms",
            "must be above 0",
        ),
        (
            "admin_user = \"mailherd\"",
            "admin_user = \"o'brien\"",
            "mariadb.admin_user",
            "admin_user",
            "must not contain '\\''",
        ),
        (
            "name = \"n3\"\naddress = \"10.0.0.13:3306\"",
            "name = \"n3\"\naddress = \"10.0.0.13:3306\"\nserver_id = 2",
            "mariadb.nodes[2].server_id",
            "server_id = 2",
            "2 is already used by mariadb.nodes[1]",
        ),
        (
            "replication_password_file = \"/etc/mailherd/mariadb-repl.pw\"",
            "replication_password_file = \"mariadb-repl.pw\"",
            "mariadb.replication_password_file",
            "replication_password_file",
            "must be an absolute path",
        ),
    ];
    for (from, to, key, line_start, needle) in cases {
        let at = base[..].find("[mariadb]").unwrap();
        let (head, tail) = base.split_at(at);
        assert!(tail.contains(from), "the block lacks {from:?}");
        let text = format!("{head}{}", tail.replacen(from, to, 1));
        let (line, message) = problem_about(&text, key);
        // The last line that starts so (a duplicate comes after its first).
        let expected = text
            .lines()
            .enumerate()
            .skip(section_line)
            .filter(|(_, l)| l.starts_with(line_start))
            .map(|(i, _)| i + 1)
            .last()
            .unwrap_or_else(|| line_starting(&text, line_start, section_line));
        assert_eq!(line, expected, "{key}: {message}");
        assert!(
            message.contains(needle),
            "{key}: {message:?} lacks {needle:?}"
        );
    }
    // A missing password file is named where the section starts.
    let text = base.replace(
        "replication_password_file = \"/etc/mailherd/mariadb-repl.pw\"\n",
        "",
    );
    let (line, message) = problem_about(&text, "mariadb.replication_password_file");
    assert_eq!(line, section_line);
    assert!(message.starts_with("missing"), "{message}");
}

#[test]
fn the_replication_check_takes_a_lag_bound_the_plain_one_does_not() {
    let check = |kind: &str, extra: &str| {
        format!(
            "{EXAMPLE}\n[[checks]]\nname = \"db\"\nkind = \"{kind}\"\naddress = \"127.0.0.1:3306\"\nuser = \"probe\"\n{extra}"
        )
    };
    let config =
        parse(&check("mariadb_replication", "max_lag_s = 30\n")).unwrap_or_else(|p| panic!("{p}"));
    let db = config.checks.iter().find(|c| c.name == "db").unwrap();
    assert_eq!(db.kind, CheckKind::MariadbReplication);
    assert_eq!(db.max_lag_s, Some(30));

    let text = check("mariadb", "max_lag_s = 30\n");
    // The new check comes after the example's own.
    let key = format!(
        "checks[{}].max_lag_s",
        EXAMPLE.matches("[[checks]]").count()
    );
    let (line, message) = problem_about(&text, &key);
    assert_eq!(line, line_starting(&text, "max_lag_s", 1));
    assert!(
        message.contains("not used by kind \"mariadb\""),
        "{message}"
    );

    let text = check("mariadb_replication", "max_lag_s = 0\n");
    let (_, message) = problem_about(&text, &key);
    assert!(message.contains("must be at least 1"), "{message}");
}
