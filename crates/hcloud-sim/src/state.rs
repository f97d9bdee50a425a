//! The mutable simulation: the world, the actions, the locks they hold,
//! the injected faults, the request counters and the rate-limit bucket.
//! All of it sits behind one mutex in [`crate::server`], never held across
//! an `await`; the rules of each action are here, free of HTTP.
//!
//! An action's life: a request is checked (the resources exist, the
//! locations agree, nothing involved is locked, the volume is free) and
//! becomes a running action holding locks on its server(s) and its floating
//! IP or volume. When its time is up it either fails (an injected
//! `action_error`), succeeds without effect (an injected
//! `action_without_effect`: `success`, no event, the world unchanged) or
//! reports its [`SimEvent`]; only after the event hook has run is the
//! change applied and the action marked `success`, so that the network
//! matches before any client sees success.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::fault::{self, Fault};
use crate::rate_limit::TokenBucket;
use crate::render::{self, ActionView, ServerContext};
use crate::{SimConfig, SimEvent, World};

/// A resource an action works on and locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Resource {
    Server(u64),
    FloatingIp(u64),
    Volume(u64),
}

impl Resource {
    fn id(self) -> u64 {
        match self {
            Resource::Server(id) | Resource::FloatingIp(id) | Resource::Volume(id) => id,
        }
    }

    /// The `type` of an action resource, and the word in messages.
    fn kind(self) -> &'static str {
        match self {
            Resource::Server(_) => "server",
            Resource::FloatingIp(_) => "floating_ip",
            Resource::Volume(_) => "volume",
        }
    }
}

/// An answer of the API that is an error document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiFailure {
    pub(crate) status: StatusCode,
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) details: Value,
}

impl ApiFailure {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> ApiFailure {
        ApiFailure {
            status,
            code: code.to_string(),
            message: message.into(),
            details: Value::Null,
        }
    }

    pub(crate) fn not_found(kind: &str, id: u64) -> ApiFailure {
        ApiFailure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{kind} with ID {id} not found"),
        )
    }

    /// `invalid_input` naming the offending field in `details`, as the API
    /// does.
    pub(crate) fn invalid_input(field: &str, message: impl Into<String>) -> ApiFailure {
        let message = message.into();
        ApiFailure {
            details: json!({"fields": [{"name": field, "messages": [message.clone()]}]}),
            ..ApiFailure::new(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                format!("invalid input in field '{field}'"),
            )
        }
    }
}

/// What an action will change when it succeeds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Change {
    FloatingIp { id: u64, server: Option<u64> },
    Volume { id: u64, server: Option<u64> },
}

/// A request that passed its checks, ready to become a running action.
#[derive(Debug)]
pub(crate) struct ActionPlan {
    command: &'static str,
    /// In the order the action's `resources` lists them.
    resources: Vec<Resource>,
    change: Change,
}

#[derive(Debug, Clone, PartialEq)]
enum ActionState {
    Running,
    Success,
    Error { code: String, message: String },
}

#[derive(Debug)]
struct SimAction {
    id: u64,
    command: &'static str,
    state: ActionState,
    started: String,
    started_at: Instant,
    /// `None` for a stuck action, which never ends.
    duration: Option<Duration>,
    finished: Option<String>,
    resources: Vec<Resource>,
    change: Change,
}

/// A started action, as the POST answers it.
pub(crate) struct StartedAction {
    pub(crate) id: u64,
    pub(crate) document: Value,
    /// When to complete it; `None` for a stuck action.
    pub(crate) duration: Option<Duration>,
}

/// What completing an action's time leads to.
pub(crate) enum Completion {
    /// Ended in error (injected); nothing more to do.
    Failed,
    /// Ended in `success` without changing the world (injected); nothing
    /// to report, nothing to persist.
    SucceededWithoutEffect,
    /// Succeeds once the hook has seen the event, if any (`None`: the
    /// world does not change, so there is nothing to report).
    Succeeds(Option<SimEvent>),
    /// No such running action (already completed).
    Gone,
}

pub(crate) struct SimState {
    pub(crate) world: World,
    /// When the world was seeded: every resource's `created`.
    created: String,
    actions: BTreeMap<u64, SimAction>,
    next_action_id: u64,
    /// Which running action holds each locked resource.
    locks: HashMap<Resource, u64>,
    pub(crate) faults: Vec<Fault>,
    /// `"<METHOD> <path>"` → requests received, for tests to see retries.
    pub(crate) requests: BTreeMap<String, u64>,
    pub(crate) bucket: TokenBucket,
}

