//! [`Fault`]: a failure to inject, once or a few times.
//!
//! Five kinds, each matched by what a test can name: an answer with an
//! error status (`http`), a request that hangs past the client's timeout
//! (`timeout`), an action that ends in `error` (`action_error`), an
//! action that never ends (`action_stuck`), and an action that reports
//! `success` but changes nothing (`action_without_effect`). In JSON
//! (`POST /_sim/faults`) the `kind` may be left out for `http`:
//! `{"path_contains": "/actions/assign", "method": "POST", "status": 503,
//! "code": "service_error", "count": 2}`.
//!
//! These are failures to test against, not a description of the real API:
//! in particular `action_without_effect` is no documented Hetzner
//! behaviour. It is the shape, as far as a client can see it, of the one
//! reported problem the drivers guard against (an in-place floating IP
//! reassign that did not take, hcloud-fip-controller #36; unassign, then
//! assign was reliable there): the action succeeds, the API keeps showing
//! the old server, and the route stays where it was.

use serde::{Deserialize, Serialize};

/// A failure the simulator produces instead of its normal answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer matching requests with `status`: with an API error document
    /// when `code` is set, with a bare HTML body (as a load balancer in
    /// front of the API would) when it is not.
    Http {
        #[serde(default)]
        path_contains: Option<String>,
        #[serde(default)]
        method: Option<String>,
        status: u16,
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default = "one")]
        count: u32,
    },
    /// Hold matching requests for `hang_ms` (by default until the
    /// simulator stops), then answer a bare 504.
    Timeout {
        #[serde(default)]
        path_contains: Option<String>,
        #[serde(default)]
        method: Option<String>,
        #[serde(default)]
        hang_ms: Option<u64>,
        #[serde(default = "one")]
        count: u32,
    },
    /// The next action of `command` (any command when unset) ends in
    /// `error` with `code` instead of succeeding; the world is unchanged.
    ActionError {
        #[serde(default)]
        command: Option<String>,
        code: String,
        #[serde(default)]
        message: Option<String>,
        #[serde(default = "one")]
        count: u32,
    },
    /// The next action of `command` stays `running` for good, and so do the
    /// locks it holds.
    ActionStuck {
        #[serde(default)]
        command: Option<String>,
        #[serde(default = "one")]
        count: u32,
    },
    /// The next action of `command` ends in `success` without changing
    /// anything: the API keeps showing the old state and the event hook is
    /// not called (in the lab, the floating IP stays routed to its old
    /// server). An injected failure, not modelled Hetzner behaviour (see
    /// the module's documentation).
    ActionWithoutEffect {
        #[serde(default)]
        command: Option<String>,
        #[serde(default = "one")]
        count: u32,
    },
}

fn one() -> u32 {
    1
}

impl Fault {
    /// `count` answers of `status` with the error document `code` to
    /// requests whose path contains `path_contains`.
    pub fn http(path_contains: &str, status: u16, code: &str, count: u32) -> Fault {
        Fault::Http {
            path_contains: Some(path_contains.to_string()),
            method: None,
            status,
            code: Some(code.to_string()),
            message: None,
            count,
        }
    }

    /// `count` answers of `status` without an error document.
    pub fn bare_status(path_contains: &str, status: u16, count: u32) -> Fault {
        Fault::Http {
            path_contains: Some(path_contains.to_string()),
            method: None,
            status,
            code: None,
            message: None,
            count,
        }
    }

    /// `count` requests whose path contains `path_contains` hang until the
    /// simulator stops.
    pub fn timeout(path_contains: &str, count: u32) -> Fault {
        Fault::Timeout {
            path_contains: Some(path_contains.to_string()),
            method: None,
            hang_ms: None,
            count,
        }
    }

    /// `count` actions of `command` end in error `code`.
    pub fn action_error(command: &str, code: &str, count: u32) -> Fault {
        Fault::ActionError {
            command: Some(command.to_string()),
            code: code.to_string(),
            message: None,
            count,
        }
    }

    /// `count` actions of `command` never end.
    pub fn action_stuck(command: &str, count: u32) -> Fault {
        Fault::ActionStuck {
            command: Some(command.to_string()),
            count,
        }
    }

    /// `count` actions of `command` succeed without changing anything.
    pub fn action_without_effect(command: &str, count: u32) -> Fault {
        Fault::ActionWithoutEffect {
            command: Some(command.to_string()),
            count,
        }
    }

    /// Reads a fault from the control API's JSON, where `kind` defaults to
    /// `http`.
    pub fn from_json(mut value: serde_json::Value) -> Result<Fault, serde_json::Error> {
        if let Some(object) = value.as_object_mut() {
            object
                .entry("kind")
                .or_insert_with(|| serde_json::Value::from("http"));
        }
        serde_json::from_value(value)
    }

