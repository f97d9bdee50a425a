//! The `command` services driver against a pretend mail stack: a shell
//! script whose "daemon" is a `sleep` with a pidfile.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::block_on;
use mailherd_config::{ServicesDriver, ServicesSection};
use mailherd_drivers::suite::services_suite;
use mailherd_drivers::{services_from_config, DriverError, Services};

const STACK_SCRIPT: &str = r#"#!/bin/sh
# A pretend mail stack. STACK_DIR comes from the driver's configured env.
pidfile="$STACK_DIR/pid"
alive() {
    [ -f "$1" ] || return 1
    state=$(awk '{print $3}' "/proc/$(cat "$1")/stat" 2>/dev/null) || return 1
    # A killed daemon may linger as a zombie until init reaps it.
    [ -n "$state" ] && [ "$state" != Z ]
}
case "$1" in
    start)
        sleep 1000 </dev/null >/dev/null 2>&1 &
        echo $! > "$pidfile" ;;
    status)
        alive "$pidfile" ;;
    stop)
        alive "$pidfile" || { rm -f "$pidfile"; exit 0; }
        kill "$(cat "$pidfile")"
        while alive "$pidfile"; do sleep 0.02; done
        rm -f "$pidfile" ;;
    kill)
        echo ran > "$STACK_DIR/kill-ran"
        alive "$pidfile" && kill -9 "$(cat "$pidfile")"
        while alive "$pidfile"; do sleep 0.02; done
        rm -f "$pidfile" ;;
    hang)
        # Never returns; leaves its own pid and its child's behind.
        echo $$ > "$STACK_DIR/hang-pid"
        sleep 1000 &
        echo $! > "$STACK_DIR/hang-child-pid"
        wait ;;
    fail)
        echo "cannot $2: the queue is locked" >&2
        exit 4 ;;
esac
"#;

/// A temp dir holding the script and the pidfiles; kills what is left on
/// drop so a failed test leaves no sleeps behind.
struct Stack {
    directory: tempfile::TempDir,
}

impl Stack {
    fn new() -> Stack {
        let directory = tempfile::tempdir().unwrap();
        let script = directory.path().join("stack.sh");
        std::fs::write(&script, STACK_SCRIPT).unwrap();
        Stack { directory }
    }

    fn argv(&self, arguments: &[&str]) -> Vec<String> {
        let mut argv = vec![
            "sh".to_string(),
            self.directory.path().join("stack.sh").display().to_string(),
        ];
        argv.extend(arguments.iter().map(|a| a.to_string()));
        argv
    }

