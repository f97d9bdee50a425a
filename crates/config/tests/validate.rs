//! Config validation, table-driven: each case breaks the example config in
//! one way and names the line and key the operator must look at.

mod common;

use common::{line_starting, parse, problem_about, EXAMPLE};
use std::path::Path;

/// Applies `edit` (from → to) to the example and expects a problem at
/// `line` about `key` whose message contains `needle`.
fn check(from: &str, to: &str, line: usize, key: &str, needle: &str) {
    assert!(EXAMPLE.contains(from), "the example lacks {from:?}");
    let text = EXAMPLE.replacen(from, to, 1);
    let problems = parse(&text).expect_err("the broken config must be rejected");
    let found = problems
        .0
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("no problem for key {key}; got:\n{problems}"));
    assert_eq!(found.line, Some(line), "line of {key}; got:\n{problems}");
    assert!(
        found.message.contains(needle),
        "message {:?} lacks {needle:?}",
        found.message
    );
    assert!(found
        .to_string()
        .starts_with(&format!("node.toml:{line}: {key}: ")));
}

#[test]
fn the_example_is_valid() {
    let config = parse(EXAMPLE).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(config.me().id, 1);
    assert_eq!(config.cluster.timing().lease.lease_ms, 500);
}

#[test]
fn broken_configs_name_file_line_and_key() {
    check(
        "name = \"n1\"\ndata_dir",
        "name = \"n9\"\ndata_dir",
        6,
        "node.name",
        "not among the members",
    );
    check(
        "id = 2",
        "id = 1",
        22,
        "members[1].id",
        "already used by members[0]",
    );
    check(
        "192.0.2.100/24",
        "192.0.2.100",
        39,
        "floating_ip.address",
        "prefix length",
    );
    check(
        "mount_point = \"/srv/mail\"",
        "mount_point = \"srv/mail\"",
        46,
        "volumes[0].mount_point",
        "absolute",
    );
    check(
        "timing = \"fast\"        # or",
        "lease_ms = 500\nrenew_interval_ms = 400\n# or",
        11,
        "cluster.lease_ms",
        "renew_interval_ms",
    );
    check(
        "start = [\"/bin/sh\", \"-c\", \"postfix start && dovecot\"]",
        "start = []",
        50,
        "services.start",
        "argv",
    );
}

#[test]
fn syntax_and_type_errors_name_the_key() {
    let text = EXAMPLE.replacen("id = 3", "id = \"three\"", 1);
    let problems = parse(&text).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems.0[0].key, "members[2].id");
    assert_eq!(problems.0[0].line, Some(28));

    let text = EXAMPLE.replacen("[api]", "[api]\nlisten_typo = 1", 1);
    let problems = parse(&text).unwrap_err();
    assert!(problems.0[0].message.contains("listen_typo"), "{problems}");
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = EXAMPLE.replacen("id = 2", "id = 1", 1).replacen(
        "interface = \"eth0\"",
        "interface = \"\"",
        1,
    );
    let problems = parse(&text).unwrap_err();
    assert!(problems.len() >= 2, "{problems}");
}

#[test]
fn a_witness_must_not_hold_resources() {
    let text = EXAMPLE.replacen("id = 1\n", "id = 1\nrole = \"witness\"\n", 1);
    let problems = parse(&text).unwrap_err();
    assert!(
        problems
            .0
            .iter()
            .any(|p| p.key == "floating_ip" && p.message.contains("witness")),
        "{problems}"
    );
}

const TLS_SECTION: &str = "\n[tls]\nca_file = \"/etc/mailherd/tls/ca.pem\"\ncert_file = \"/etc/mailherd/tls/n1.pem\"\nkey_file = \"/etc/mailherd/tls/n1.key\"\n";

#[test]
fn a_tls_section_with_absolute_paths_is_valid() {
    let text = format!("{EXAMPLE}{TLS_SECTION}");
    let config = parse(&text).unwrap_or_else(|p| panic!("{p}"));
    let tls = config.tls.expect("the [tls] section is parsed");
    let files = tls.files().expect("all three files are named");
    assert_eq!(files.key_file, Path::new("/etc/mailherd/tls/n1.key"));
    assert!(parse(EXAMPLE).unwrap().tls.is_none());
}

