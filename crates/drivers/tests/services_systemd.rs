//! The `systemd` services driver against a fake `systemctl`: a shell script
//! that keeps each unit's state in a file and records every call. This
//! machine has no systemd as PID 1, so the real `systemctl` is used only
//! for the error it gives there.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::block_on;
use mailherd_config::{ServicesDriver, ServicesSection};
use mailherd_drivers::suite::services_suite;
use mailherd_drivers::{services_from_config, DriverError, Services};

const UNITS: [&str; 2] = ["postfix.service", "dovecot.service"];

/// A pretend systemctl. `$FAKE_SYSTEMD` (from the driver's env) holds
/// `calls` (one line per call), `known-UNIT` for each unit that exists,
/// `state-UNIT`, and switches: `fail-VERB` (the verb fails with the file's
/// text), `hang-VERB` (the verb never returns).
const FAKE_SYSTEMCTL: &str = r#"#!/bin/sh
dir="$FAKE_SYSTEMD"
echo "$*" >> "$dir/calls"
verb="$1"; shift
options=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do options="$options $1"; shift; done
[ "$1" = "--" ] && shift
if [ -f "$dir/hang-$verb" ]; then sleep 1000; fi
if [ -f "$dir/fail-$verb" ]; then cat "$dir/fail-$verb" >&2; exit 1; fi
state() { cat "$dir/state-$1" 2>/dev/null || echo inactive; }
known() {
    [ -f "$dir/known-$1" ] && return 0
    echo "Failed to $verb $1: Unit $1 not found." >&2
    exit 5
}
rc=0
case "$verb" in
    start)
        for unit; do known "$unit"; echo active > "$dir/state-$unit"; done ;;
    stop)
        for unit; do
            known "$unit"
            # A queued stop job leaves a running unit deactivating.
            case "$options" in
                *--no-block*)
                    [ "$(state "$unit")" = active ] && echo deactivating > "$dir/state-$unit" ;;
                *) echo inactive > "$dir/state-$unit" ;;
            esac
        done ;;
    kill)
        for unit; do
            known "$unit"
            if [ "$(state "$unit")" = inactive ]; then
                echo "Failed to kill unit $unit: No main process to kill" >&2
                rc=1
            else
                echo failed > "$dir/state-$unit"
            fi
        done ;;
    is-active)
        rc=3
        for unit; do
            state "$unit"
            [ "$(state "$unit")" = active ] && rc=0
        done ;;
    *) echo "Unknown command verb $verb." >&2; rc=1 ;;
esac
exit $rc
"#;

/// A temp dir with the fake systemctl and the units' files.
struct FakeSystemd {
    directory: tempfile::TempDir,
}

impl FakeSystemd {
    fn new() -> FakeSystemd {
        let directory = tempfile::tempdir().unwrap();
        let script = directory.path().join("systemctl");
        std::fs::write(&script, FAKE_SYSTEMCTL).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        for unit in UNITS {
            std::fs::write(directory.path().join(format!("known-{unit}")), "").unwrap();
        }
        FakeSystemd { directory }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.directory.path().join(name)
    }

    fn section(&self) -> ServicesSection {
        ServicesSection {
            units: UNITS.iter().map(|unit| unit.to_string()).collect(),
            systemctl: Some(self.file("systemctl")),
            env: BTreeMap::from([(
                "FAKE_SYSTEMD".to_string(),
                self.directory.path().display().to_string(),
            )]),
            ..ServicesSection::new(ServicesDriver::Systemd)
        }
    }

    fn driver(&self) -> Box<dyn Services> {
        services_from_config(&self.section()).expect("driver from config")
    }

    /// Every call so far, one string each; forgets them.
    fn take_calls(&self) -> Vec<String> {
        let calls = std::fs::read_to_string(self.file("calls")).unwrap_or_default();
        let _ = std::fs::remove_file(self.file("calls"));
        calls.lines().map(str::to_string).collect()
    }

