//! The docker probe: the container (or every container of a compose
//! service) is running and, when it has a healthcheck, healthy, as the
//! Docker Engine API says over its unix socket.

use std::collections::HashMap;
use std::path::Path;

use bollard::errors::Error as DockerError;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};
use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;
use mailherd_config::{CheckSection, DEFAULT_DOCKER_SOCKET};
use tokio::time::Instant;

use crate::{error_chain, timed_out, Verdict};

pub(crate) async fn probe(check: &CheckSection, deadline: Instant) -> Result<Verdict, String> {
    let socket = check
        .docker_socket
        .as_deref()
        .unwrap_or(Path::new(DEFAULT_DOCKER_SOCKET));
    let socket_text = socket.display().to_string();
    let unreachable = |error: DockerError| {
        format!(
            "cannot reach the Docker Engine at {socket_text}: {}",
            error_chain(&error)
        )
    };
    // bollard's own timeout is whole seconds; the deadline below is what
    // bounds the probe.
    let client_timeout_s = check.timeout_ms.div_ceil(1_000) + 1;
    let docker =
        Docker::connect_with_unix(&socket_text, client_timeout_s, bollard::API_DEFAULT_VERSION)
            .map_err(unreachable)?;

    let inspect = async {
        // Speak the engine's API version when it is older than bollard's.
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        match (&check.container, &check.compose_project, &check.service) {
            (Some(name), _, _) => {
                let container = docker
                    .inspect_container(name, None)
                    .await
                    .map_err(|error| match error {
                        DockerError::DockerResponseServerError {
                            status_code: 404, ..
                        } => format!("no such container: {name}"),
                        other => format!("inspecting container {name}: {}", error_chain(&other)),
                    })?;
                let state = judge(&container)?;
                Ok(format!("container {} {state}", display_name(&container)))
            }
            (None, Some(project), Some(service)) => {
                let filters = HashMap::from([(
                    "label".to_string(),
                    vec![
                        format!("com.docker.compose.project={project}"),
                        format!("com.docker.compose.service={service}"),
                    ],
                )]);
                let listed = docker
                    .list_containers(Some(ListContainersOptions {
                        all: true,
                        filters: Some(filters),
                        ..Default::default()
                    }))
                    .await
                    .map_err(|error| format!("listing containers: {}", error_chain(&error)))?;
                if listed.is_empty() {
                    return Err(format!(
                        "no container of compose project {project}, service {service}"
                    ));
                }
                let mut states = Vec::new();
                for summary in &listed {
                    let id = summary.id.as_deref().unwrap_or_default();
                    let container = docker.inspect_container(id, None).await.map_err(|error| {
                        format!("inspecting container {id}: {}", error_chain(&error))
                    })?;
                    states.push(judge(&container)?);
                }
                states.dedup();
                Ok(format!(
                    "{} container{} of {project}/{service} {}",
                    listed.len(),
                    if listed.len() == 1 { "" } else { "s" },
                    states.join(", ")
                ))
            }
            _ => Err("no container configured".to_string()),
        }
    };
    let detail = tokio::time::timeout_at(deadline, inspect)
        .await
        .map_err(|_| timed_out(check.timeout_ms, "the Docker Engine"))??;
    Ok(Verdict {
        detail,
        goodbye: None,
    })
}

/// `running, healthy` or `running (no healthcheck)`; an error naming the
/// container and what is wrong otherwise.
fn judge(container: &ContainerInspectResponse) -> Result<String, String> {
    let name = display_name(container);
    let state = container
        .state
        .as_ref()
        .ok_or_else(|| format!("container {name}: the engine reports no state"))?;
    let status = state.status.unwrap_or(ContainerStateStatusEnum::EMPTY);
    if status != ContainerStateStatusEnum::RUNNING {
        let exit = match (status, state.exit_code) {
            (ContainerStateStatusEnum::EXITED, Some(code)) => format!(" (exit code {code})"),
            _ => String::new(),
        };
        return Err(format!("container {name} is {status}{exit}"));
    }
    let Some(health) = &state.health else {
        return Ok("running (no healthcheck)".to_string());
    };
    match health.status.unwrap_or(HealthStatusEnum::EMPTY) {
        HealthStatusEnum::HEALTHY => Ok("running, healthy".to_string()),
        HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => {
            Ok("running (no healthcheck)".to_string())
        }
        other => {
            // The last check's output says why, e.g. a failed curl.
            let last_output = health
                .log
                .as_ref()
                .and_then(|log| log.last())
                .and_then(|result| result.output.as_deref())
                .map(|output| format!(": {}", output.trim()))
                .unwrap_or_default();
            let health = match other {
                HealthStatusEnum::STARTING => "its healthcheck has not passed yet".to_string(),
                other => format!("{other}"),
            };
            Err(format!(
                "container {name} is running but {health}{last_output}"
            ))
        }
    }
}

fn display_name(container: &ContainerInspectResponse) -> String {
    container
        .name
        .as_deref()
        .map(|name| name.trim_start_matches('/').to_string())
        .or_else(|| container.id.clone())
        .unwrap_or_else(|| "?".to_string())
}