#[test]
fn tls_paths_must_be_absolute_and_complete() {
    let base_lines = EXAMPLE.lines().count();
    let relative = TLS_SECTION.replacen("\"/etc/mailherd/tls/n1.pem\"", "\"n1.pem\"", 1);
    let problems = parse(&format!("{EXAMPLE}{relative}")).unwrap_err();
    let found = problems
        .0
        .iter()
        .find(|p| p.key == "tls.cert_file")
        .unwrap_or_else(|| panic!("no problem for tls.cert_file; got:\n{problems}"));
    // The section starts after the example's last line and one blank line.
    assert_eq!(found.line, Some(base_lines + 4), "{problems}");
    assert!(found.message.contains("absolute"), "{problems}");
    assert!(found
        .to_string()
        .starts_with(&format!("node.toml:{}: tls.cert_file: ", base_lines + 4)));

    let incomplete = TLS_SECTION.replacen("key_file = \"/etc/mailherd/tls/n1.key\"\n", "", 1);
    let problems = parse(&format!("{EXAMPLE}{incomplete}")).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems}");
    assert_eq!(problems.0[0].key, "tls.key_file", "{problems}");
    // A missing key is reported at its section's header.
    assert_eq!(problems.0[0].line, Some(base_lines + 2), "{problems}");
    assert!(problems.0[0].message.contains("missing"), "{problems}");
}

/// The problem about `key` when `section` is appended to the example.
fn watchdog_problem(section: &str, key: &str) -> (usize, String) {
    let problems = parse(&format!("{EXAMPLE}{section}")).unwrap_err();
    let found = problems
        .0
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("no problem for {key}; got:\n{problems}"));
    (found.line.unwrap(), found.message.clone())
}

#[test]
fn the_watchdog_is_automatic_by_default_and_its_timeout_follows_the_lease() {
    let config = parse(EXAMPLE).unwrap();
    assert_eq!(
        config.watchdog.mode,
        mailherd_config::WatchdogMode::Automatic
    );
    let lease = config.cluster.timing().lease;
    // The fast profile's 500 ms lease is too short for whole seconds: in
    // automatic mode that only means the device is not used.
    assert!(config.watchdog.timeout_ms(&lease).is_err());

    let socket = "\n[watchdog]\ndriver = \"socket\"\npath = \"/run/wd.sock\"\n";
    let config = parse(&format!("{EXAMPLE}{socket}")).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(config.watchdog.timeout_ms(&lease), Ok(300));

    let safe = EXAMPLE.replacen("timing = \"fast\"", "timing = \"safe\"", 1);
    let required = "\n[watchdog]\nmode = \"required\"\n";
    let config = parse(&format!("{safe}{required}")).unwrap_or_else(|p| panic!("{p}"));
    // Lease 3000 ms, renewals every 600 ms: 1800 ms, rounded down to 1 s.
    assert_eq!(
        config.watchdog.timeout_ms(&config.cluster.timing().lease),
        Ok(1_000)
    );
}

#[test]
fn a_watchdog_that_cannot_protect_the_lease_is_refused() {
    let base_lines = EXAMPLE.lines().count();
    let (line, message) = watchdog_problem("\n[watchdog]\nmode = \"required\"\n", "watchdog.mode");
    assert_eq!(line, base_lines + 3);
    assert!(message.contains("whole seconds"), "{message}");

    let (line, message) = watchdog_problem(
        "\n[watchdog]\ndriver = \"socket\"\npath = \"/run/wd.sock\"\ntimeout_ms = 450\n",
        "watchdog.timeout_ms",
    );
    assert_eq!(line, base_lines + 5);
    assert!(message.contains("at most"), "{message}");

    let (_, message) = watchdog_problem(
        "\n[watchdog]\ndriver = \"socket\"\npath = \"/run/wd.sock\"\ntimeout_ms = 100\n",
        "watchdog.timeout_ms",
    );
    assert!(message.contains("short stall"), "{message}");

    let (_, message) = watchdog_problem("\n[watchdog]\npath = \"wd\"\n", "watchdog.path");
    assert!(message.contains("absolute"), "{message}");

    // Off means off: nothing is checked.
    parse(&format!(
        "{EXAMPLE}\n[watchdog]\nmode = \"off\"\ntimeout_ms = 7\n"
    ))
    .unwrap();
}