    fn set(&self, name: &str, content: &str) {
        std::fs::write(self.file(name), content).unwrap();
    }

    fn state(&self, unit: &str) -> String {
        std::fs::read_to_string(self.file(&format!("state-{unit}")))
            .unwrap_or_else(|_| "inactive".to_string())
            .trim()
            .to_string()
    }
}

const BOTH: &str = "-- postfix.service dovecot.service";

#[test]
fn systemd_services_pass_the_suite() {
    let fake = FakeSystemd::new();
    let services = fake.driver();
    assert!(
        services
            .describe()
            .starts_with("systemd: postfix.service, dovecot.service via /"),
        "{}",
        services.describe()
    );
    block_on(services_suite(services.as_ref()));
}

#[test]
fn each_call_is_the_matching_systemctl_command_on_every_unit() {
    let fake = FakeSystemd::new();
    let services = fake.driver();
    let timeout = Duration::from_secs(5);
    block_on(async {
        services.start(timeout).await.expect("start");
        assert_eq!(fake.take_calls(), [format!("start {BOTH}")]);
        assert!(services.is_running().await.expect("is_running"));
        assert_eq!(fake.take_calls(), [format!("is-active {BOTH}")]);

        services.stop(timeout).await.expect("stop");
        assert_eq!(fake.take_calls(), [format!("stop {BOTH}")]);

        services.start(timeout).await.expect("start");
        fake.take_calls();
        // The stop job is queued before the kill, so that a unit with
        // `Restart=` is not restarted after the SIGKILL.
        services.kill(timeout).await.expect("kill");
        assert_eq!(
            fake.take_calls(),
            [
                format!("stop --no-block {BOTH}"),
                format!("kill --signal=SIGKILL {BOTH}"),
            ]
        );
    });
}

#[test]
fn one_unit_still_active_means_running() {
    let fake = FakeSystemd::new();
    fake.set("state-dovecot.service", "active\n");
    fake.set("state-postfix.service", "failed\n");
    assert!(block_on(fake.driver().is_running()).unwrap());
    fake.set("state-dovecot.service", "deactivating\n");
    assert!(block_on(fake.driver().is_running()).unwrap());
    fake.set("state-dovecot.service", "inactive\n");
    assert!(!block_on(fake.driver().is_running()).unwrap());
}

#[test]
fn a_stop_that_outlives_its_timeout_is_killed_and_the_units_are_killed() {
    let fake = FakeSystemd::new();
    let services = fake.driver();
    block_on(async {
        services.start(Duration::from_secs(5)).await.expect("start");
        fake.set("hang-stop", "");
        fake.take_calls();
        let started = Instant::now();
        services
            .stop(Duration::from_millis(300))
            .await
            .expect("a hanging stop falls back to the kill");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300),
            "returned after {took:?}"
        );
        assert!(took < Duration::from_secs(5), "took {took:?}");
    });
    // The hanging `stop` and the queued `stop --no-block` both hang (the
    // fake hangs every stop); the kill still runs and does its work.
    let calls = fake.take_calls();
    assert_eq!(calls[0], format!("stop {BOTH}"), "{calls:?}");
    assert!(
        calls.contains(&format!("kill --signal=SIGKILL {BOTH}")),
        "{calls:?}"
    );
    assert_eq!(fake.state("postfix.service"), "failed");
    assert_eq!(fake.state("dovecot.service"), "failed");
}

#[test]
fn a_failed_stop_and_a_failed_kill_are_both_reported() {
    let fake = FakeSystemd::new();
    let services = fake.driver();
    block_on(services.start(Duration::from_secs(5))).expect("start");
    fake.set(
        "fail-stop",
        "Failed to stop postfix.service: Access denied\n",
    );
    fake.set(
        "fail-kill",
        "Failed to kill unit postfix.service: Access denied\n",
    );
    let error = block_on(services.stop(Duration::from_secs(2))).unwrap_err();
    match &error {
        DriverError::StopAndKillFailed { stop, kill } => {
            assert!(stop.to_string().contains("Access denied"), "{stop}");
            assert!(kill.to_string().contains("Access denied"), "{kill}");
        }
        other => panic!("expected StopAndKillFailed, got {other}"),
    }
    assert!(
        error
            .to_string()
            .starts_with("stop failed (systemctl stop `"),
        "{error}"
    );
}

