//! Containers of the local Docker Engine. No registry can be reached, so
//! the image is made here: `docker import` of a tarball holding only the
//! merged-/usr symlinks, run with the host's /usr mounted read-only, so
//! `/bin/sleep` and `/bin/true` are the host's own. Skipped, with a
//! message, where there is no Docker Engine.

use super::*;

use std::path::Path;
use std::process::Command;

const IMAGE: &str = "mailherd-probe-test:latest";

fn docker(args: &[&str]) -> Result<String, String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .map_err(|error| format!("docker: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Imports the test image; `Err` says why docker cannot be tested here.
fn import_image() -> Result<(), String> {
    if !Path::new("/var/run/docker.sock").exists() {
        return Err("no /var/run/docker.sock".to_string());
    }
    if !Path::new("/usr/bin/sleep").exists() || !Path::new("/usr/bin/true").exists() {
        return Err("the host has no /usr/bin/sleep and /usr/bin/true to run".to_string());
    }
    docker(&["version", "--format", "{{.Server.Version}}"])?;
    // Made once per machine: a new import at every run would leave the
    // previous image behind, untagged.
    if docker(&["image", "inspect", "--format", "{{.Id}}", IMAGE]).is_ok() {
        return Ok(());
    }
    let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
    let root = dir.path().join("root");
    for sub in ["usr", "proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).map_err(|error| error.to_string())?;
    }
    for (link, target) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        std::os::unix::fs::symlink(target, root.join(link)).map_err(|error| error.to_string())?;
    }
    let tarball = dir.path().join("root.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .map_err(|error| format!("tar: {error}"))?;
    if !status.success() {
        return Err("tar failed".to_string());
    }
    docker(&["import", tarball.to_str().unwrap(), IMAGE])?;
    Ok(())
}

/// A container removed on drop, also when the test fails.
struct Container {
    name: String,
}

impl Container {
    fn run(name: &str, extra: &[&str], command: &[&str]) -> Container {
        let _ = docker(&["rm", "-f", name]);
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "-v",
            "/usr:/usr:ro",
        ];
        args.extend_from_slice(extra);
        args.push(IMAGE);
        args.extend_from_slice(command);
        docker(&args).unwrap();
        Container {
            name: name.to_string(),
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.name]);
    }
}

fn container_check(name: &str) -> CheckSection {
    CheckSection {
        container: Some(name.to_string()),
        ..local_check(CheckKind::Docker, 2_000)
    }
}

/// Probes until the result passes `done` or 10 s are over; the last result.
async fn probe_until(check: &CheckSection, done: impl Fn(&ProbeResult) -> bool) -> ProbeResult {
    let started = Instant::now();
    loop {
        let result = probe(check).await;
        if done(&result) || started.elapsed() > Duration::from_secs(10) {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn docker_containers_running_healthy_unhealthy_stopped_and_absent() {
    if let Err(why) = import_image() {
        eprintln!("SKIPPED: the docker probe's container cases need a Docker Engine: {why}");
        // Without an engine the probe still answers, and fails.
        let result = probe(&container_check("mailherd-probe-test-absent")).await;
        assert!(!result.ok, "{result:?}");
        return;
    }
    let prefix = format!("mailherd-probe-test-{}", std::process::id());

    let absent = format!("{prefix}-absent");
    let result = probe(&container_check(&absent)).await;
    assert_failed(&result, &format!("no such container: {absent}"));

    let plain_name = format!("{prefix}-plain");
    let _plain = Container::run(
        &plain_name,
        &[
            "--label",
            "com.docker.compose.project=mailherdtest",
            "--label",
            "com.docker.compose.service=web",
        ],
        &["/bin/sleep", "300"],
    );
    let result = probe(&container_check(&plain_name)).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(
        result.detail,
        format!("container {plain_name} running (no healthcheck)")
    );

    // The same container found by its compose labels.
    let compose = CheckSection {
        compose_project: Some("mailherdtest".to_string()),
        service: Some("web".to_string()),
        ..local_check(CheckKind::Docker, 2_000)
    };
    let result = probe(&compose).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(
        result.detail,
        "1 container of mailherdtest/web running (no healthcheck)"
    );
    let nobody = CheckSection {
        service: Some("db".to_string()),
        ..compose.clone()
    };
    let result = probe(&nobody).await;
    assert_failed(
        &result,
        "no container of compose project mailherdtest, service db",
    );

    let healthy_name = format!("{prefix}-healthy");
    let _healthy = Container::run(
        &healthy_name,
        &["--health-cmd", "/bin/true", "--health-interval", "200ms"],
        &["/bin/sleep", "300"],
    );
    let check = container_check(&healthy_name);
    let result = probe_until(&check, |result| result.ok).await;
    assert!(result.ok, "{result:?}");
    assert_eq!(
        result.detail,
        format!("container {healthy_name} running, healthy")
    );

    let unhealthy_name = format!("{prefix}-unhealthy");
    let _unhealthy = Container::run(
        &unhealthy_name,
        &[
            "--health-cmd",
            "/bin/false",
            "--health-interval",
            "200ms",
            "--health-retries",
            "1",
        ],
        &["/bin/sleep", "300"],
    );
    let check = container_check(&unhealthy_name);
    // "starting" until the first check ran: failed too.
    let result = probe(&check).await;
    assert!(!result.ok, "{result:?}");
    eprintln!(
        "a container whose healthcheck has not run: {}",
        result.detail
    );
    let result = probe_until(&check, |result| result.detail.contains("but unhealthy")).await;
    assert_failed(
        &result,
        &format!("container {unhealthy_name} is running but unhealthy"),
    );

    let exited_name = format!("{prefix}-exited");
    let _exited = Container::run(&exited_name, &[], &["/bin/sh", "-c", "exit 3"]);
    let check = container_check(&exited_name);
    let result = probe_until(&check, |result| result.detail.contains("exited")).await;
    assert_failed(
        &result,
        &format!("container {exited_name} is exited (exit code 3)"),
    );
}

#[tokio::test]
async fn docker_fails_clearly_without_the_engine_socket() {
    let check = CheckSection {
        docker_socket: Some(PathBuf::from("/nonexistent/docker.sock")),
        ..container_check("mailcowdockerized-postfix-mailcow-1")
    };
    let result = probe(&check).await;
    assert_failed(
        &result,
        "cannot reach the Docker Engine at /nonexistent/docker.sock",
    );
    assert!(result.detail.contains("not found"), "{result:?}");
}
