//! The systemd probe: `systemctl is-active UNIT` exits 0. The command is
//! bounded by the deadline and killed when it runs over.

use std::process::Stdio;

use mailherd_config::CheckSection;
use tokio::process::Command;
use tokio::time::Instant;

use crate::{timed_out, Verdict};

pub(crate) async fn probe(check: &CheckSection, deadline: Instant) -> Result<Verdict, String> {
    let unit = check
        .unit
        .as_deref()
        .ok_or_else(|| "no unit configured".to_string())?;
    // `--`: a unit name is never read as an option (validation also
    // refuses a leading `-`).
    let output = run_bounded(
        "systemctl",
        &["is-active", "--", unit],
        deadline,
        check.timeout_ms,
    )
    .await?;
    let state = first_line(&output.stdout);
    if output.status.success() {
        return Ok(Verdict {
            detail: format!(
                "{unit} is {}",
                if state.is_empty() { "active" } else { &state }
            ),
            goodbye: None,
        });
    }
    // systemctl prints the state ("inactive", "failed", "activating") on
    // stdout; without one, its complaint is on stderr (no systemd as PID 1,
    // no bus).
    if state.is_empty() {
        let complaint = first_line(&output.stderr);
        Err(format!(
            "systemctl is-active {unit} failed ({}): {complaint}",
            output.status
        ))
    } else {
        Err(format!("{unit} is {state}"))
    }
}

fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Runs `program` with `args` to completion or until the deadline, when it
/// is killed (SIGKILL; tokio reaps it). Its output is captured.
pub(crate) async fn run_bounded(
    program: &str,
    args: &[&str],
    deadline: Instant,
    timeout_ms: u64,
) -> Result<std::process::Output, String> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropping the wait below, on timeout, kills the process.
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    tokio::time::timeout_at(deadline, child.wait_with_output())
        .await
        .map_err(|_| format!("{} (killed)", timed_out(timeout_ms, program)))?
        .map_err(|error| format!("waiting for {program}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_command_running_over_the_deadline_is_killed() {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(200);
        // The shell prints its pid, then waits far longer than the deadline.
        let marker = format!("mailherd-probe-test-{}", std::process::id());
        let error = run_bounded("sh", &["-c", "sleep 30; echo done", &marker], deadline, 200)
            .await
            .unwrap_err();
        assert_eq!(error, "timed out after 200 ms waiting for sh (killed)");
        assert!(started.elapsed() < Duration::from_secs(2));
        // Nothing of ours is left running: the shell was killed (its sleep
        // child, orphaned, may finish on its own; it is not waited for).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let survivors = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
            .filter(|cmdline| {
                let cmdline = String::from_utf8_lossy(cmdline);
                cmdline.starts_with("sh\0") && cmdline.contains(&marker)
            })
            .count();
        assert_eq!(survivors, 0, "the timed-out shell is still running");
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_failure() {
        let deadline = Instant::now() + Duration::from_secs(1);
        let error = run_bounded("mailherd-no-such-program", &[], deadline, 1_000)
            .await
            .unwrap_err();
        assert!(
            error.starts_with("cannot run mailherd-no-such-program: No such file"),
            "{error}"
        );
    }
}
