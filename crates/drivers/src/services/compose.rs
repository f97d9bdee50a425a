//! The `compose` services driver: a Docker Compose project (mailcow).
//!
//! - `start`: `docker compose -p P -f FILE [-f OVERRIDE] up -d`, where
//!   OVERRIDE is the `docker-compose.override.yml` beside FILE if there is
//!   one (compose reads it on its own only without `-f`);
//! - `stop`: `... down` (containers and networks go; named volumes stay),
//!   then every container of the project still running is killed and
//!   removed through the Engine API. mailcow's `watchdog-mailcow` restarts
//!   containers it finds unhealthy: left running on a backup it would
//!   start the stack behind the master's back, so nothing of the project
//!   may survive a stop. A project without containers is stopped already
//!   (no compose run: on a backup the compose file may live on a volume
//!   that is not mounted);
//! - `kill`: through the Engine API, every container of the project at
//!   once: SIGKILL, then removal. Removal matters: mailcow's services are
//!   `restart: always`, which dockerd honours at its next start (a reboot)
//!   even for a container that was killed by hand;
//! - `is_running`: any container of the project running, restarting,
//!   paused or being stopped or removed (see [`Services::is_running`]);
//!   [`ComposeServices::state`] says whether every container runs and is
//!   healthy.
//!
//! The compose program is `compose_command` or, by default, `docker
//! compose` when `docker compose version` works and `docker-compose` (v1)
//! otherwise, found out at first use. The commands get
//! `DOCKER_HOST=unix://<docker_socket>` so they and the API calls talk to
//! the same engine.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerSummaryStateEnum, HealthStatusEnum};
use bollard::query_parameters::{
    KillContainerOptions, ListContainersOptions, RemoveContainerOptions,
};
use bollard::Docker;
use futures::future::join_all;
use mailherd_config::ServicesSection;
use tokio::sync::OnceCell;

use super::process::{require_success, run_command};
use super::Services;
use crate::DriverError;

/// How long `docker compose version` may take while the program is found
/// out (docker-compose v1 is a Python program and starts slowly).
const DETECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Bounds one Engine API request; bollard counts whole seconds.
const API_TIMEOUT_S: u64 = 10;
/// The label compose puts on every container of a project.
pub const PROJECT_LABEL: &str = "com.docker.compose.project";
/// The label naming a container's compose service.
pub const SERVICE_LABEL: &str = "com.docker.compose.service";
/// The override file compose reads beside the compose file.
const OVERRIDE_FILE: &str = "docker-compose.override.yml";

/// The mail stack as a Docker Compose project.
pub struct ComposeServices {
    project: String,
    compose_file: PathBuf,
    /// `compose_command` of the config; empty: found out at first use.
    configured_command: Vec<String>,
    /// The compose program found out at first use (only success is kept:
    /// docker may be installed later).
    detected_command: OnceCell<Vec<String>>,
    docker_socket: PathBuf,
    /// The config's env, with `DOCKER_HOST` added unless it sets one.
    env: BTreeMap<String, String>,
    /// The Engine API client, its version negotiated at first use.
    docker: OnceCell<Docker>,
}

/// One container of the project, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    /// The container's name without the leading `/`.
    pub name: String,
    /// Its compose service (`com.docker.compose.service`).
    pub service: String,
    /// `running`, `exited`, `restarting`, ...
    pub status: String,
    /// `healthy`, `unhealthy`, `starting`; `None` without a healthcheck
    /// (and for containers that do not run).
    pub health: Option<String>,
}

impl ContainerState {
    /// Running, and healthy when it has a healthcheck.
    pub fn is_up(&self) -> bool {
        self.status == "running" && self.health.as_deref().is_none_or(|h| h == "healthy")
    }

    /// Has (or is about to have) processes.
    pub fn holds_the_host(&self) -> bool {
        status_holds_the_host(&self.status)
    }
}

/// Every container of the project.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProjectState {
    pub containers: Vec<ContainerState>,
}