/// The example with its floating IP and volume moved to the hetzner
/// drivers; `[hetzner]` is appended by the cases.
fn hetzner_example() -> String {
    EXAMPLE
        .replacen(
            "driver = \"local\"\naddress = \"192.0.2.100/24\"",
            "driver = \"hetzner\"\nfloating_ip_id = 41\naddress = \"192.0.2.100\"",
            1,
        )
        .replacen(
            "driver = \"local\"\ndevice = \"/dev/disk/by-id/scsi-0SHARED_mail\"",
            "driver = \"hetzner\"\nvolume_id = 7",
            1,
        )
}

const HETZNER_SECTION: &str =
    "\n[hetzner]\ntoken_file = \"/etc/mailherd/hcloud-token\"\nserver_id = 3\n";

#[test]
fn hetzner_drivers_with_a_hetzner_section_are_valid_with_defaults() {
    let text = format!("{}{HETZNER_SECTION}", hetzner_example());
    let config = parse(&text).unwrap_or_else(|p| panic!("{p}"));
    let fip = config.floating_ip.unwrap();
    assert_eq!(fip.driver, mailherd_config::FloatingIpDriver::Hetzner);
    assert_eq!(fip.floating_ip_id, Some(41));
    assert_eq!(config.volumes[0].volume_id, Some(7));
    assert_eq!(config.volumes[0].device, None);
    let hetzner = config.hetzner.unwrap();
    assert_eq!(hetzner.api_url, "https://api.hetzner.cloud/v1");
    assert_eq!(hetzner.metadata_url, "http://169.254.169.254");
    assert_eq!(hetzner.server_id, Some(3));
    assert_eq!(hetzner.action_timeout_ms, 60_000);
    assert_eq!(hetzner.poll_interval_ms, 500);

    // Without server_id (the metadata service) and token_file (HCLOUD_TOKEN).
    let text = format!("{}\n[hetzner]\n", hetzner_example());
    let config = parse(&text).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(config.hetzner.unwrap().server_id, None);

    // A /32 is what the driver adds anyway.
    let text = format!("{}{HETZNER_SECTION}", hetzner_example()).replacen(
        "address = \"192.0.2.100\"",
        "address = \"192.0.2.100/32\"",
        1,
    );
    parse(&text).unwrap_or_else(|p| panic!("{p}"));
}

#[test]
fn a_hetzner_driver_without_a_hetzner_section_names_the_driver_key() {
    let text = hetzner_example();
    let (line, message) = problem_about(&text, "floating_ip.driver");
    assert_eq!(line, 38);
    assert!(message.contains("[hetzner]"), "{message}");
    let (line, message) = problem_about(&text, "volumes[0].driver");
    assert_eq!(line, 45);
    assert!(message.contains("[hetzner]"), "{message}");
}

