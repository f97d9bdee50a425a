//! The `mailherd` binary driven as a subprocess: config validation and the
//! errors an operator sees for bad input.

use std::path::Path;
use std::process::{Command, Output};

const EXAMPLE: &str = include_str!("../../../examples/mailherd.toml");

fn mailherd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailherd"))
        .args(args)
        .output()
        .expect("running mailherd")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn validate_accepts_the_example() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "ok.toml", EXAMPLE);
    let out = mailherd(&["config", "validate", &file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok (node n1, 3 members"));
}

#[test]
fn validate_prints_every_problem_with_file_line_and_key_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let broken =
        EXAMPLE
            .replacen("id = 2", "id = 1", 1)
            .replacen("192.0.2.100/24", "192.0.2.300/24", 1);
    let file = write(dir.path(), "broken.toml", &broken);
    let out = mailherd(&["config", "validate", &file]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{file}:22: members[1].id: 1 is already used by members[0]"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{file}:39: floating_ip.address:")),
        "{stdout}"
    );
    assert!(text(&out.stderr).contains("2 problem(s)"));
}

#[test]
fn validate_reports_toml_syntax_errors_with_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "syntax.toml", "[node]\nname = \"n1\n");
    let out = mailherd(&["config", "validate", &file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains(&format!("{file}:2:")),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let out = mailherd(&["config", "validate", "/nonexistent/mailherd.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read /nonexistent/mailherd.toml"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_agent_refuses_a_broken_config_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "broken.toml",
        &EXAMPLE.replacen("lease_ms = 500", "", 1).replacen(
            "[cluster]",
            "[cluster]\nlease_ms = 10",
            1,
        ),
    );
    let out = mailherd(&["agent", "--config", &file]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("invalid config") && stderr.contains("cluster.lease_ms"),
        "{stderr}"
    );
}

#[test]
fn status_without_an_agent_says_so() {
    let out = mailherd(&["status", "--api", "http://127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is it running?"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn unknown_subcommands_are_usage_errors() {
    let out = mailherd(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}