impl ProjectState {
    /// Whether the project is up: it has containers, and every one is
    /// running and, where it has a healthcheck, healthy.
    pub fn is_up(&self) -> bool {
        !self.containers.is_empty() && self.containers.iter().all(ContainerState::is_up)
    }

    /// Whether any container holds the host.
    pub fn holds_the_host(&self) -> bool {
        self.containers.iter().any(ContainerState::holds_the_host)
    }

    /// The containers that are not up, as `name (status[, health])`.
    pub fn not_up(&self) -> Vec<String> {
        self.containers
            .iter()
            .filter(|container| !container.is_up())
            .map(|container| match &container.health {
                Some(health) => format!("{} ({}, {health})", container.name, container.status),
                None => format!("{} ({})", container.name, container.status),
            })
            .collect()
    }
}

impl ComposeServices {
    pub fn from_config(section: &ServicesSection) -> Result<Self, DriverError> {
        let invalid = |reason: &str| DriverError::InvalidConfig {
            section: "services",
            reason: reason.to_string(),
        };
        let project = section
            .project
            .clone()
            .filter(|project| !project.is_empty())
            .ok_or_else(|| invalid("the compose driver needs a project"))?;
        let compose_file = section
            .compose_file
            .clone()
            .ok_or_else(|| invalid("the compose driver needs a compose file"))?;
        if section
            .compose_command
            .first()
            .is_some_and(|program| program.is_empty())
        {
            return Err(invalid("compose_command needs a program"));
        }
        let docker_socket = section.docker_socket_path();
        let mut env = section.env.clone();
        env.entry("DOCKER_HOST".to_string())
            .or_insert_with(|| format!("unix://{}", docker_socket.display()));
        Ok(ComposeServices {
            project,
            compose_file,
            configured_command: section.compose_command.clone(),
            detected_command: OnceCell::new(),
            docker_socket,
            env,
            docker: OnceCell::new(),
        })
    }

    /// The compose program as an argv prefix: the configured one, or the
    /// one found out (see the module docs).
    pub async fn compose_command(&self) -> Result<Vec<String>, DriverError> {
        if !self.configured_command.is_empty() {
            return Ok(self.configured_command.clone());
        }
        self.detected_command
            .get_or_try_init(|| async {
                let mut tried = Vec::new();
                for candidate in [vec!["docker", "compose"], vec!["docker-compose"]] {
                    let mut argv: Vec<String> = candidate.iter().map(|s| s.to_string()).collect();
                    argv.push("version".to_string());
                    let outcome = run_command("compose version", &argv, &self.env, DETECT_TIMEOUT)
                        .await
                        .and_then(|run| require_success("compose version", &argv, run));
                    match outcome {
                        Ok(()) => {
                            argv.pop();
                            tracing::info!(compose = %argv.join(" "), "found the compose program");
                            return Ok(argv);
                        }
                        Err(error) => tried.push(format!("`{}`: {error}", argv.join(" "))),
                    }
                }
                Err(DriverError::Unsupported {
                    driver: "compose",
                    what: format!(
                        "this host: no compose program works ({}); install the compose plugin or docker-compose, or set services.compose_command",
                        tried.join("; ")
                    ),
                })
            })
            .await
            .cloned()
    }

    /// `COMPOSE -p P -f FILE [-f OVERRIDE] ARGUMENTS`.
    async fn compose_argv(&self, arguments: &[&str]) -> Result<Vec<String>, DriverError> {
        let mut argv = self.compose_command().await?;
        argv.extend(["-p".to_string(), self.project.clone()]);
        argv.extend(["-f".to_string(), self.compose_file.display().to_string()]);
        let override_file = self
            .compose_file
            .parent()
            .unwrap_or(Path::new("/"))
            .join(OVERRIDE_FILE);
        if override_file != self.compose_file && override_file.exists() {
            argv.extend(["-f".to_string(), override_file.display().to_string()]);
        }
        argv.extend(arguments.iter().map(|argument| argument.to_string()));
        Ok(argv)
    }

