//! What `scripts/package.sh` puts in the .deb: the man page and
//! completions the binary generates, the systemd unit, that every shipped
//! example config validates with `mailherd config validate`, and the .deb
//! itself, built by the script from this debug binary
//! (`MAILHERD_PACKAGE_BINARY`; a release build is too slow for the test
//! suite) into a temporary directory and unpacked there with `dpkg -x`.
//! Nothing is installed.

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
    // Nested commands get sections of their own, with their options.
    for command in ["MEMBERS ADD", "TLS INIT-CA", "BREAKER RESET"] {
        assert!(
            page.contains(&format!(".SH \"MAILHERD {command}\"")),
            "no section for {command}"
        );
    }
    assert!(page.contains("\\-\\-member\\-api"), "members add's options");
    // One page: the command lists name commands, not pages such as
    // mailherd-agent(1) that are not installed.
    assert!(!page.contains("(1)"), "a reference to another page");
    assert!(page.contains("mailherd members add"));
    assert!(!page.contains("MAILHERD HELP"));
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

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `Field: value` of `dpkg-deb --info`.
fn control_field<'a>(info: &'a str, field: &str) -> &'a str {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{field}: ")))
        .unwrap_or_else(|| panic!("no {field} in the control file:\n{info}"))
}

#[test]
fn package_sh_builds_a_deb_with_everything_from_this_binary() {
    let out = tempfile::tempdir().unwrap();
    let built = run(Command::new("bash")
        .arg(repo().join("scripts/package.sh"))
        .env("MAILHERD_PACKAGE_BINARY", env!("CARGO_BIN_EXE_mailherd"))
        .env("MAILHERD_PACKAGE_OUT", out.path()));
    let version = env!("CARGO_PKG_VERSION");
    let arch = run(Command::new("dpkg").arg("--print-architecture"));
    let deb = out
        .path()
        .join(format!("mailherd_{version}_{}.deb", arch.trim()));
    assert!(deb.is_file(), "no {}:\n{built}", deb.display());
    assert!(built.contains("no build"), "it built instead:\n{built}");

    let info = run(Command::new("dpkg-deb").arg("--info").arg(&deb));
    assert_eq!(control_field(&info, "Package"), "mailherd");
    assert_eq!(control_field(&info, "Version"), version);
    assert_eq!(control_field(&info, "Architecture"), arch.trim());
    let depends = control_field(&info, "Depends");
    assert!(depends.starts_with("libc6 (>= 2."), "{depends}");
    // Rust's std unwinds with libgcc_s.
    assert!(depends.contains("libgcc-s1"), "{depends}");
    let installed_kib: u64 = control_field(&info, "Installed-Size").parse().unwrap();
    assert!(installed_kib > 1000, "Installed-Size {installed_kib} KiB");
    for script in ["postinst", "prerm", "postrm"] {
        assert!(info.contains(script), "no {script}:\n{info}");
    }

    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let entry = |path: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" ./{path}")))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"))
    };
    let binary = entry("usr/bin/mailherd");
    assert!(binary.starts_with("-rwxr-xr-x root/root"), "{binary}");
    for path in [
        "lib/systemd/system/mailherd.service",
        "lib/systemd/system/mailherd-signup.service",
        "usr/share/man/man1/mailherd.1.gz",
        "usr/share/bash-completion/completions/mailherd",
        "usr/share/zsh/vendor-completions/_mailherd",
        "usr/share/fish/vendor_completions.d/mailherd.fish",
        "usr/share/doc/mailherd/copyright",
        "usr/share/doc/mailherd/changelog.gz",
    ] {
        let line = entry(path);
        assert!(line.starts_with("-rw-r--r-- root/root"), "{line}");
    }
    assert!(entry("etc/mailherd/").starts_with("drwxr-xr-x root/root"));

    let root = tempfile::tempdir().unwrap();
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(root.path()));
    let unpacked = |path: &str| root.path().join(path);
    let version_line = run(Command::new(unpacked("usr/bin/mailherd")).arg("--version"));
    assert_eq!(version_line.trim(), format!("mailherd {version}"));
    // Stripped: no symbol table left.
    let symbols = Command::new("objdump")
        .arg("--syms")
        .arg(unpacked("usr/bin/mailherd"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&symbols.stdout).contains("no symbols"),
        "usr/bin/mailherd is not stripped"
    );
    for unit in ["mailherd.service", "mailherd-signup.service"] {
        assert_eq!(
            std::fs::read(unpacked(&format!("lib/systemd/system/{unit}"))).unwrap(),
            std::fs::read(repo().join("packaging").join(unit)).unwrap(),
            "{unit} differs from packaging/{unit}"
        );
    }
    let page = run(Command::new("gzip")
        .arg("-dc")
        .arg(unpacked("usr/share/man/man1/mailherd.1.gz")));
    assert_eq!(page, mailherd(&["man"]).1, "the man page is `mailherd man`");
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/mailherd"),
        ("zsh", "usr/share/zsh/vendor-completions/_mailherd"),
        ("fish", "usr/share/fish/vendor_completions.d/mailherd.fish"),
    ] {
        assert_eq!(
            std::fs::read_to_string(unpacked(path)).unwrap(),
            mailherd(&["completions", shell]).1,
            "{path} is `mailherd completions {shell}`"
        );
    }
    let mut examples: Vec<String> = std::fs::read_dir(repo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    examples.sort();
    assert!(!examples.is_empty());
    for example in &examples {
        let shipped = unpacked(&format!("usr/share/doc/mailherd/examples/{example}"));
        assert_eq!(
            std::fs::read(&shipped).unwrap_or_else(|e| panic!("{}: {e}", shipped.display())),
            std::fs::read(repo().join("examples").join(example)).unwrap(),
            "{example}"
        );
    }
    let etc: Vec<_> = std::fs::read_dir(unpacked("etc/mailherd"))
        .unwrap()
        .collect();
    assert!(etc.is_empty(), "the package ships no config of its own");

    maintainer_scripts_never_start_or_restart_the_agent(&deb);
}

