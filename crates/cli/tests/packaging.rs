//! What `scripts/package.sh` puts in the .deb, checked without building
//! it (a release build is too slow for the test suite): the man page and
//! completions the binary generates, the systemd unit, and that every
//! shipped example config validates with `mailherd config validate`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn mailherd(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mailherd"))
        .args(args)
        .output()
        .expect("running mailherd");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_man_page_is_roff_with_every_visible_command() {
    let (ok, page, stderr) = mailherd(&["man"]);
    assert!(ok, "{stderr}");
    assert!(page.contains(".TH mailherd 1"), "no title header");
    for command in ["AGENT", "STATUS", "SWITCHOVER", "SIGNUP", "CONFIG", "TLS"] {
        assert!(
            page.contains(&format!(".SH \"MAILHERD {command}\"")),
            "no section for {command}"
        );
    }
    assert!(page.contains("\\-\\-config"), "options are rendered");
    // Hidden helpers stay out of the page.
    assert!(!page.contains("MAILHERD MAN\""));
    assert!(!page.contains("MAILHERD COMPLETIONS\""));
}

#[test]
fn the_man_page_renders_with_man_where_installed() {
    if !Path::new("/usr/bin/man").exists() {
        eprintln!("SKIPPED: /usr/bin/man is not installed (Debian package man-db)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mailherd.1");
    std::fs::write(&file, mailherd(&["man"]).1).unwrap();
    let output = Command::new("man")
        .arg("-l")
        .arg(&file)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("High-availability orchestrator"), "{text}");
    assert!(text.contains("signup"), "{text}");
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let (ok, script, stderr) = mailherd(&["completions", shell]);
        assert!(ok, "{shell}: {stderr}");
        assert!(
            script.contains("switchover") && script.contains("signup"),
            "{shell}"
        );
    }
    let (ok, _, _) = mailherd(&["completions", "tcsh"]);
    assert!(!ok, "an unknown shell is a usage error");
}

#[test]
fn the_unit_restarts_always_and_keeps_netlink_mount_and_watchdog() {
    let unit = std::fs::read_to_string(repo().join("packaging/mailherd.service")).unwrap();
    let lines: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let has = |line: &str| lines.contains(&line);
    assert!(has(
        "ExecStart=/usr/bin/mailherd agent --config /etc/mailherd/mailherd.toml"
    ));
    assert!(has("Restart=always"));
    assert!(has("DeviceAllow=/dev/watchdog rw"));
    let value = |key: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}="))
    };
    let caps = value("CapabilityBoundingSet");
    for cap in ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_ADMIN"] {
        assert!(caps.split_whitespace().any(|c| c == cap), "{cap} missing");
    }
    let families = value("RestrictAddressFamilies");
    for family in ["AF_NETLINK", "AF_PACKET", "AF_INET"] {
        assert!(
            families.split_whitespace().any(|f| f == family),
            "{family} missing"
        );
    }
    // A private mount namespace would hide the agent's mounts from the
    // mail stack.
    for key in [
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ReadWritePaths",
        "MountFlags",
    ] {
        assert!(
            !lines.iter().any(|l| l.starts_with(&format!("{key}="))),
            "{key} must not be set"
        );
    }
}

#[test]
fn every_shipped_example_config_validates() {
    let mut examples: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    examples.sort();
    let names: Vec<String> = examples
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for needed in [
        "classic-2-nodes-witness.toml",
        "hetzner-mailcow.toml",
        "mailherd.toml",
    ] {
        assert!(
            names.iter().any(|n| n == needed),
            "examples/{needed} missing: {names:?}"
        );
    }
    for example in &examples {
        let (ok, stdout, stderr) = mailherd(&["config", "validate", example.to_str().unwrap()]);
        assert!(ok, "{}: {stdout}{stderr}", example.display());
        assert!(stdout.contains(": ok"), "{stdout}");
    }
}