#[test]
fn killing_units_that_are_already_down_is_fine() {
    let fake = FakeSystemd::new();
    // The fake's kill fails on inactive units, as systemctl does ("No main
    // process to kill"); the read-back says nothing runs.
    block_on(fake.driver().kill(Duration::from_secs(2))).expect("kill of stopped units");
    let calls = fake.take_calls();
    assert_eq!(
        calls.last().unwrap(),
        &format!("is-active {BOTH}"),
        "{calls:?}"
    );
}

#[test]
fn a_unit_that_does_not_exist_fails_the_start_with_systemctls_words() {
    let fake = FakeSystemd::new();
    let section = ServicesSection {
        units: vec!["postfix.service".into(), "dovecott.service".into()],
        ..fake.section()
    };
    let services = services_from_config(&section).unwrap();
    let error = block_on(services.start(Duration::from_secs(5))).unwrap_err();
    let text = error.to_string();
    assert!(text.starts_with("systemctl start `"), "{text}");
    assert!(text.contains("exit status: 5"), "{text}");
    assert!(text.contains("Unit dovecott.service not found."), "{text}");
}

#[test]
fn a_start_that_hangs_is_bounded_by_the_start_timeout() {
    let fake = FakeSystemd::new();
    fake.set("hang-start", "");
    let started = Instant::now();
    let error = block_on(fake.driver().start(Duration::from_millis(300))).unwrap_err();
    assert!(
        matches!(error, DriverError::Timeout { after_ms: 300, .. }),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn without_systemd_the_state_is_an_error_not_stopped() {
    // This machine's real systemctl: no systemd as PID 1, no bus. It prints
    // no state, so "stopped" would be a guess.
    if !std::path::Path::new("/usr/bin/systemctl").exists()
        && !std::path::Path::new("/bin/systemctl").exists()
    {
        eprintln!("SKIPPED: no systemctl on this machine");
        return;
    }
    if std::fs::read_to_string("/proc/1/comm").is_ok_and(|comm| comm.trim() == "systemd") {
        eprintln!("SKIPPED: systemd runs here; the no-systemd error cannot be seen");
        return;
    }
    let section = ServicesSection {
        units: vec!["mailherd-test-none.service".to_string()],
        ..ServicesSection::new(ServicesDriver::Systemd)
    };
    let services = services_from_config(&section).unwrap();
    let error = block_on(services.is_running()).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("systemctl is-active `systemctl` failed"),
        "{error}"
    );
}

#[test]
fn a_missing_systemctl_cannot_be_run() {
    let section = ServicesSection {
        systemctl: Some(PathBuf::from("/nonexistent/systemctl")),
        ..FakeSystemd::new().section()
    };
    let error = block_on(services_from_config(&section).unwrap().is_running()).unwrap_err();
    assert!(
        matches!(error, DriverError::Spawn { .. }),
        "expected Spawn, got {error}"
    );
    assert!(
        error.to_string().contains("/nonexistent/systemctl"),
        "{error}"
    );
}

#[test]
fn a_section_without_units_is_refused() {
    let section = ServicesSection::new(ServicesDriver::Systemd);
    match services_from_config(&section) {
        Err(DriverError::InvalidConfig { reason, .. }) => {
            assert!(reason.contains("at least one unit"), "{reason}")
        }
        Err(other) => panic!("expected InvalidConfig, got {other}"),
        Ok(_) => panic!("a systemd driver without units was built"),
    }
}
