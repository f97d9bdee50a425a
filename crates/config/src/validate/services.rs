//! Validation of `[services]` (the keys of each driver) and `[preset]`.

use super::{check_docker_name, check_unit_name, require_absolute, Collector};
use crate::{Config, MemberRole, PresetName, ServicesDriver, ServicesSection};

/// The driver-specific keys `driver` reads.
fn keys_of_driver(driver: ServicesDriver) -> &'static [&'static str] {
    match driver {
        ServicesDriver::Command => &["start", "stop", "status", "kill"],
        ServicesDriver::Systemd => &["units", "systemctl"],
        ServicesDriver::Compose => &[
            "project",
            "compose_file",
            "compose_command",
            "docker_socket",
        ],
    }
}

pub(super) fn validate_services(c: &mut Collector<'_>, services: &ServicesSection) {
    let driver = services.driver;
    let key = |name: &str| format!("services.{name}");

    // Keys of another driver: refused, so that a section written for one
    // driver and switched to another does not half apply.
    let set: [(&str, bool); 10] = [
        ("start", !services.start.is_empty()),
        ("stop", !services.stop.is_empty()),
        ("status", !services.status.is_empty()),
        ("kill", !services.kill.is_empty()),
        ("units", !services.units.is_empty()),
        ("systemctl", services.systemctl.is_some()),
        ("project", services.project.is_some()),
        ("compose_file", services.compose_file.is_some()),
        ("compose_command", !services.compose_command.is_empty()),
        ("docker_socket", services.docker_socket.is_some()),
    ];
    let used = keys_of_driver(driver);
    for (name, is_set) in set {
        if is_set && !used.contains(&name) {
            c.push(
                key(name),
                format!(
                    "not used by driver \"{}\" (it takes: {})",
                    driver.as_str(),
                    used.join(", ")
                ),
            );
        }
    }

    match driver {
        ServicesDriver::Command => {
            for (argv, name) in [
                (&services.start, "start"),
                (&services.stop, "stop"),
                (&services.status, "status"),
            ] {
                if argv.is_empty() || argv[0].is_empty() {
                    c.push(
                        key(name),
                        "the command driver needs this command (an argv list)",
                    );
                }
            }
        }
        ServicesDriver::Systemd => {
            if services.units.is_empty() {
                c.push(
                    key("units"),
                    "missing: the systemd driver needs the stack's units, e.g. [\"postfix.service\", \"dovecot.service\"]",
                );
            }
            for (i, unit) in services.units.iter().enumerate() {
                if let Err(error) = check_unit_name(unit) {
                    c.push(format!("services.units[{i}]"), error);
                }
            }
            if services
                .systemctl
                .as_ref()
                .is_some_and(|path| path.as_os_str().is_empty())
            {
                c.push(key("systemctl"), "must not be empty");
            }
        }
        ServicesDriver::Compose => {
            match &services.project {
                None => c.push(
                    key("project"),
                    "missing: the compose driver needs the compose project name (`-p`), e.g. \"mailcowdockerized\"",
                ),
                Some(project) => {
                    if let Err(error) = check_project_name(project) {
                        c.push(key("project"), error);
                    }
                }
            }
            match &services.compose_file {
                None => c.push(
                    key("compose_file"),
                    "missing: the compose driver needs the compose file, e.g. \"/opt/mailcow-dockerized/docker-compose.yml\"",
                ),
                Some(path) => require_absolute(c, key("compose_file"), path),
            }
            if services
                .compose_command
                .first()
                .is_some_and(|program| program.is_empty())
            {
                c.push(
                    key("compose_command"),
                    "the program (first element) must not be empty",
                );
            }
            if let Some(path) = &services.docker_socket {
                require_absolute(c, key("docker_socket"), path);
            }
        }
    }

    if services.start_timeout_ms == 0 {
        c.push(key("start_timeout_ms"), "must be above 0");
    }
    if services.stop_timeout_ms == 0 {
        c.push(key("stop_timeout_ms"), "must be above 0");
    }
}

/// A compose project name as compose accepts it: lowercase letters,
/// digits, `-` and `_`, starting with a letter or digit.
fn check_project_name(project: &str) -> Result<(), String> {
    let first_ok = project
        .chars()
        .next()
        .is_some_and(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit());
    let all_ok = project
        .chars()
        .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '-' | '_'));
    if first_ok && all_ok {
        Ok(())
    } else {
        Err(format!(
            "`{project}` is not a compose project name (lowercase letters, digits, `-_`, starting with a letter or digit)"
        ))
    }
}

pub(super) fn validate_preset(c: &mut Collector<'_>, config: &Config) {
    let Some(preset) = &config.preset else {
        return;
    };
    let is_witness = config
        .members
        .iter()
        .any(|m| m.name == config.node.name && m.role == MemberRole::Witness);
    if is_witness {
        c.push(
            "preset",
            "a witness never holds the master role; remove this section",
        );
    }
    let name = preset.name.as_str();
    let not_used = format!("not used by preset \"{name}\"");
    match preset.name {
        PresetName::Mailcow => {
            if preset.units.is_some() {
                c.push(
                    "preset.units",
                    format!("{not_used} (it takes: directory, project)"),
                );
            }
            if let Some(directory) = &preset.directory {
                require_absolute(c, "preset.directory".to_string(), directory);
            }
            if let Some(project) = &preset.project {
                if let Err(error) = check_project_name(project) {
                    c.push("preset.project", error);
                }
                // Compose labels are also Docker names (the docker checks).
                else if let Err(error) = check_docker_name(project) {
                    c.push("preset.project", error);
                }
            }
        }
        PresetName::Classic => {
            for (key, is_set) in [
                ("directory", preset.directory.is_some()),
                ("project", preset.project.is_some()),
            ] {
                if is_set {
                    c.push(
                        format!("preset.{key}"),
                        format!("{not_used} (it takes: units)"),
                    );
                }
            }
            if let Some(units) = &preset.units {
                if units.is_empty() {
                    c.push(
                        "preset.units",
                        "must name at least one unit (leave it out for postfix and dovecot)",
                    );
                }
                for (i, unit) in units.iter().enumerate() {
                    if let Err(error) = check_unit_name(unit) {
                        c.push(format!("preset.units[{i}]"), error);
                    }
                }
            }
        }
    }
}