impl SimState {
    pub(crate) fn new(config: &SimConfig, world: World) -> SimState {
        SimState {
            world,
            created: render::now_timestamp(),
            actions: BTreeMap::new(),
            // Far from the resource ids of a typical seed, so a test that
            // mixes them up fails instead of passing by luck.
            next_action_id: 1001,
            locks: HashMap::new(),
            faults: Vec::new(),
            requests: BTreeMap::new(),
            bucket: TokenBucket::new(config.rate_limit, Instant::now()),
        }
    }

    pub(crate) fn count_request(&mut self, method: &str, path: &str) {
        *self.requests.entry(format!("{method} {path}")).or_default() += 1;
    }

    pub(crate) fn floating_ip_document(&self, id: u64) -> Result<Value, ApiFailure> {
        let floating_ip = self
            .world
            .floating_ip(id)
            .ok_or_else(|| ApiFailure::not_found("floating_ip", id))?;
        Ok(render::floating_ip(floating_ip, &self.created))
    }

    pub(crate) fn floating_ip_documents(&self) -> Vec<Value> {
        self.world
            .floating_ips
            .iter()
            .map(|floating_ip| render::floating_ip(floating_ip, &self.created))
            .collect()
    }

    pub(crate) fn volume_document(&self, id: u64) -> Result<Value, ApiFailure> {
        let volume = self
            .world
            .volume(id)
            .ok_or_else(|| ApiFailure::not_found("volume", id))?;
        Ok(render::volume(volume, &self.created))
    }

    pub(crate) fn volume_documents(&self) -> Vec<Value> {
        self.world
            .volumes
            .iter()
            .map(|volume| render::volume(volume, &self.created))
            .collect()
    }

    pub(crate) fn server_document(&self, id: u64) -> Result<Value, ApiFailure> {
        self.world
            .servers
            .iter()
            .find(|server| server.id == id)
            .map(|server| self.render_server(server.id))
            .ok_or_else(|| ApiFailure::not_found("server", id))
    }

    pub(crate) fn server_documents(&self) -> Vec<Value> {
        self.world
            .servers
            .iter()
            .map(|server| self.render_server(server.id))
            .collect()
    }

    fn render_server(&self, id: u64) -> Value {
        let server = self.world.server(id).expect("rendered servers exist");
        let context = ServerContext {
            created: &self.created,
            locked: self.locks.contains_key(&Resource::Server(id)),
            volumes: self
                .world
                .volumes
                .iter()
                .filter(|volume| volume.server == Some(id))
                .map(|volume| volume.id)
                .collect(),
            floating_ips: self
                .world
                .floating_ips
                .iter()
                .filter(|floating_ip| floating_ip.server == Some(id))
                .map(|floating_ip| floating_ip.id)
                .collect(),
        };
        render::server(server, context)
    }

    pub(crate) fn action_document(&self, id: u64) -> Result<Value, ApiFailure> {
        let action = self
            .actions
            .get(&id)
            .ok_or_else(|| ApiFailure::not_found("action", id))?;
        Ok(render_action(action, Instant::now()))
    }