#[test]
fn broken_hetzner_settings_name_file_line_and_key() {
    let base = format!("{}{HETZNER_SECTION}", hetzner_example());
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        // (from, to, key, line starting with, needle)
        (
            "floating_ip_id = 41\n",
            "",
            "floating_ip.floating_ip_id",
            "[floating_ip]",
            "missing",
        ),
        (
            "floating_ip_id = 41",
            "floating_ip_id = 0",
            "floating_ip.floating_ip_id",
            "floating_ip_id",
            "1 or more",
        ),
        (
            "address = \"192.0.2.100\"",
            "address = \"192.0.2.100/24\"",
            "floating_ip.address",
            "address = \"192.0.2.100/24\"",
            "/32",
        ),
        (
            "address = \"192.0.2.100\"",
            "address = \"2001:db8::1\"",
            "floating_ip.address",
            "address = \"2001:db8::1\"",
            "IPv4",
        ),
        (
            "volume_id = 7\n",
            "",
            "volumes[0].volume_id",
            "[[volumes]]",
            "missing",
        ),
        (
            "volume_id = 7",
            "volume_id = 7\ndevice = \"/dev/sdb\"",
            "volumes[0].device",
            "device = \"/dev/sdb\"",
            "linux_device",
        ),
        (
            "server_id = 3",
            "server_id = 0",
            "hetzner.server_id",
            "server_id = 0",
            "1 or more",
        ),
        (
            "token_file = \"/etc/mailherd/hcloud-token\"",
            "token_file = \"hcloud-token\"",
            "hetzner.token_file",
            "token_file = \"hcloud-token\"",
            "absolute",
        ),
        (
            "server_id = 3",
            "server_id = 3\napi_url = \"ftp://api\"",
            "hetzner.api_url",
            "api_url",
            "http://",
        ),
        (
            "server_id = 3",
            "server_id = 3\nmetadata_url = \"http://\"",
            "hetzner.metadata_url",
            "metadata_url",
            "host",
        ),
        (
            "server_id = 3",
            "server_id = 3\naction_timeout_ms = 0",
            "hetzner.action_timeout_ms",
            "action_timeout_ms",
            "above 0",
        ),
        (
            "server_id = 3",
            "server_id = 3\naction_timeout_ms = 1000\npoll_interval_ms = 1000",
            "hetzner.poll_interval_ms",
            "poll_interval_ms",
            "below action_timeout_ms",
        ),
        (
            "server_id = 3",
            "server_id = \"three\"",
            "hetzner.server_id",
            "server_id",
            "expected u64",
        ),
    ];
    for (from, to, key, line_start, needle) in cases {
        assert!(base.contains(from), "the hetzner example lacks {from:?}");
        let text = base.replacen(from, to, 1);
        let (line, message) = problem_about(&text, key);
        assert_eq!(
            line,
            line_starting(&text, line_start, 1),
            "line of {key} after {from:?} -> {to:?}"
        );
        assert!(
            message.contains(needle),
            "{key}: {message:?} lacks {needle:?}"
        );
    }
}

#[test]
fn local_drivers_refuse_the_hetzner_ids_and_need_a_device() {
    let text = EXAMPLE.replacen(
        "interface = \"eth0\"",
        "interface = \"eth0\"\nfloating_ip_id = 4",
        1,
    );
    let (_, message) = problem_about(&text, "floating_ip.floating_ip_id");
    assert!(message.contains("only the hetzner driver"), "{message}");
    let text = EXAMPLE.replacen("device = \"/dev/disk/by-id/scsi-0SHARED_mail\"\n", "", 1);
    let (line, message) = problem_about(&text, "volumes[0].device");
    assert_eq!(line, 42);
    assert!(message.contains("missing"), "{message}");
}

#[test]
fn reconciler_and_gc_default_and_refuse_what_cannot_work() {
    let config = parse(EXAMPLE).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(config.reconciler.interval_ms, 3_000);
    assert_eq!(config.gc.interval_s, 300);
    assert_eq!(config.gc.history_retention_days, 30);

    let base_lines = EXAMPLE.lines().count();
    for (section, key, line, needle) in [
        (
            "\n[reconciler]\ninterval_ms = 50\n",
            "reconciler.interval_ms",
            base_lines + 3,
            "at least 200 (got 50)",
        ),
        (
            "\n[gc]\ninterval_s = 2\n",
            "gc.interval_s",
            base_lines + 3,
            "at least 10 (got 2)",
        ),
        (
            "\n[gc]\nhistory_retention_days = 0\n",
            "gc.history_retention_days",
            base_lines + 3,
            "at least 1",
        ),
        (
            "\n[reconciler]\ninterval_ms = 3000\nevery = 2\n",
            "reconciler.every",
            base_lines + 4,
            "unknown field",
        ),
    ] {
        let (found_line, message) = problem_about(&format!("{EXAMPLE}{section}"), key);
        assert_eq!(found_line, line, "{key}: {message}");
        assert!(message.contains(needle), "{key}: {message}");
    }

    // The retention must cover the breaker's window, which counts
    // failovers from that very history.
    let long_window = EXAMPLE.replacen("[cluster]\n", "[cluster]\nbreaker_window_s = 864000\n", 1);
    let (line, message) = problem_about(
        &format!("{long_window}\n[gc]\nhistory_retention_days = 7\n"),
        "gc.history_retention_days",
    );
    assert_eq!(line, long_window.lines().count() + 3);
    assert!(
        message.contains("shorter than cluster.breaker_window_s (864000 s)"),
        "{message}"
    );

    // Zero turns either worker off.
    let off = "\n[reconciler]\ninterval_ms = 0\n\n[gc]\ninterval_s = 0\n";
    let config = parse(&format!("{EXAMPLE}{off}")).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(
        (config.reconciler.interval_ms, config.gc.interval_s),
        (0, 0)
    );
}

