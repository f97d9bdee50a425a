//! `[preset]` (mailcow, classic) and the `systemd` and `compose` keys of
//! `[services]`: what a preset expands to, how written sections override
//! it, and problems named by file, line and key.

use std::path::{Path, PathBuf};

use mailherd_config::{CheckKind, Config, Problems, ServicesDriver};

/// A mail node with neither services nor checks; the cases append.
const BASE: &str = r#"[node]
name = "n1"
data_dir = "/var/lib/mailherd"

[cluster]
name = "mail"

[[members]]
name = "n1"
id = 1
peer = "192.0.2.11:7400"
api = "192.0.2.11:7401"

[[members]]
name = "n2"
id = 2
peer = "192.0.2.12:7400"
api = "192.0.2.12:7401"

[[members]]
name = "w1"
id = 3
role = "witness"
peer = "192.0.2.13:7400"
api = "192.0.2.13:7401"

[api]
listen = "0.0.0.0:7401"
peer_listen = "0.0.0.0:7400"
"#;

fn parse(extra: &str) -> Result<Config, Problems> {
    Config::parse(Path::new("node.toml"), &format!("{BASE}{extra}"))
}

fn valid(extra: &str) -> Config {
    parse(extra).unwrap_or_else(|problems| panic!("{problems}"))
}

/// Expects a problem about `key` on line `line_in_extra` of `extra` (1 is
/// its first line) whose message contains `needle`.
fn refused(extra: &str, line_in_extra: usize, key: &str, needle: &str) {
    let problems = parse(extra).expect_err("must be refused");
    let found = problems
        .0
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("no problem for {key}; got:\n{problems}"));
    let line = BASE.lines().count() + line_in_extra;
    assert_eq!(found.line, Some(line), "line of {key}; got:\n{problems}");
    assert!(
        found.message.contains(needle),
        "{:?} lacks {needle:?}",
        found.message
    );
    assert!(found
        .to_string()
        .starts_with(&format!("node.toml:{line}: {key}: ")));
}

