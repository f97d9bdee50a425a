//! The `compose` services driver against the real Docker Engine of this
//! machine. No registry can be reached, so the image is made here: `docker
//! import` of a tarball holding only the merged-/usr symlinks, run with the
//! host's /usr mounted read-only (so `/bin/sleep` is the host's). The
//! compose file's services are named like mailcow's, `watchdog-mailcow`
//! among them, all `restart: always` as in mailcow, with no network
//! (`network_mode: none`: nothing is added to the host's networks).
//!
//! Without a Docker Engine the container cases are skipped with a message;
//! the error paths run everywhere.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::block_on;
use mailherd_config::{ServicesDriver, ServicesSection};
use mailherd_drivers::services::compose::ComposeServices;
use mailherd_drivers::suite::services_suite;
use mailherd_drivers::{services_from_config, DriverError, Services};

const IMAGE: &str = "mailherd-compose-test:latest";

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

/// Imports the test image once per machine; `Err` says why the engine
/// cannot be tested here.
fn import_image() -> Result<(), String> {
    if !Path::new("/var/run/docker.sock").exists() {
        return Err("no /var/run/docker.sock".to_string());
    }
    if !Path::new("/usr/bin/sleep").exists() {
        return Err("the host has no /usr/bin/sleep to run".to_string());
    }
    docker(&["version", "--format", "{{.Server.Version}}"])?;
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

/// Whether the engine can be used; prints why not once per test.
fn engine_or_skip(test: &str) -> bool {
    match import_image() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIPPED {test}: needs a Docker Engine: {why}");
            false
        }
    }
}

/// A service of the test compose file: sleeps under docker's init (which
/// stops on SIGTERM at once), mailcow's restart policy.
fn service(name: &str, healthcheck: Option<&str>) -> String {
    let mut text = format!(
        r#"  {name}:
    image: {IMAGE}
    command: ["/bin/sleep", "1000"]
    init: true
    network_mode: none
    volumes: ["/usr:/usr:ro"]
    restart: always
"#
    );
    if let Some(test) = healthcheck {
        text.push_str(&format!(
            "    healthcheck:\n      test: [\"CMD\", \"{test}\"]\n      interval: 1s\n      retries: 1\n"
        ));
    }
    text
}

/// A compose project in a temp dir, with a name no other test uses; every
/// container of it is removed on drop, also when the test fails.
struct Project {
    name: String,
    directory: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "mhcompose{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let directory = tempfile::tempdir().unwrap();
        let compose = format!(
            "version: \"2.4\"\nservices:\n{}{}{}",
            service("postfix-mailcow", Some("/bin/true")),
            service("dovecot-mailcow", None),
            service("watchdog-mailcow", None),
        );
        std::fs::write(directory.path().join("docker-compose.yml"), compose).unwrap();
        Project { name, directory }
    }

    fn compose_file(&self) -> PathBuf {
        self.directory.path().join("docker-compose.yml")
    }

    fn section(&self) -> ServicesSection {
        ServicesSection {
            project: Some(self.name.clone()),
            compose_file: Some(self.compose_file()),
            ..ServicesSection::new(ServicesDriver::Compose)
        }
    }

    fn driver(&self) -> ComposeServices {
        ComposeServices::from_config(&self.section()).expect("driver from config")
    }

    /// `name status` of every container of the project, seen by `docker
    /// ps` (not by the driver).
    fn containers(&self) -> Vec<String> {
        let listed = docker(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.name),
            "--format",
            "{{.Names}} {{.State}}",
        ])
        .unwrap();
        let mut lines: Vec<String> = listed.lines().map(str::to_string).collect();
        lines.sort();
        lines
    }

    fn running(&self) -> Vec<String> {
        self.containers()
            .into_iter()
            .filter(|line| line.ends_with(" running") || line.ends_with(" restarting"))
            .collect()
    }

    /// The container of `service`, as docker names it (compose v1 and v2
    /// name them differently).
    fn container_of(&self, service: &str) -> String {
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.name),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ])
        .unwrap()
    }

    /// Starts the project behind the driver's back, as dockerd's `restart:
    /// always` does at boot or an operator's `docker compose up -d`.
    fn up_outside_the_driver(&self, compose: &[String]) {
        let mut argv: Vec<String> = compose.to_vec();
        argv.extend([
            "-p".into(),
            self.name.clone(),
            "-f".into(),
            self.compose_file().display().to_string(),
            "up".into(),
            "-d".into(),
        ]);
        let status = Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .expect("run compose");
        assert!(
            status.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if let Ok(ids) = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.name),
        ]) {
            for id in ids.lines() {
                let _ = docker(&["rm", "-f", id]);
            }
        }
    }
}