/// Runs the package's maintainer scripts as dpkg would on a systemd host,
/// but in a private mount namespace whose /run says systemd runs, with a
/// `systemctl` on PATH that only records its arguments (and says the
/// agent is active): nothing on this machine is touched.
fn maintainer_scripts_never_start_or_restart_the_agent(deb: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&control));
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let systemctl = bin.join("systemctl");
    std::fs::write(
        &systemctl,
        "#!/bin/sh\necho \"$*\" >> \"$SYSTEMCTL_LOG\"\nexit 0\n",
    )
    .unwrap();
    std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = dir.path().join("systemctl.log");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let calls = |script: &str, args: &[&str]| -> (Vec<String>, String) {
        let _ = std::fs::remove_file(&log);
        let stdout = run(Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && exec sh \"$0\" \"$@\"")
            .arg(control.join(script))
            .args(args)
            .env("PATH", &path)
            .env("SYSTEMCTL_LOG", &log));
        let calls = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        (calls, stdout)
    };
    // A first install only tells systemd about the units.
    assert_eq!(calls("postinst", &["configure"]).0, ["daemon-reload"]);
    // An upgrade with the agent running leaves it running, and says so.
    let (upgrade, said) = calls("postinst", &["configure", "0.0.9"]);
    assert_eq!(upgrade, ["daemon-reload", "is-active --quiet mailherd"]);
    assert!(said.contains("systemctl restart mailherd"), "{said}");
    assert!(calls("prerm", &["upgrade", "0.1.1"]).0.is_empty());
    // Removing stops both services (the agent demotes cleanly).
    assert_eq!(
        calls("prerm", &["remove"]).0,
        ["stop mailherd-signup mailherd"]
    );
    assert_eq!(calls("postrm", &["remove"]).0, ["daemon-reload"]);
    assert_eq!(calls("postrm", &["purge"]).0, ["daemon-reload"]);
}

#[test]
fn package_sh_refuses_a_binary_of_another_version_or_none() {
    use std::os::unix::fs::PermissionsExt;
    let out = tempfile::tempdir().unwrap();
    let fake = out.path().join("mailherd");
    std::fs::write(&fake, "#!/bin/sh\necho mailherd 0.0.1\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (binary, expected) in [
        (fake.clone(), "the workspace is at".to_string()),
        (
            out.path().join("missing"),
            "is not an executable file".to_string(),
        ),
    ] {
        let output = Command::new("bash")
            .arg(repo().join("scripts/package.sh"))
            .env("MAILHERD_PACKAGE_BINARY", &binary)
            .env("MAILHERD_PACKAGE_OUT", out.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{}", binary.display());
        assert!(
            stderr.contains(&binary.display().to_string()) && stderr.contains(&expected),
            "{stderr}"
        );
    }
    let debs: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "deb"))
        .collect();
    assert!(debs.is_empty(), "a .deb was written anyway");
}