    fn section(&self) -> ServicesSection {
        ServicesSection {
            driver: ServicesDriver::Command,
            start: self.argv(&["start"]),
            stop: self.argv(&["stop"]),
            status: self.argv(&["status"]),
            kill: self.argv(&["kill"]),
            start_timeout_ms: 10_000,
            stop_timeout_ms: 10_000,
            env: BTreeMap::from([(
                "STACK_DIR".to_string(),
                self.directory.path().display().to_string(),
            )]),
            ..ServicesSection::default()
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.directory.path().join(name)
    }

    fn pid_in(&self, name: &str) -> Option<i32> {
        std::fs::read_to_string(self.file(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for name in ["pid", "hang-pid", "hang-child-pid"] {
            if let Some(pid) = self.pid_in(name) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
            !after_name.trim_start().starts_with('Z')
        }
        Err(_) => false,
    }
}

/// Whether `pid` is gone within a second: a SIGKILL to another process is
/// delivered asynchronously, so "killed" is only seen a moment later.
fn gone_soon(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn driver(section: &ServicesSection) -> Box<dyn Services> {
    services_from_config(section).expect("driver from config")
}

#[test]
fn command_services_pass_the_suite() {
    let stack = Stack::new();
    let services = driver(&stack.section());
    assert!(
        services.describe().starts_with("command: start `sh "),
        "{}",
        services.describe()
    );
    block_on(services_suite(services.as_ref()));
}

#[test]
fn a_working_stop_needs_no_kill() {
    let stack = Stack::new();
    let services = driver(&stack.section());
    block_on(async {
        services
            .start(Duration::from_secs(10))
            .await
            .expect("start");
        services.stop(Duration::from_secs(10)).await.expect("stop");
    });
    assert!(!stack.file("kill-ran").exists(), "the kill command ran");
}

#[test]
fn a_stop_that_outlives_its_timeout_is_killed_and_the_kill_command_runs() {
    let stack = Stack::new();
    let mut section = stack.section();
    section.stop = stack.argv(&["hang"]);
    let services = driver(&section);
    block_on(async {
        services.start(Duration::from_secs(5)).await.expect("start");
        let stack_pid = stack.pid_in("pid").expect("stack pid");
        let started = Instant::now();
        services
            .stop(Duration::from_millis(300))
            .await
            .expect("stop falls back to kill");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300),
            "stop returned after {took:?}"
        );
        assert!(took < Duration::from_secs(3), "stop took {took:?}");
        assert!(
            stack.file("kill-ran").exists(),
            "the kill command did not run"
        );
        assert!(!alive(stack_pid), "the stack survived the kill command");
        assert!(!services.is_running().await.unwrap());
    });
    // The hung stop command and the child it started were killed as a group.
    let hang_pid = stack.pid_in("hang-pid").expect("hang pid");
    let hang_child_pid = stack.pid_in("hang-child-pid").expect("hang child pid");
    assert!(
        gone_soon(hang_pid),
        "the hung stop command is still running"
    );
    assert!(
        gone_soon(hang_child_pid),
        "the hung stop command's child is still running"
    );
}

#[test]
fn a_failing_stop_falls_back_to_the_kill_command() {
    let stack = Stack::new();
    let mut section = stack.section();
    section.stop = stack.argv(&["fail", "stop"]);
    let services = driver(&section);
    block_on(async {
        services.start(Duration::from_secs(5)).await.expect("start");
        services
            .stop(Duration::from_secs(5))
            .await
            .expect("stop falls back to kill");
        assert!(stack.file("kill-ran").exists());
        assert!(!services.is_running().await.unwrap());
    });
}

#[test]
fn a_failing_stop_without_a_kill_command_reports_status_and_stderr() {
    let stack = Stack::new();
    let mut section = stack.section();
    section.stop = stack.argv(&["fail", "stop"]);
    section.kill = Vec::new();
    let services = driver(&section);
    match block_on(services.stop(Duration::from_secs(5))) {
        Err(error @ DriverError::Command { .. }) => {
            let message = error.to_string();
            assert!(message.contains("stop command `sh`"), "{message}");
            assert!(message.contains("exit status: 4"), "{message}");
            assert!(
                message.contains("cannot stop: the queue is locked"),
                "{message}"
            );
        }
        other => panic!("a failing stop gave {other:?}"),
    }
}

#[test]
fn stop_and_kill_both_failing_names_both() {
    let stack = Stack::new();
    let mut section = stack.section();
    section.stop = stack.argv(&["fail", "stop"]);
    section.kill = stack.argv(&["fail", "kill"]);
    let services = driver(&section);
    match block_on(services.stop(Duration::from_secs(5))) {
        Err(error @ DriverError::StopAndKillFailed { .. }) => {
            let message = error.to_string();
            assert!(message.contains("cannot stop"), "{message}");
            assert!(message.contains("cannot kill"), "{message}");
        }
        other => panic!("stop and kill failing gave {other:?}"),
    }
}

#[test]
fn a_failing_start_reports_exit_status_and_stderr_tail() {
    let stack = Stack::new();
    let mut section = stack.section();
    section.start = stack.argv(&["fail", "start"]);
    let services = driver(&section);
    match block_on(services.start(Duration::from_secs(5))) {
        Err(DriverError::Command {
            what,
            argv0,
            status,
            stderr_tail,
        }) => {
            assert_eq!((what, argv0.as_str()), ("start command", "sh"));
            assert!(status.contains('4'), "{status}");
            assert_eq!(stderr_tail, "cannot start: the queue is locked");
        }
        other => panic!("a failing start gave {other:?}"),
    }
}

#[test]
fn a_start_that_outlives_its_timeout_is_killed_with_its_process_group() {
    let stack = Stack::new();
    let mut section = stack.section();
    section.start = stack.argv(&["hang"]);
    let services = driver(&section);
    let started = Instant::now();
    match block_on(services.start(Duration::from_millis(300))) {
        Err(error @ DriverError::Timeout { .. }) => {
            let message = error.to_string();
            assert!(message.contains("start command `sh`"), "{message}");
            assert!(message.contains("300 ms"), "{message}");
        }
        other => panic!("a hanging start gave {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(gone_soon(stack.pid_in("hang-pid").expect("hang pid")));
    assert!(gone_soon(
        stack.pid_in("hang-child-pid").expect("hang child pid")
    ));
}

#[test]
fn a_forked_daemon_holding_stderr_open_does_not_hold_up_start() {
    let stack = Stack::new();
    let mut section = stack.section();
    // The daemon inherits the command's stderr and keeps it open: the start
    // must end when the command exits, not when its stderr closes.
    section.start = vec![
        "sh".to_string(),
        "-c".to_string(),
        r#"sleep 1000 & echo $! > "$STACK_DIR/pid""#.to_string(),
    ];
    let services = driver(&section);
    let started = Instant::now();
    block_on(services.start(Duration::from_secs(5))).expect("start");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "start took {:?}",
        started.elapsed()
    );
    assert!(
        alive(stack.pid_in("pid").expect("daemon pid")),
        "the daemon died with its starter"
    );
}

#[test]
fn is_running_without_a_status_command_is_an_error() {
    let stack = Stack::new();
    let mut section = stack.section();
    section.status = Vec::new();
    match block_on(driver(&section).is_running()) {
        Err(error @ DriverError::NotConfigured { .. }) => {
            assert!(error.to_string().contains("status command"), "{error}")
        }
        other => panic!("is_running without a status command gave {other:?}"),
    }
}

#[test]
fn a_missing_program_is_a_spawn_error_naming_it() {
    let stack = Stack::new();
    let mut section = stack.section();
    section.start = vec!["/nonexistent/mailherd-test-start".to_string()];
    match block_on(driver(&section).start(Duration::from_secs(1))) {
        Err(error @ DriverError::Spawn { .. }) => {
            assert!(
                error
                    .to_string()
                    .contains("/nonexistent/mailherd-test-start"),
                "{error}"
            )
        }
        other => panic!("a missing program gave {other:?}"),
    }
}

#[test]
fn config_without_start_or_stop_is_rejected() {
    let stack = Stack::new();
    for field in ["start", "stop"] {
        let mut section = stack.section();
        match field {
            "start" => section.start = Vec::new(),
            _ => section.stop = Vec::new(),
        }
        match services_from_config(&section) {
            Err(error @ DriverError::InvalidConfig { .. }) => {
                assert!(
                    error
                        .to_string()
                        .contains(&format!("needs a {field} command")),
                    "{error}"
                )
            }
            Err(other) => panic!("empty {field}: {other}"),
            Ok(_) => panic!("empty {field} accepted"),
        }
    }
}

#[test]
fn the_configured_environment_reaches_the_commands() {
    let stack = Stack::new();
    let mut section = stack.section();
    section
        .env
        .insert("MAILHERD_TEST_GREETING".into(), "hello from env".into());
    section.start = vec![
        "sh".to_string(),
        "-c".to_string(),
        r#"printf '%s' "$MAILHERD_TEST_GREETING" > "$STACK_DIR/greeting""#.to_string(),
    ];
    block_on(driver(&section).start(Duration::from_secs(5))).expect("start");
    let greeting = std::fs::read_to_string(stack.file("greeting")).unwrap();
    assert_eq!(greeting, "hello from env");
    assert!(Path::new(&stack.file("greeting")).exists());
}

/// A promotion abandoned mid-start (its future dropped, as when the lease
/// runs out) must not leave the start command running to start the stack
/// later on what is by then a backup.
#[test]
fn an_abandoned_start_command_is_killed_with_its_process_group() {
    let stack = Stack::new();
    let mut section = stack.section();
    let marker = stack.file("started-late");
    section.start = vec![
        "sh".into(),
        "-c".into(),
        format!("sleep 0.5; touch {}", marker.display()),
    ];
    let services = driver(&section);
    let abandoned = block_on(async {
        tokio::time::timeout(
            Duration::from_millis(100),
            services.start(Duration::from_secs(10)),
        )
        .await
    });
    assert!(
        abandoned.is_err(),
        "the start should still have been running"
    );
    std::thread::sleep(Duration::from_millis(1_000));
    assert!(!marker.exists(), "the abandoned start command ran on");
}

#[test]
fn kill_without_a_kill_command_is_an_error() {
    let stack = Stack::new();
    let mut section = stack.section();
    section.kill = Vec::new();
    let services = driver(&section);
    let error = block_on(services.kill(Duration::from_secs(1))).unwrap_err();
    assert!(error.to_string().contains("kill command"), "{error}");
}