/// Waits until `condition` holds or 20 s are over.
async fn eventually(mut condition: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn compose_services_pass_the_suite() {
    if !engine_or_skip("compose_services_pass_the_suite") {
        return;
    }
    let project = Project::new();
    let services: Box<dyn Services> = services_from_config(&project.section()).unwrap();
    assert_eq!(
        services.describe(),
        format!(
            "compose: project {} from {}",
            project.name,
            project.compose_file().display()
        )
    );
    block_on(services_suite(services.as_ref()));
    assert_eq!(project.running(), Vec::<String>::new());
}

#[test]
fn the_compose_program_is_docker_compose_or_else_docker_compose_v1() {
    if !engine_or_skip("the_compose_program_is_...") {
        return;
    }
    let plugin_works = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|output| output.status.success());
    let project = Project::new();
    let found = block_on(project.driver().compose_command()).expect("a compose program");
    if plugin_works {
        assert_eq!(found, ["docker", "compose"]);
    } else {
        // Debian's docker.io without the plugin: v1 is what there is.
        assert_eq!(found, ["docker-compose"]);
    }
    eprintln!("compose program on this machine: {}", found.join(" "));
}

#[test]
fn health_is_read_from_the_engine_and_a_killed_container_is_seen() {
    if !engine_or_skip("health_is_read_...") {
        return;
    }
    let project = Project::new();
    let driver = project.driver();
    block_on(async {
        driver.start(TIMEOUT).await.expect("start");
        // The healthcheck runs every second: up once it passed.
        let up = eventually(async || driver.state().await.expect("state").is_up()).await;
        let state = driver.state().await.unwrap();
        assert!(up, "never healthy: {state:?}");
        assert_eq!(state.containers.len(), 3, "{state:?}");
        let postfix = state
            .containers
            .iter()
            .find(|c| c.service == "postfix-mailcow")
            .expect("the postfix container");
        assert_eq!(postfix.status, "running");
        assert_eq!(postfix.health.as_deref(), Some("healthy"));
        let watchdog = state
            .containers
            .iter()
            .find(|c| c.service == "watchdog-mailcow")
            .expect("the watchdog container");
        assert_eq!(watchdog.health, None, "no healthcheck");

        // The postfix container killed from outside. `docker kill` counts
        // as a manual stop: `restart: always` does not bring it back.
        docker(&["kill", &project.container_of("postfix-mailcow")]).unwrap();
        let seen = eventually(async || !driver.state().await.unwrap().is_up()).await;
        let state = driver.state().await.unwrap();
        assert!(seen, "the killed container was not seen: {state:?}");
        let not_up = state.not_up();
        assert_eq!(not_up.len(), 1, "{not_up:?}");
        assert!(not_up[0].contains("postfix-mailcow"), "{not_up:?}");
        assert!(not_up[0].contains("(exited)"), "{not_up:?}");
        // Still holding the host: two containers run.
        assert!(driver.is_running().await.unwrap());

        driver.stop(TIMEOUT).await.expect("stop");
        assert!(!driver.is_running().await.unwrap());
    });
    assert_eq!(
        project.containers(),
        Vec::<String>::new(),
        "down removes them"
    );
}

#[test]
fn a_container_that_down_leaves_running_is_killed() {
    if !engine_or_skip("a_container_that_down_leaves_running_is_killed") {
        return;
    }
    let project = Project::new();
    let driver = project.driver();
    block_on(driver.start(TIMEOUT)).expect("start");
    // A watchdog of the project that is not in the compose file (an
    // older file's, or one started by hand): `down` leaves such orphans.
    let orphan = format!("{}-watchdog-orphan", project.name);
    docker(&[
        "run",
        "-d",
        "--name",
        &orphan,
        "--network",
        "none",
        "--init",
        "--restart",
        "always",
        "-v",
        "/usr:/usr:ro",
        "--label",
        &format!("com.docker.compose.project={}", project.name),
        "--label",
        "com.docker.compose.service=watchdog-mailcow-old",
        IMAGE,
        "/bin/sleep",
        "1000",
    ])
    .unwrap();
    block_on(driver.stop(TIMEOUT)).expect("stop");
    assert_eq!(project.running(), Vec::<String>::new());
    assert!(
        docker(&["inspect", &orphan]).is_err(),
        "the orphan was killed and removed"
    );
}