fn names(config: &Config) -> Vec<&str> {
    config.checks.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn two_lines_give_mailcow_its_driver_and_checks() {
    let config = valid("\n[preset]\nname = \"mailcow\"\n");
    let services = config.services.as_ref().expect("the preset's services");
    assert_eq!(services.driver, ServicesDriver::Compose);
    assert_eq!(services.project.as_deref(), Some("mailcowdockerized"));
    assert_eq!(
        services.compose_file.as_deref(),
        Some(Path::new("/opt/mailcow-dockerized/docker-compose.yml"))
    );
    let names = names(&config);
    for name in [
        "postfix-mailcow",
        "dovecot-mailcow",
        "mysql-mailcow",
        "watchdog-mailcow",
        "smtp",
        "submission",
        "imap",
        "imaps",
        "https",
        "mariadb",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    let check = |name: &str| config.checks.iter().find(|c| c.name == name).unwrap();
    assert_eq!(check("postfix-mailcow").kind, CheckKind::Docker);
    assert_eq!(
        check("postfix-mailcow").compose_project.as_deref(),
        Some("mailcowdockerized")
    );
    assert!(check("postfix-mailcow").critical);
    assert!(!check("sogo-mailcow").critical);
    assert!(!check("https").critical, "webmail is not mail");
    assert_eq!(check("submission").address.unwrap().port(), 587);
    assert_eq!(check("imaps").address.unwrap().port(), 993);
    assert_eq!(check("imaps").tls, Some(true));
    assert_eq!(check("https").address.unwrap().port(), 443);
    assert_eq!(check("mariadb").address.unwrap().port(), 13306);
}

#[test]
fn mailcow_elsewhere_and_under_another_project_name() {
    let config =
        valid("\n[preset]\nname = \"mailcow\"\ndirectory = \"/srv/mailcow\"\nproject = \"mc\"\n");
    let services = config.services.unwrap();
    assert_eq!(services.project.as_deref(), Some("mc"));
    assert_eq!(
        services.compose_file,
        Some(PathBuf::from("/srv/mailcow/docker-compose.yml"))
    );
    let postfix = config
        .checks
        .iter()
        .find(|c| c.name == "postfix-mailcow")
        .unwrap();
    assert_eq!(postfix.compose_project.as_deref(), Some("mc"));
}

#[test]
fn classic_is_postfix_and_dovecot_units() {
    let config = valid("\n[preset]\nname = \"classic\"\n");
    let services = config.services.as_ref().unwrap();
    assert_eq!(services.driver, ServicesDriver::Systemd);
    assert_eq!(services.units, ["postfix.service", "dovecot.service"]);
    assert_eq!(
        names(&config),
        ["postfix.service", "dovecot.service", "smtp", "imap"]
    );

    // Debian: the unit that follows Postfix's master is postfix@-.service.
    let config = valid(
        "\n[preset]\nname = \"classic\"\nunits = [\"postfix@-.service\", \"dovecot.service\"]\n",
    );
    assert_eq!(
        config.services.unwrap().units,
        ["postfix@-.service", "dovecot.service"]
    );
    assert_eq!(config.checks[0].unit.as_deref(), Some("postfix@-.service"));
}

#[test]
fn a_written_check_replaces_the_presets_of_the_same_name() {
    let config = valid(
        r#"
[preset]
name = "mailcow"

[[checks]]
name = "mariadb"
kind = "mariadb"
address = "127.0.0.1:13306"
user = "mailcow"
password_file = "/etc/mailherd/mailcow-db-password"

[[checks]]
name = "queue"
kind = "postfix_queue"
max_messages = 5000
"#,
    );
    let mariadb: Vec<_> = config
        .checks
        .iter()
        .filter(|c| c.name == "mariadb")
        .collect();
    assert_eq!(mariadb.len(), 1, "replaced, not added");
    assert_eq!(mariadb[0].kind, CheckKind::Mariadb);
    assert_eq!(mariadb[0].user.as_deref(), Some("mailcow"));
    // The preset's checks first, then the written ones.
    let names = names(&config);
    assert_eq!(names[names.len() - 2..], ["mariadb", "queue"]);
    assert_eq!(names.len(), 17 + 6 + 1);
}

#[test]
fn a_written_services_section_replaces_the_presets_driver() {
    let config = valid(
        r#"
[preset]
name = "classic"

[services]
driver = "command"
start = ["/usr/local/bin/mail-up"]
stop = ["/usr/local/bin/mail-down"]
status = ["/usr/local/bin/mail-status"]
"#,
    );
    assert_eq!(
        config.services.as_ref().unwrap().driver,
        ServicesDriver::Command
    );
    assert_eq!(
        names(&config),
        ["postfix.service", "dovecot.service", "smtp", "imap"]
    );
}

#[test]
fn an_expanded_config_renders_and_parses_back_to_itself() {
    for preset in ["mailcow", "classic"] {
        let config = valid(&format!("\n[preset]\nname = \"{preset}\"\n"));
        let text = config.to_toml();
        let again = Config::parse(Path::new("rendered.toml"), &text)
            .unwrap_or_else(|problems| panic!("{preset}: {problems}\n{text}"));
        assert_eq!(again, config, "{preset}");
    }
}

#[test]
fn systemd_and_compose_sections_as_written() {
    let config = valid(
        r#"
[services]
driver = "systemd"
units = ["postfix@-.service", "dovecot.service"]
systemctl = "/usr/local/bin/systemctl"
"#,
    );
    let services = config.services.unwrap();
    assert_eq!(
        services.systemctl_program(),
        PathBuf::from("/usr/local/bin/systemctl")
    );
    let config = valid(
        r#"
[services]
driver = "compose"
project = "mailcowdockerized"
compose_file = "/opt/mailcow-dockerized/docker-compose.yml"
compose_command = ["docker-compose"]
"#,
    );
    let services = config.services.unwrap();
    assert_eq!(services.compose_command, ["docker-compose"]);
    assert_eq!(
        services.docker_socket_path(),
        PathBuf::from("/var/run/docker.sock")
    );
}

#[test]
fn preset_problems_name_file_line_and_key() {
    refused(
        "\n[preset]\nname = \"mailcoww\"\n",
        3,
        "preset.name",
        "unknown variant `mailcoww`",
    );
    refused(
        "\n[preset]\nname = \"mailcow\"\nunits = [\"postfix.service\"]\n",
        4,
        "preset.units",
        "not used by preset \"mailcow\"",
    );
    refused(
        "\n[preset]\nname = \"mailcow\"\ndirectory = \"opt/mailcow\"\n",
        4,
        "preset.directory",
        "absolute",
    );
    refused(
        "\n[preset]\nname = \"mailcow\"\nproject = \"Mailcow\"\n",
        4,
        "preset.project",
        "not a compose project name",
    );
    refused(
        "\n[preset]\nname = \"classic\"\ndirectory = \"/opt/mailcow\"\n",
        4,
        "preset.directory",
        "not used by preset \"classic\"",
    );
    refused(
        "\n[preset]\nname = \"classic\"\nunits = [\"postfix.service\",\n  \"-dovecot\"]\n",
        5,
        "preset.units[1]",
        "not a systemd unit name",
    );
}

#[test]
fn services_problems_name_file_line_and_key() {
    refused(
        "\n[services]\ndriver = \"systemd\"\n",
        2,
        "services.units",
        "missing",
    );
    refused(
        "\n[services]\ndriver = \"systemd\"\nunits = [\"postfix.service\"]\nproject = \"mc\"\n",
        5,
        "services.project",
        "not used by driver \"systemd\" (it takes: units, systemctl)",
    );
    refused(
        "\n[services]\ndriver = \"command\"\nstart = [\"a\"]\nstop = [\"b\"]\nstatus = [\"c\"]\nunits = [\"postfix.service\"]\n",
        7,
        "services.units",
        "not used by driver \"command\"",
    );
    refused(
        "\n[services]\ndriver = \"compose\"\ncompose_file = \"/opt/mailcow-dockerized/docker-compose.yml\"\n",
        2,
        "services.project",
        "missing",
    );
    refused(
        "\n[services]\ndriver = \"compose\"\nproject = \"mc\"\ncompose_file = \"docker-compose.yml\"\n",
        5,
        "services.compose_file",
        "absolute",
    );
    refused(
        "\n[services]\ndriver = \"compose\"\nproject = \"mc\"\ncompose_file = \"/x/docker-compose.yml\"\ndocker_socket = \"docker.sock\"\n",
        6,
        "services.docker_socket",
        "absolute",
    );
    refused(
        "\n[services]\ndriver = \"dockerd\"\n",
        3,
        "services.driver",
        "unknown variant `dockerd`",
    );
}

#[test]
fn a_witness_takes_no_preset() {
    let text = format!("{BASE}\n[preset]\nname = \"mailcow\"\n").replacen(
        "name = \"n1\"\ndata_dir",
        "name = \"w1\"\ndata_dir",
        1,
    );
    let problems = Config::parse(Path::new("node.toml"), &text).unwrap_err();
    assert!(
        problems
            .0
            .iter()
            .any(|p| p.key == "preset" && p.message.contains("witness")),
        "{problems}"
    );
}