    async fn run_compose(
        &self,
        what: &'static str,
        arguments: &[&str],
        timeout: Duration,
    ) -> Result<(), DriverError> {
        let argv = self.compose_argv(arguments).await?;
        let run = run_command(what, &argv, &self.env, timeout).await?;
        require_success(what, &argv, run)
    }

    fn api_error(&self, doing: &str, error: DockerError) -> DriverError {
        DriverError::DockerApi {
            socket: self.docker_socket.clone(),
            doing: doing.to_string(),
            reason: error_chain(&error),
        }
    }

    async fn docker(&self) -> Result<&Docker, DriverError> {
        self.docker
            .get_or_try_init(|| async {
                let socket = self.docker_socket.display().to_string();
                let docker =
                    Docker::connect_with_unix(&socket, API_TIMEOUT_S, bollard::API_DEFAULT_VERSION)
                        .map_err(|error| self.api_error("connecting", error))?;
                // Speak the engine's API version when it is older than
                // bollard's.
                docker
                    .negotiate_version()
                    .await
                    .map_err(|error| self.api_error("negotiating the API version", error))
            })
            .await
    }

    /// The ids, names and states of every container of the project.
    async fn list(&self) -> Result<Vec<(String, String, String, String)>, DriverError> {
        let docker = self.docker().await?;
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{PROJECT_LABEL}={}", self.project)],
        )]);
        let listed = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|error| self.api_error("listing the containers", error))?;
        Ok(listed
            .into_iter()
            .map(|summary| {
                let id = summary.id.unwrap_or_default();
                let name = summary
                    .names
                    .and_then(|names| names.into_iter().next())
                    .map(|name| name.trim_start_matches('/').to_string())
                    .unwrap_or_else(|| id.clone());
                let service = summary
                    .labels
                    .and_then(|labels| labels.get(SERVICE_LABEL).cloned())
                    .unwrap_or_default();
                let status = summary
                    .state
                    .unwrap_or(ContainerSummaryStateEnum::EMPTY)
                    .to_string();
                (id, name, service, status)
            })
            .collect())
    }

    /// Every container of the project with its state and health, from the
    /// Engine API.
    pub async fn state(&self) -> Result<ProjectState, DriverError> {
        let docker = self.docker().await?;
        let mut containers = Vec::new();
        for (id, name, service, status) in self.list().await? {
            // Health is only in the inspection (the list has it only in
            // API versions newer than many engines speak).
            let health = if status == "running" {
                match docker.inspect_container(&id, None).await {
                    Ok(inspected) => inspected
                        .state
                        .and_then(|state| state.health)
                        .and_then(|health| health.status)
                        .filter(|status| {
                            !matches!(status, HealthStatusEnum::NONE | HealthStatusEnum::EMPTY)
                        })
                        .map(|status| status.to_string()),
                    // Gone between the list and now.
                    Err(DockerError::DockerResponseServerError {
                        status_code: 404, ..
                    }) => continue,
                    Err(error) => {
                        return Err(self.api_error(&format!("inspecting {name}"), error));
                    }
                }
            } else {
                None
            };
            containers.push(ContainerState {
                name,
                service,
                status,
                health,
            });
        }
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ProjectState { containers })
    }

    /// Kills (SIGKILL) and removes every container of the project that
    /// holds the host, all at once; returns their names. Containers that
    /// vanish meanwhile are fine.
    async fn kill_and_remove_holders(&self) -> Result<Vec<String>, DriverError> {
        let docker = self.docker().await?;
        let holders: Vec<(String, String)> = self
            .list()
            .await?
            .into_iter()
            .filter(|(_, _, _, status)| status_holds_the_host(status))
            .map(|(id, name, _, _)| (id, name))
            .collect();
        if holders.is_empty() {
            return Ok(Vec::new());
        }
        // Kill first, all at once: the processes must die now; removal
        // (which a reboot's `restart: always` would otherwise undo) may
        // take a little longer.
        let kills = join_all(holders.iter().map(|(id, _)| {
            docker.kill_container(
                id,
                Some(KillContainerOptions {
                    signal: "SIGKILL".to_string(),
                }),
            )
        }))
        .await;
        let removals = join_all(holders.iter().map(|(id, _)| {
            docker.remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
        }))
        .await;
        let mut failures = Vec::new();
        for ((_, name), (kill, removal)) in holders.iter().zip(kills.into_iter().zip(removals)) {
            // The removal is what counts (with force it kills as well);
            // 404: already gone; 409: a removal is already in progress.
            if let Err(error) = removal {
                if !matches!(
                    error,
                    DockerError::DockerResponseServerError {
                        status_code: 404 | 409,
                        ..
                    }
                ) {
                    let kill_note = match kill {
                        Ok(()) => "killed".to_string(),
                        Err(kill_error) => format!("kill failed too: {}", error_chain(&kill_error)),
                    };
                    failures.push(format!("{name}: {} ({kill_note})", error_chain(&error)));
                }
            }
        }
        if !failures.is_empty() {
            return Err(DriverError::DockerApi {
                socket: self.docker_socket.clone(),
                doing: "removing containers".to_string(),
                reason: failures.join("; "),
            });
        }
        Ok(holders.into_iter().map(|(_, name)| name).collect())
    }

    /// Makes sure nothing of the project runs: kills what is left and
    /// checks again. `Err` when something still runs.
    async fn ensure_nothing_runs(&self) -> Result<(), DriverError> {
        let killed = self.kill_and_remove_holders().await?;
        if !killed.is_empty() {
            tracing::warn!(
                project = %self.project,
                containers = ?killed,
                "containers of the project were still running; killed and removed them"
            );
        }
        let state = self.state().await?;
        if state.holds_the_host() {
            let still: Vec<String> = state
                .containers
                .iter()
                .filter(|container| container.holds_the_host())
                .map(|container| format!("{} ({})", container.name, container.status))
                .collect();
            return Err(DriverError::ContainersLeft {
                project: self.project.clone(),
                containers: still.join(", "),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Services for ComposeServices {
    fn describe(&self) -> String {
        format!(
            "compose: project {} from {}",
            self.project,
            self.compose_file.display()
        )
    }

    async fn start(&self, timeout: Duration) -> Result<(), DriverError> {
        self.run_compose("compose up", &["up", "-d"], timeout).await
    }

    async fn stop(&self, timeout: Duration) -> Result<(), DriverError> {
        // Nothing of the project: stopped already, whatever compose would
        // say (its file may be on a volume this node does not mount).
        if self.list().await?.is_empty() {
            return Ok(());
        }
        let down = self.run_compose("compose down", &["down"], timeout).await;
        if let Err(error) = &down {
            tracing::warn!(%error, "compose down failed; killing the project's containers");
        }
        match (down, self.ensure_nothing_runs().await) {
            (_, Ok(())) => Ok(()),
            (Ok(()), Err(kill_error)) => Err(kill_error),
            (Err(stop_error), Err(kill_error)) => Err(DriverError::StopAndKillFailed {
                stop: Box::new(stop_error),
                kill: Box::new(kill_error),
            }),
        }
    }

    async fn kill(&self, timeout: Duration) -> Result<(), DriverError> {
        match tokio::time::timeout(timeout, self.ensure_nothing_runs()).await {
            Ok(result) => result,
            Err(_) => Err(DriverError::Timeout {
                what: format!("killing the containers of project {}", self.project),
                after_ms: timeout.as_millis() as u64,
            }),
        }
    }

    async fn is_running(&self) -> Result<bool, DriverError> {
        Ok(self
            .list()
            .await?
            .iter()
            .any(|(_, _, _, status)| status_holds_the_host(status)))
    }
}

/// Whether a container in this state has (or is about to have) processes:
/// running, restarting (a restart policy at work), paused (frozen, not
/// gone), being stopped or removed.
fn status_holds_the_host(status: &str) -> bool {
    matches!(
        status,
        "running" | "restarting" | "paused" | "removing" | "stopping"
    )
}

/// An error with its sources, `a: b: c`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