/// The example's shared volume turned into a replicated one.
fn replicated_example(driver: &str, replication: &str) -> String {
    let shared = "driver = \"local\"\ndevice = \"/dev/disk/by-id/scsi-0SHARED_mail\"\n";
    assert!(EXAMPLE.contains(shared), "the example's volume changed");
    let text = EXAMPLE.replacen(shared, &format!("driver = \"{driver}\"\n"), 1);
    format!("{text}\n[volumes.replication]\n{replication}")
}

#[test]
fn replicated_volumes_need_a_pool_and_sane_settings() {
    let config = parse(&replicated_example("btrfs", "pool = \"/srv/pool\"\n"))
        .unwrap_or_else(|p| panic!("{p}"));
    let replication = config.volumes[0].replication.as_ref().expect("replication");
    assert_eq!(
        (
            replication.interval_ms,
            replication.keep,
            replication.send_timeout_ms
        ),
        (10_000, 6, 300_000)
    );
    parse(&replicated_example("zfs", "pool = \"tank/mailherd\"\n"))
        .unwrap_or_else(|p| panic!("{p}"));

    for (driver, replication, key, needle) in [
        (
            "btrfs",
            "pool = \"srv/pool\"\n",
            "pool",
            "absolute directory",
        ),
        ("zfs", "pool = \"/tank\"\n", "pool", "ZFS dataset name"),
        ("zfs", "pool = \"tank@x\"\n", "pool", "ZFS dataset name"),
        (
            "btrfs",
            "pool = \"/p\"\ninterval_ms = 10\n",
            "interval_ms",
            "at least 1000",
        ),
        ("btrfs", "pool = \"/p\"\nkeep = 1\n", "keep", "at least 2"),
        (
            "btrfs",
            "pool = \"/p\"\ninterval_ms = 60000\nsend_timeout_ms = 5000\n",
            "send_timeout_ms",
            "at least interval_ms",
        ),
    ] {
        let text = replicated_example(driver, replication);
        let (_, message) = problem_about(&text, &format!("volumes[0].replication.{key}"));
        assert!(
            message.contains(needle),
            "{driver} {replication:?}: {message}"
        );
    }

    // A replicated driver without its section, and a section on a shared
    // volume, are both named.
    let text = EXAMPLE.replacen(
        "driver = \"local\"\ndevice = \"/dev/disk/by-id/scsi-0SHARED_mail\"\n",
        "driver = \"btrfs\"\n",
        1,
    );
    let (_, message) = problem_about(&text, "volumes[0].replication");
    assert!(message.contains("needs [volumes.replication]"), "{message}");
    let text = format!("{EXAMPLE}\n[volumes.replication]\npool = \"/p\"\n");
    let (_, message) = problem_about(&text, "volumes[0].replication");
    assert!(
        message.contains("only the btrfs and zfs drivers"),
        "{message}"
    );
    let text = replicated_example("btrfs", "pool = \"/p\"\n").replacen(
        "driver = \"btrfs\"\n",
        "driver = \"btrfs\"\ndevice = \"/dev/sdb\"\n",
        1,
    );
    let (_, message) = problem_about(&text, "volumes[0].device");
    assert!(
        message.contains("lives in its replication pool"),
        "{message}"
    );
}