#[test]
fn an_urgent_kill_leaves_nothing_that_restart_always_could_bring_back() {
    if !engine_or_skip("an_urgent_kill_...") {
        return;
    }
    let project = Project::new();
    let driver = project.driver();
    let compose = block_on(driver.compose_command()).unwrap();
    // A backup's start-up cleanup: the stack runs (started outside the
    // driver, as dockerd's restart policy does at boot) and the agent's
    // first act is the urgent demotion, whose kill has one second.
    project.up_outside_the_driver(&compose);
    assert_eq!(project.running().len(), 3, "{:?}", project.containers());
    let started = Instant::now();
    block_on(driver.kill(Duration::from_secs(1))).expect("kill");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "kill took {took:?}");
    assert!(!block_on(driver.is_running()).unwrap());
    // Killed and removed: no container is left for `restart: always` to
    // start again, now or when dockerd restarts.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(project.containers(), Vec::<String>::new());
    // Kill is idempotent.
    block_on(driver.kill(Duration::from_secs(1))).expect("kill again");
}

#[test]
fn a_failing_down_falls_back_to_killing_the_containers() {
    if !engine_or_skip("a_failing_down_falls_back_to_killing_the_containers") {
        return;
    }
    let project = Project::new();
    let real = block_on(project.driver().compose_command()).unwrap();
    project.up_outside_the_driver(&real);
    let broken = ComposeServices::from_config(&ServicesSection {
        compose_command: vec!["/bin/false".to_string()],
        ..project.section()
    })
    .unwrap();
    let error = block_on(broken.start(TIMEOUT)).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("compose up `/bin/false` failed"),
        "{error}"
    );
    block_on(broken.stop(TIMEOUT)).expect("stop falls back to the kill");
    assert_eq!(project.running(), Vec::<String>::new());
}

#[test]
fn stopping_a_project_without_containers_runs_no_compose() {
    if !engine_or_skip("stopping_a_project_without_containers_runs_no_compose") {
        return;
    }
    // On a backup the compose file may sit on a volume it does not mount;
    // a program that always fails shows compose is not run at all.
    let project = Project::new();
    let driver = ComposeServices::from_config(&ServicesSection {
        compose_file: Some(PathBuf::from("/nonexistent/docker-compose.yml")),
        compose_command: vec!["/bin/false".to_string()],
        ..project.section()
    })
    .unwrap();
    block_on(driver.stop(TIMEOUT)).expect("nothing to stop");
    assert!(!block_on(driver.is_running()).unwrap());
}

#[test]
fn without_a_compose_program_the_error_names_both_tried() {
    let empty_path = tempfile::tempdir().unwrap();
    let project = Project::new();
    let driver = ComposeServices::from_config(&ServicesSection {
        env: [("PATH".to_string(), empty_path.path().display().to_string())].into(),
        ..project.section()
    })
    .unwrap();
    let error = block_on(driver.start(TIMEOUT)).unwrap_err();
    assert!(
        matches!(
            error,
            DriverError::Unsupported {
                driver: "compose",
                ..
            }
        ),
        "{error}"
    );
    let text = error.to_string();
    assert!(text.contains("`docker compose version`"), "{text}");
    assert!(text.contains("`docker-compose version`"), "{text}");
    assert!(text.contains("services.compose_command"), "{text}");
}

#[test]
fn an_unreachable_engine_is_an_error_naming_the_socket() {
    let project = Project::new();
    let driver = ComposeServices::from_config(&ServicesSection {
        docker_socket: Some(PathBuf::from("/nonexistent/docker.sock")),
        ..project.section()
    })
    .unwrap();
    for error in [
        block_on(driver.is_running()).unwrap_err(),
        block_on(driver.kill(Duration::from_secs(1))).unwrap_err(),
        block_on(driver.stop(TIMEOUT)).unwrap_err(),
    ] {
        assert!(matches!(error, DriverError::DockerApi { .. }), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("Docker Engine at /nonexistent/docker.sock: "),
            "{error}"
        );
    }
}

#[test]
fn a_section_without_project_or_file_is_refused() {
    for section in [
        ServicesSection {
            compose_file: Some(PathBuf::from("/srv/docker-compose.yml")),
            ..ServicesSection::new(ServicesDriver::Compose)
        },
        ServicesSection {
            project: Some("mailcowdockerized".to_string()),
            ..ServicesSection::new(ServicesDriver::Compose)
        },
    ] {
        match services_from_config(&section) {
            Err(DriverError::InvalidConfig { .. }) => {}
            Err(other) => panic!("expected InvalidConfig, got {other}"),
            Ok(_) => panic!("built from {section:?}"),
        }
    }
}