    fn count_mut(&mut self) -> &mut u32 {
        match self {
            Fault::Http { count, .. }
            | Fault::Timeout { count, .. }
            | Fault::ActionError { count, .. }
            | Fault::ActionStuck { count, .. }
            | Fault::ActionWithoutEffect { count, .. } => count,
        }
    }

    /// Whether this is an `http` or `timeout` fault for this request.
    pub(crate) fn matches_request(&self, request_method: &str, request_path: &str) -> bool {
        let (path_contains, method) = match self {
            Fault::Http {
                path_contains,
                method,
                ..
            }
            | Fault::Timeout {
                path_contains,
                method,
                ..
            } => (path_contains, method),
            Fault::ActionError { .. }
            | Fault::ActionStuck { .. }
            | Fault::ActionWithoutEffect { .. } => return false,
        };
        let method_matches = method
            .as_ref()
            .is_none_or(|method| method.eq_ignore_ascii_case(request_method));
        let path_matches = path_contains
            .as_ref()
            .is_none_or(|part| request_path.contains(part.as_str()));
        method_matches && path_matches
    }

    pub(crate) fn matches_action_error(&self, action_command: &str) -> bool {
        matches!(self, Fault::ActionError { command, .. } if command_matches(command, action_command))
    }

    pub(crate) fn matches_action_stuck(&self, action_command: &str) -> bool {
        matches!(self, Fault::ActionStuck { command, .. } if command_matches(command, action_command))
    }

    pub(crate) fn matches_action_without_effect(&self, action_command: &str) -> bool {
        matches!(self, Fault::ActionWithoutEffect { command, .. } if command_matches(command, action_command))
    }
}

fn command_matches(command: &Option<String>, action_command: &str) -> bool {
    command
        .as_deref()
        .is_none_or(|command| command == action_command)
}

/// Takes one use of the first fault that `matches`, removing it when it is
/// used up, and returns it as it was.
pub(crate) fn take_first(
    faults: &mut Vec<Fault>,
    matches: impl Fn(&Fault) -> bool,
) -> Option<Fault> {
    let index = faults.iter().position(matches)?;
    let taken = faults[index].clone();
    let count = faults[index].count_mut();
    *count = count.saturating_sub(1);
    if *count == 0 {
        faults.remove(index);
    }
    Some(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_without_a_kind_is_an_http_fault() {
        let fault = Fault::from_json(serde_json::json!({
            "path_contains": "/actions/assign", "method": "POST", "status": 503,
            "code": "service_error", "count": 2
        }))
        .unwrap();
        assert_eq!(
            fault,
            Fault::Http {
                path_contains: Some("/actions/assign".to_string()),
                method: Some("POST".to_string()),
                status: 503,
                code: Some("service_error".to_string()),
                message: None,
                count: 2,
            }
        );
        let fault = Fault::from_json(serde_json::json!({"kind": "timeout"})).unwrap();
        assert!(fault.matches_request("GET", "/v1/anything"));
        let fault = Fault::from_json(serde_json::json!({
            "kind": "action_error", "command": "attach_volume", "code": "server_error"
        }))
        .unwrap();
        assert!(fault.matches_action_error("attach_volume"));
        assert!(!fault.matches_action_error("detach_volume"));
        assert!(!fault.matches_request("POST", "/v1/volumes/1/actions/attach"));
        let fault = Fault::from_json(serde_json::json!({
            "kind": "action_without_effect", "command": "assign_floating_ip"
        }))
        .unwrap();
        assert_eq!(fault, Fault::action_without_effect("assign_floating_ip", 1));
        assert!(fault.matches_action_without_effect("assign_floating_ip"));
        assert!(!fault.matches_action_without_effect("unassign_floating_ip"));
        assert!(!fault.matches_action_error("assign_floating_ip"));
        assert!(!fault.matches_request("POST", "/v1/floating_ips/1/actions/assign"));
    }

    #[test]
    fn faults_are_used_up_in_order() {
        let mut faults = vec![
            Fault::http("/volumes", 502, "bad_gateway", 2),
            Fault::bare_status("/volumes", 504, 1),
        ];
        let statuses: Vec<u16> = std::iter::from_fn(|| {
            take_first(&mut faults, |fault| {
                fault.matches_request("GET", "/v1/volumes")
            })
        })
        .map(|fault| match fault {
            Fault::Http { status, .. } => status,
            _ => unreachable!(),
        })
        .collect();
        assert_eq!(statuses, [502, 502, 504]);
        assert!(faults.is_empty());
    }
}