    fn check_unlocked(&self, resources: &[Resource]) -> Result<(), ApiFailure> {
        for resource in resources {
            if let Some(action_id) = self.locks.get(resource) {
                let command = self
                    .actions
                    .get(action_id)
                    .map_or("?", |action| action.command);
                return Err(ApiFailure::new(
                    StatusCode::LOCKED,
                    "locked",
                    format!(
                        "{} {} is locked: action {action_id} ({command}) is running",
                        resource.kind(),
                        resource.id()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn require_server(&self, id: u64) -> Result<&crate::WorldServer, ApiFailure> {
        // The reference does not say which code an unknown server in a
        // request body gets; not_found names the problem best.
        self.world
            .server(id)
            .ok_or_else(|| ApiFailure::not_found("server", id))
    }

    pub(crate) fn plan_assign(
        &self,
        floating_ip: u64,
        server: u64,
    ) -> Result<ActionPlan, ApiFailure> {
        self.world
            .floating_ip(floating_ip)
            .ok_or_else(|| ApiFailure::not_found("floating_ip", floating_ip))?;
        self.require_server(server)?;
        // Floating IPs route to any location of their network zone; the
        // simulator does not model zones, so it does not check locations.
        let resources = vec![Resource::Server(server), Resource::FloatingIp(floating_ip)];
        self.check_unlocked(&resources)?;
        Ok(ActionPlan {
            command: "assign_floating_ip",
            resources,
            change: Change::FloatingIp {
                id: floating_ip,
                server: Some(server),
            },
        })
    }

    pub(crate) fn plan_unassign(&self, floating_ip: u64) -> Result<ActionPlan, ApiFailure> {
        let current = self
            .world
            .floating_ip(floating_ip)
            .ok_or_else(|| ApiFailure::not_found("floating_ip", floating_ip))?
            .server;
        // UNCERTAIN: unassigning an unassigned address is simulated as an
        // action that succeeds without change.
        let mut resources = Vec::new();
        resources.extend(current.map(Resource::Server));
        resources.push(Resource::FloatingIp(floating_ip));
        self.check_unlocked(&resources)?;
        Ok(ActionPlan {
            command: "unassign_floating_ip",
            resources,
            change: Change::FloatingIp {
                id: floating_ip,
                server: None,
            },
        })
    }

    pub(crate) fn plan_attach(
        &self,
        volume_id: u64,
        server_id: u64,
    ) -> Result<ActionPlan, ApiFailure> {
        let volume = self
            .world
            .volume(volume_id)
            .ok_or_else(|| ApiFailure::not_found("volume", volume_id))?;
        let server = self.require_server(server_id)?;
        if volume.location != server.location {
            return Err(ApiFailure::invalid_input(
                "server",
                format!(
                    "volume {volume_id} is in {} and server {server_id} in {}: they must share a location",
                    volume.location, server.location
                ),
            ));
        }
        let resources = vec![Resource::Volume(volume_id), Resource::Server(server_id)];
        // Locks before attachment: while a detach runs the volume is still
        // attached, and the right answer is "try again", not "attached".
        self.check_unlocked(&resources)?;
        if let Some(attached_to) = volume.server {
            // The reference gives no status for this code. 409 would put it
            // next to `conflict`, which is transient and retried; this is
            // final until someone detaches, so 422 (a valid request the
            // current state forbids) says it better.
            return Err(ApiFailure::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "volume_already_attached",
                format!("volume {volume_id} is already attached to server {attached_to}"),
            ));
        }
        Ok(ActionPlan {
            command: "attach_volume",
            resources,
            change: Change::Volume {
                id: volume_id,
                server: Some(server_id),
            },
        })
    }

    pub(crate) fn plan_detach(&self, volume_id: u64) -> Result<ActionPlan, ApiFailure> {
        let current = self
            .world
            .volume(volume_id)
            .ok_or_else(|| ApiFailure::not_found("volume", volume_id))?
            .server;
        // UNCERTAIN: detaching a detached volume is simulated as an action
        // that succeeds without change.
        let mut resources = vec![Resource::Volume(volume_id)];
        resources.extend(current.map(Resource::Server));
        self.check_unlocked(&resources)?;
        Ok(ActionPlan {
            command: "detach_volume",
            resources,
            change: Change::Volume {
                id: volume_id,
                server: None,
            },
        })
    }

    /// Turns a plan into a running action holding its locks. A pending
    /// `action_stuck` fault makes it one that never ends.
    pub(crate) fn start_action(&mut self, plan: ActionPlan, duration: Duration) -> StartedAction {
        let stuck = fault::take_first(&mut self.faults, |fault| {
            fault.matches_action_stuck(plan.command)
        })
        .is_some();
        let id = self.next_action_id;
        self.next_action_id += 1;
        for resource in &plan.resources {
            self.locks.insert(*resource, id);
        }
        let duration = (!stuck).then_some(duration);
        let action = SimAction {
            id,
            command: plan.command,
            state: ActionState::Running,
            started: render::now_timestamp(),
            started_at: Instant::now(),
            duration,
            finished: None,
            resources: plan.resources,
            change: plan.change,
        };
        let document = render_action(&action, action.started_at);
        self.actions.insert(id, action);
        StartedAction {
            id,
            document,
            duration,
        }
    }

    /// The action's time is up: fail it if an `action_error` fault says
    /// so, end it in success without effect if an `action_without_effect`
    /// fault says so, or say what its success will report.
    pub(crate) fn begin_completion(&mut self, id: u64) -> Completion {
        let Some(action) = self.actions.get(&id) else {
            return Completion::Gone;
        };
        if action.state != ActionState::Running {
            return Completion::Gone;
        }
        let command = action.command;
        let change = action.change;
        if let Some(Fault::ActionError { code, message, .. }) =
            fault::take_first(&mut self.faults, |fault| {
                fault.matches_action_error(command)
            })
        {
            let message = message.unwrap_or_else(|| format!("{command} failed (injected)"));
            self.finish(id, ActionState::Error { code, message });
            return Completion::Failed;
        }
        if fault::take_first(&mut self.faults, |fault| {
            fault.matches_action_without_effect(command)
        })
        .is_some()
        {
            self.finish(id, ActionState::Success);
            return Completion::SucceededWithoutEffect;
        }
        Completion::Succeeds(self.event_of(change))
    }

    /// The event `change` will cause, `None` if it changes nothing.
    fn event_of(&self, change: Change) -> Option<SimEvent> {
        match change {
            Change::FloatingIp { id, server } => {
                let floating_ip = self.world.floating_ip(id)?;
                (floating_ip.server != server).then(|| SimEvent::FloatingIpAssigned {
                    floating_ip: id,
                    ip: floating_ip.ip.clone(),
                    server,
                })
            }
            Change::Volume { id, server } => {
                let volume = self.world.volume(id)?;
                (volume.server != server).then(|| SimEvent::VolumeAttached {
                    volume: id,
                    server,
                    linux_device: volume.linux_device.clone(),
                })
            }
        }
    }

    /// Applies the action's change and marks it `success`.
    pub(crate) fn finish_success(&mut self, id: u64) {
        let Some(change) = self.actions.get(&id).map(|action| action.change) else {
            return;
        };
        match change {
            Change::FloatingIp { id, server } => {
                if let Some(floating_ip) = self.world.floating_ip_mut(id) {
                    floating_ip.server = server;
                }
            }
            Change::Volume { id, server } => {
                if let Some(volume) = self.world.volume_mut(id) {
                    volume.server = server;
                }
            }
        }
        self.finish(id, ActionState::Success);
    }

    /// Ends the action in error without changing the world.
    pub(crate) fn finish_error(&mut self, id: u64, code: &str, message: &str) {
        self.finish(
            id,
            ActionState::Error {
                code: code.to_string(),
                message: message.to_string(),
            },
        );
    }

    fn finish(&mut self, id: u64, state: ActionState) {
        let Some(action) = self.actions.get_mut(&id) else {
            return;
        };
        action.state = state;
        action.finished = Some(render::now_timestamp());
        self.locks.retain(|_, holder| *holder != id);
    }

    pub(crate) fn set_power(&mut self, server: u64, on: bool) -> bool {
        match self.world.server_mut(server) {
            Some(server) => {
                server.status = if on { "running" } else { "off" }.to_string();
                true
            }
            None => false,
        }
    }
}

fn render_action(action: &SimAction, now: Instant) -> Value {
    let (status, progress, error) = match &action.state {
        ActionState::Running => {
            let progress = match action.duration {
                Some(duration) if !duration.is_zero() => {
                    let elapsed = now.saturating_duration_since(action.started_at);
                    ((elapsed.as_secs_f64() / duration.as_secs_f64()) * 100.0).min(99.0) as u32
                }
                _ => 0,
            };
            ("running", progress, None)
        }
        ActionState::Success => ("success", 100, None),
        ActionState::Error { code, message } => {
            ("error", 100, Some((code.as_str(), message.as_str())))
        }
    };
    render::action(ActionView {
        id: action.id,
        command: action.command,
        status,
        progress,
        started: &action.started,
        finished: action.finished.as_deref(),
        error,
        resources: action
            .resources
            .iter()
            .map(|resource| (resource.id(), resource.kind()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> SimState {
        let world = World::from_json_str(
            r#"{"servers":[{"id":1,"name":"n1","location":"fsn1"},{"id":2,"name":"n2","location":"fsn1"},{"id":3,"name":"far","location":"hel1"}],
                "floating_ips":[{"id":10,"ip":"10.0.0.10","home_location":"fsn1","server":1}],
                "volumes":[{"id":20,"location":"fsn1","server":1},{"id":21,"location":"fsn1"}]}"#,
        )
        .unwrap()
        .normalized()
        .unwrap();
        SimState::new(&SimConfig::new("t"), world)
    }

    fn code(result: Result<ActionPlan, ApiFailure>) -> (u16, String) {
        let failure = result.unwrap_err();
        (failure.status.as_u16(), failure.code)
    }

    #[test]
    fn requests_are_checked_in_order_exists_location_lock_state() {
        let mut state = state();
        assert_eq!(code(state.plan_attach(99, 2)), (404, "not_found".into()));
        assert_eq!(code(state.plan_attach(21, 99)), (404, "not_found".into()));
        assert_eq!(
            code(state.plan_attach(21, 3)),
            (400, "invalid_input".into())
        );
        assert_eq!(
            code(state.plan_attach(20, 2)),
            (422, "volume_already_attached".into())
        );

        // A running detach locks the volume and its server: "try again".
        let detach = state.plan_detach(20).unwrap();
        let started = state.start_action(detach, Duration::from_secs(1));
        assert_eq!(code(state.plan_attach(20, 2)), (423, "locked".into()));
        assert_eq!(code(state.plan_assign(10, 1)), (423, "locked".into()));
        assert!(state.plan_assign(10, 2).is_ok());

        assert!(matches!(
            state.begin_completion(started.id),
            Completion::Succeeds(Some(SimEvent::VolumeAttached {
                volume: 20,
                server: None,
                ..
            }))
        ));
        // Not applied until finish_success: the hook runs in between.
        assert_eq!(state.world.volume(20).unwrap().server, Some(1));
        state.finish_success(started.id);
        assert_eq!(state.world.volume(20).unwrap().server, None);
        assert!(state.plan_attach(20, 2).is_ok());
        assert_eq!(
            state.action_document(started.id).unwrap()["status"],
            "success"
        );
    }

    #[test]
    fn an_injected_action_error_leaves_the_world_alone() {
        let mut state = state();
        state
            .faults
            .push(Fault::action_error("assign_floating_ip", "server_error", 1));
        let plan = state.plan_assign(10, 2).unwrap();
        let started = state.start_action(plan, Duration::from_secs(1));
        assert!(matches!(
            state.begin_completion(started.id),
            Completion::Failed
        ));
        assert_eq!(state.world.floating_ip(10).unwrap().server, Some(1));
        let document = state.action_document(started.id).unwrap();
        assert_eq!(document["status"], "error");
        assert_eq!(document["error"]["code"], "server_error");
        assert!(state.plan_assign(10, 2).is_ok(), "locks are released");
    }

    #[test]
    fn an_injected_action_without_effect_succeeds_and_leaves_the_world_alone() {
        let mut state = state();
        state
            .faults
            .push(Fault::action_without_effect("assign_floating_ip", 1));
        let plan = state.plan_assign(10, 2).unwrap();
        let started = state.start_action(plan, Duration::from_secs(1));
        assert!(matches!(
            state.begin_completion(started.id),
            Completion::SucceededWithoutEffect
        ));
        assert_eq!(state.world.floating_ip(10).unwrap().server, Some(1));
        let document = state.action_document(started.id).unwrap();
        assert_eq!(document["status"], "success");
        assert_eq!(document["error"], Value::Null);
        assert!(state.faults.is_empty(), "the fault is used up");

        // The next assign takes.
        let plan = state.plan_assign(10, 2).unwrap();
        let started = state.start_action(plan, Duration::from_secs(1));
        assert!(matches!(
            state.begin_completion(started.id),
            Completion::Succeeds(Some(SimEvent::FloatingIpAssigned {
                floating_ip: 10,
                server: Some(2),
                ..
            }))
        ));
        state.finish_success(started.id);
        assert_eq!(state.world.floating_ip(10).unwrap().server, Some(2));
    }

    #[test]
    fn a_change_to_the_same_state_reports_no_event() {
        let mut state = state();
        let plan = state.plan_assign(10, 1).unwrap();
        let started = state.start_action(plan, Duration::from_secs(1));
        assert!(matches!(
            state.begin_completion(started.id),
            Completion::Succeeds(None)
        ));
    }
}
