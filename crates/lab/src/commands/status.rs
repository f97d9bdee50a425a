//! `status`: every node's role as its own agent reports it.
//!
//! Each agent is asked for `GET /status` from inside the node's own network
//! namespace, all nodes in parallel, so a partitioned node is still read
//! correctly. A powered-off node, or one whose agent does not answer, is
//! `down`. The JSON shape is design §7's (more fields are allowed).
//!
//! A keepalived lab has no agents to ask: a node whose keepalived runs is
//! `master` when it holds the floating IP, `fault` when its notify script
//! last wrote FAULT, else `backup`; its `api` is null. `manager` says which
//! kind of lab it is.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::state::{LabState, NodeState};

/// How long one agent may take to answer.
const AGENT_TIMEOUT: Duration = Duration::from_millis(1500);

/// What a node's agent said (or why it said nothing).
#[derive(Debug, Clone)]
pub struct NodeAnswer {
    /// master, backup, witness, fault (from the agent) or down.
    pub role: String,
    pub epoch: Option<u64>,
    /// Why the role is `down`.
    pub error: Option<String>,
    /// What the host shows, whatever the agent says: the floating IP on the
    /// node's eth0, the volume in its mount namespace.
    pub holds_floating_ip: bool,
    pub volume_mounted: bool,
    /// What keepalived's notify script last wrote (keepalived labs only).
    pub keepalived_state: Option<String>,
    /// `--storage btrfs`: the agent's `replication` (newest snapshot here,
    /// the data age its last promotion started from, transfers).
    pub replication: Option<serde_json::Value>,
    /// The newest promotion in the agent's replicated history that ran
    /// the `promote_database` step.
    pub promote_database: Option<PromoteDatabase>,
    /// The Raft leader as this node's agent knows it (by name).
    pub raft_leader: Option<String>,
}

/// The `promote_database` step of one promotion, as the history records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromoteDatabase {
    pub epoch: u64,
    /// The node promoted.
    pub node: String,
    pub ok: bool,
    /// How long the step took: draining the relay log, stopping
    /// replication, read_only OFF.
    pub duration_ms: u64,
}

/// The newest `promote_database` step in a `/status` document's history.
fn last_promote_database(status: &serde_json::Value) -> Option<PromoteDatabase> {
    status["history"]
        .as_array()?
        .iter()
        .filter_map(|record| {
            let step = record["outcome"]["steps"]
                .as_array()?
                .iter()
                .find(|step| step["name"] == "promote_database")?;
            Some(PromoteDatabase {
                epoch: record["epoch"].as_u64()?,
                node: record["to"].as_str()?.to_string(),
                ok: step["ok"].as_bool()?,
                duration_ms: step["duration_ms"].as_u64()?,
            })
        })
        .max_by_key(|step| step.epoch)
}

impl NodeAnswer {
    fn down(error: impl Into<String>) -> NodeAnswer {
        NodeAnswer {
            role: "down".to_string(),
            epoch: None,
            error: Some(error.into()),
            holds_floating_ip: false,
            volume_mounted: false,
            keepalived_state: None,
            replication: None,
            promote_database: None,
            raft_leader: None,
        }
    }
}

#[derive(Serialize)]
struct StatusJson<'a> {
    floating_ip: String,
    client_namespace: &'a str,
    stack: &'static str,
    /// `mailherd` or `keepalived`.
    manager: &'static str,
    /// keepalived labs only: the timing keepalived runs with.
    #[serde(skip_serializing_if = "Option::is_none")]
    keepalived: Option<&'static crate::keepalived::Timing>,
    lab_dir: String,
    /// The control token of every agent (`mailherd switchover --token-file`);
    /// keepalived labs have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_file: Option<String>,
    volume: VolumeJson,
    /// `shared` (one volume) or `btrfs` (a copy per mail node, replicated).
    storage: &'static str,
    nodes: Vec<NodeJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mail: Option<MailJson<'a>>,
    /// `up --haproxy` only: HAProxy's namespace and whether it serves SMTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    haproxy: Option<FrontJson<'a>>,
    /// `up --gateway` only: the mail gateway's.
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<FrontJson<'a>>,
    /// `up --signup` only: the signup service's base URL on the floating IP
    /// (the master's instance: the form at `/`, `POST /api/signup`).
    #[serde(skip_serializing_if = "Option::is_none")]
    signup: Option<String>,
    /// `--cloud hetzner-sim` only: design §7's `cloud` object, exactly.
    #[serde(skip_serializing_if = "Option::is_none")]
    cloud: Option<CloudJson<'a>>,
    /// `up --mariadb` only: the application's account and every mail
    /// node's server as it says it is (read from the client namespace).
    #[serde(skip_serializing_if = "Option::is_none")]
    mariadb: Option<MariadbJson>,
}

#[derive(Serialize)]
struct MariadbJson {
    port: u16,
    database: &'static str,
    user: &'static str,
    password: String,
    /// The newest promotion's `promote_database` step (from the agents'
    /// replicated history), when any agent answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_promotion: Option<PromoteDatabase>,
    /// Why the servers could not be read (then `nodes` is empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    nodes: Vec<crate::mariadb::ServerJson>,
}

fn mariadb_json(state: &LabState, answers: &[NodeAnswer]) -> Option<MariadbJson> {
    let lab = state.mariadb.as_ref()?;
    let (nodes, error) = match crate::mariadb::query(state) {
        Ok(nodes) => (nodes, None),
        Err(error) => (Vec::new(), Some(format!("{error:#}"))),
    };
    Some(MariadbJson {
        port: crate::mariadb::PORT,
        database: crate::mariadb::APP_DATABASE,
        user: crate::mariadb::APP_USER,
        password: lab.app_password.clone(),
        last_promotion: answers
            .iter()
            .filter_map(|answer| answer.promote_database.clone())
            .max_by_key(|step| step.epoch),
        error,
        nodes,
    })
}

#[derive(Serialize)]
struct CloudJson<'a> {
    /// The simulator's base URL (answers the Hetzner API paths), reachable
    /// from the nodes' namespaces.
    api: &'a str,
    token: &'a str,
    floating_ip_id: u64,
    volume_ids: &'a [u64],
    /// Node name → server id.
    servers: &'a std::collections::BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct FrontJson<'a> {
    namespace: &'a str,
    address: String,
    /// Where clients send SMTP to it.
    smtp: String,
    /// Something accepts connections on its SMTP port.
    serving: bool,
}

fn front_json(front: &crate::state::ClientState) -> FrontJson<'_> {
    FrontJson {
        namespace: &front.namespace,
        address: front.address.to_string(),
        smtp: crate::front::smtp_address(front).to_string(),
        serving: crate::front::serves_smtp(front),
    }
}

#[derive(Serialize)]
struct VolumeJson {
    device: Option<String>,
    mount_point: String,
}

#[derive(Serialize)]
struct NodeJson<'a> {
    name: &'a str,
    namespace: &'a str,
    address: String,
    role: String,
    config: String,
    /// The agent's HTTP API; null on keepalived nodes, which have none.
    api: Option<String>,
    kind: crate::topology::NodeKind,
    epoch: Option<u64>,
    /// Faults the lab injected and `heal` has not undone.
    faults: Vec<&'static str>,
    holds_floating_ip: bool,
    volume_mounted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    keepalived_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replication: Option<serde_json::Value>,
    /// The Raft leader (the decider) as this node's agent knows it; null
    /// when it knows none, or on a node that did not answer.
    raft_leader: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct MailJson<'a> {
    user: &'a str,
    password: &'a str,
}

pub fn run(json: bool) -> Result<()> {
    let state = LabState::load_current()?;
    let answers = query_all(&state);
    if json {
        let mut document = to_json(&state, &answers);
        document.mariadb = mariadb_json(&state, &answers);
        println!(
            "{}",
            serde_json::to_string_pretty(&document).expect("status serialises")
        );
    } else {
        print_table(&state, &answers);
        if let Some(mariadb) = mariadb_json(&state, &answers) {
            print_mariadb(&mariadb);
        }
    }
    Ok(())
}

/// Asks every node, in parallel; answers come back in node order.
pub fn query_all(state: &LabState) -> Vec<NodeAnswer> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = state
            .nodes
            .iter()
            .map(|node| scope.spawn(move || query(state, node)))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|_| NodeAnswer::down("the status query panicked"))
            })
            .collect()
    })
}

fn query(state: &LabState, node: &NodeState) -> NodeAnswer {
    let holds_floating_ip = crate::netns::interface_addresses(&node.namespace)
        .map(|addresses| addresses.contains(&state.floating_ip))
        .unwrap_or(false);
    let mut answer = if state.manager.is_keepalived() {
        ask_keepalived(state, node, holds_floating_ip)
    } else {
        ask_agent(node)
    };
    answer.holds_floating_ip = holds_floating_ip;
    answer.volume_mounted =
        crate::node::has_mount(&node.namespace, &state.volume.mount_point).unwrap_or(false);
    answer
}

/// A keepalived node's role, from the host: keepalived runs, the address,
/// the notify script's last word.
fn ask_keepalived(state: &LabState, node: &NodeState, holds_floating_ip: bool) -> NodeAnswer {
    if node.powered_off {
        return NodeAnswer::down("powered off");
    }
    match crate::keepalived::processes(state, node) {
        Ok(processes) if processes.is_empty() => {
            return NodeAnswer::down("keepalived is not running");
        }
        Ok(_) => {}
        Err(error) => return NodeAnswer::down(format!("{error:#}")),
    }
    let keepalived_state = crate::keepalived::read_state(node);
    NodeAnswer {
        role: keepalived_role(holds_floating_ip, keepalived_state.as_deref()).to_string(),
        epoch: None,
        error: None,
        holds_floating_ip,
        volume_mounted: false,
        keepalived_state,
        replication: None,
        promote_database: None,
        raft_leader: None,
    }
}

/// The address is what clients follow, so its holder is the master
/// (keepalived adds it before notify_master runs, and a frozen keepalived
/// keeps it); FAULT is only known from the notify script.
fn keepalived_role(holds_floating_ip: bool, notified: Option<&str>) -> &'static str {
    match (holds_floating_ip, notified) {
        (true, _) => "master",
        (false, Some("FAULT")) => "fault",
        (false, _) => "backup",
    }
}

fn ask_agent(node: &NodeState) -> NodeAnswer {
    if node.powered_off {
        return NodeAnswer::down("powered off");
    }
    match agent_request(node, "/status", None) {
        Ok((status, body)) if status.is_success() => parse_status(&body),
        Ok((status, _)) => NodeAnswer::down(format!("/status answered HTTP {status}")),
        Err(error) => NodeAnswer::down(format!("{error:#}")),
    }
}

/// A request to `path` on the node's agent API, from inside the node's
/// namespace: a GET, or a POST of `{}` with the lab's token when `token`
/// is given. Returns the HTTP status and the body.
pub fn agent_request(
    node: &NodeState,
    path: &str,
    token: Option<&str>,
) -> Result<(reqwest::StatusCode, String)> {
    let url = format!("http://{}{path}", node.api);
    // The socket must be made by the thread that entered the node's network
    // namespace, so the request runs on a current-thread runtime there.
    crate::netns::run_in(&node.namespace, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = reqwest::Client::builder()
                .timeout(AGENT_TIMEOUT)
                .no_proxy()
                .build()?;
            let request = match token {
                None => client.get(&url),
                Some(token) => client
                    .post(&url)
                    .bearer_auth(token)
                    .json(&serde_json::json!({})),
            };
            let response = request.send().await?;
            let status = response.status();
            let body = response.text().await?;
            anyhow::Ok((status, body))
        })
    })
}

fn parse_status(body: &str) -> NodeAnswer {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
        return NodeAnswer::down("/status is not JSON");
    };
    match value.get("role").and_then(|role| role.as_str()) {
        Some(role) => NodeAnswer {
            role: role.to_string(),
            epoch: value.get("epoch").and_then(|epoch| epoch.as_u64()),
            error: None,
            holds_floating_ip: false,
            volume_mounted: false,
            keepalived_state: None,
            replication: value.get("replication").cloned(),
            promote_database: last_promote_database(&value),
            raft_leader: value["leader"]["name"].as_str().map(str::to_string),
        },
        None => NodeAnswer::down("/status has no role"),
    }
}

fn faults(node: &NodeState) -> Vec<&'static str> {
    let mut faults = Vec::new();
    if node.powered_off {
        faults.push("power");
    }
    if node.partitioned {
        faults.push("partition");
    }
    if !node.cut_from.is_empty() {
        faults.push(if node.cut_one_way {
            "one-way-partition"
        } else {
            "partial-partition"
        });
    }
    if node.frozen_agent.is_some() {
        faults.push("agent-freeze");
    }
    faults
}

fn to_json<'a>(state: &'a LabState, answers: &[NodeAnswer]) -> StatusJson<'a> {
    StatusJson {
        floating_ip: state.floating_ip.to_string(),
        client_namespace: &state.client.namespace,
        stack: state.stack.name(),
        manager: state.manager.software(),
        keepalived: state.manager.keepalived_timing(),
        lab_dir: state.lab_dir.display().to_string(),
        token_file: (!state.manager.is_keepalived()).then(|| {
            crate::topology::token_file(&state.lab_dir)
                .display()
                .to_string()
        }),
        volume: VolumeJson {
            device: state
                .volume
                .loop_device
                .as_ref()
                .map(|device| device.display().to_string()),
            mount_point: state.volume.mount_point.display().to_string(),
        },
        storage: state.storage.name(),
        nodes: state
            .nodes
            .iter()
            .zip(answers)
            .map(|(node, answer)| NodeJson {
                name: &node.name,
                namespace: &node.namespace,
                address: node.address.to_string(),
                role: answer.role.clone(),
                config: node.config.display().to_string(),
                api: (!state.manager.is_keepalived()).then(|| format!("http://{}", node.api)),
                kind: node.kind,
                epoch: answer.epoch,
                faults: faults(node),
                holds_floating_ip: answer.holds_floating_ip,
                volume_mounted: answer.volume_mounted,
                keepalived_state: answer.keepalived_state.clone(),
                replication: answer.replication.clone(),
                raft_leader: answer.raft_leader.clone(),
                error: answer.error.clone(),
            })
            .collect(),
        mail: state.mail.as_ref().map(|account| MailJson {
            user: &account.user,
            password: &account.password,
        }),
        haproxy: state.haproxy.as_ref().map(front_json),
        gateway: state.gateway.as_ref().map(front_json),
        signup: state.signup.then(|| {
            format!(
                "http://{}:{}",
                state.floating_ip,
                crate::topology::SIGNUP_PORT
            )
        }),
        cloud: state.hetzner_sim.as_ref().map(|cloud| CloudJson {
            api: &cloud.api_url,
            token: &cloud.token,
            floating_ip_id: cloud.floating_ip_id,
            volume_ids: &cloud.volume_ids,
            servers: &cloud.servers,
        }),
        mariadb: None,
    }
}

fn print_mariadb(mariadb: &MariadbJson) {
    if let Some(error) = &mariadb.error {
        println!("MariaDB: {error}");
    }
    if let Some(step) = &mariadb.last_promotion {
        println!(
            "MariaDB: promote_database on {} (epoch {}) took {} ms{}",
            step.node,
            step.epoch,
            step.duration_ms,
            if step.ok { "" } else { ", and failed" }
        );
    }
    for server in &mariadb.nodes {
        println!(
            "MariaDB {:<5} {:<16} {:<9} read_only={} {}",
            server.name,
            server.address,
            server.role,
            server
                .read_only
                .map(|read_only| if read_only { "ON" } else { "OFF" })
                .unwrap_or("-"),
            match (&server.replicating_from, &server.error) {
                (Some(source), _) => format!(
                    "from {source} (IO {}, SQL {})",
                    server.io_running.as_deref().unwrap_or("-"),
                    server.sql_running.as_deref().unwrap_or("-")
                ),
                (None, Some(error)) => error.clone(),
                (None, None) => String::new(),
            }
        );
    }
}

pub fn print_table(state: &LabState, answers: &[NodeAnswer]) {
    println!(
        "floating IP {} (client namespace {}), stack {}, manager {}",
        state.floating_ip,
        state.client.namespace,
        state.stack.name(),
        state.manager.name()
    );
    println!(
        "{:<5} {:<10} {:<11} {:<8} {:<6} {:<15} {:<9} API",
        "NODE", "NAMESPACE", "ADDRESS", "ROLE", "EPOCH", "FAULTS", "HOLDS"
    );
    for (node, answer) in state.nodes.iter().zip(answers) {
        let faults = faults(node);
        let mut holds = Vec::new();
        if answer.holds_floating_ip {
            holds.push("ip");
        }
        if answer.volume_mounted {
            holds.push("volume");
        }
        println!(
            "{:<5} {:<10} {:<11} {:<8} {:<6} {:<15} {:<9} {}",
            node.name,
            node.namespace,
            node.address.to_string(),
            answer.role,
            answer
                .epoch
                .map(|epoch| epoch.to_string())
                .unwrap_or_else(|| "-".to_string()),
            if faults.is_empty() {
                "-".to_string()
            } else {
                faults.join(",")
            },
            if holds.is_empty() {
                "-".to_string()
            } else {
                holds.join(",")
            },
            if state.manager.is_keepalived() {
                "- (keepalived)".to_string()
            } else {
                format!("http://{}", node.api)
            }
        );
    }
    for (what, front) in [("HAProxy", &state.haproxy), ("gateway", &state.gateway)] {
        if let Some(front) = front {
            println!(
                "{what} on {} (namespace {}): {}",
                crate::front::smtp_address(front),
                front.namespace,
                if crate::front::serves_smtp(front) {
                    "serving"
                } else {
                    "not serving"
                }
            );
        }
    }
    if let Some(account) = &state.mail {
        println!("mailbox {} password {}", account.user, account.password);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_role_and_epoch_from_the_agents_status() {
        let answer = parse_status(r#"{"node":"n1","role":"master","epoch":4,"other":true}"#);
        assert_eq!(answer.role, "master");
        assert_eq!(answer.epoch, Some(4));
        assert!(answer.error.is_none());
        assert_eq!(answer.raft_leader, None);
        let led = parse_status(r#"{"role":"backup","leader":{"id":2,"name":"n2","term":7}}"#);
        assert_eq!(led.raft_leader.as_deref(), Some("n2"));
        assert_eq!(parse_status("not json").role, "down");
        assert_eq!(parse_status(r#"{"node":"n1"}"#).role, "down");
    }

    #[test]
    fn the_newest_promote_database_step_is_picked_from_the_history() {
        let status: serde_json::Value = serde_json::from_str(
            r#"{"role":"backup","history":[
                {"epoch":1,"to":"n1","outcome":{"ok":true,"steps":[
                    {"name":"promote_database","ok":true,"duration_ms":40}]}},
                {"epoch":3,"to":"n2","outcome":{"ok":true,"steps":[
                    {"name":"add_floating_ip","ok":true,"duration_ms":2},
                    {"name":"promote_database","ok":true,"duration_ms":312}]}},
                {"epoch":4,"to":"n3","outcome":null},
                {"epoch":5,"to":"n3","outcome":{"ok":true,"steps":[]}}]}"#,
        )
        .unwrap();
        assert_eq!(
            last_promote_database(&status),
            Some(PromoteDatabase {
                epoch: 3,
                node: "n2".into(),
                ok: true,
                duration_ms: 312
            })
        );
        assert_eq!(
            last_promote_database(&serde_json::json!({"role": "x"})),
            None
        );
    }

    #[test]
    fn json_has_the_fields_of_design_section_7() {
        let state = crate::state::tests::sample(std::path::Path::new("/var/lib/mailherd-lab"));
        let answers = vec![
            NodeAnswer {
                holds_floating_ip: true,
                volume_mounted: true,
                ..parse_status(r#"{"role":"master","epoch":2}"#)
            },
            NodeAnswer::down("powered off"),
            parse_status(r#"{"role":"witness","epoch":2}"#),
        ];
        let value = serde_json::to_value(to_json(&state, &answers)).unwrap();
        assert_eq!(value["floating_ip"], "10.77.0.100");
        assert_eq!(value["manager"], "mailherd");
        assert!(value.get("keepalived").is_none());
        assert_eq!(value["client_namespace"], "mh-client");
        assert_eq!(value["mail"]["user"], "alice@lab.test");
        assert_eq!(value["mail"]["password"], "pw");
        let first = &value["nodes"][0];
        for field in ["name", "namespace", "address", "role", "config", "api"] {
            assert!(first.get(field).is_some(), "missing {field}");
        }
        assert_eq!(first["name"], "n1");
        assert_eq!(first["namespace"], "mh-n1");
        assert_eq!(first["address"], "10.77.0.11");
        assert_eq!(first["role"], "master");
        assert_eq!(first["config"], "/var/lib/mailherd-lab/n1/agent.toml");
        assert_eq!(first["api"], "http://10.77.0.11:7401");
        assert_eq!(first["holds_floating_ip"], true);
        assert_eq!(value["nodes"][1]["role"], "down");
        assert_eq!(value["nodes"][1]["holds_floating_ip"], false);
        assert_eq!(value["nodes"][2]["role"], "witness");
    }

    #[test]
    fn keepalived_roles_follow_the_address_then_the_notified_state() {
        assert_eq!(keepalived_role(true, Some("BACKUP")), "master");
        assert_eq!(keepalived_role(true, None), "master");
        assert_eq!(keepalived_role(false, Some("FAULT")), "fault");
        assert_eq!(keepalived_role(false, Some("MASTER")), "backup");
        assert_eq!(keepalived_role(false, None), "backup");
    }

    #[test]
    fn keepalived_json_names_the_manager_and_its_timing_and_has_no_api() {
        let mut state =
            crate::state::tests::sample(std::path::Path::new("/var/lib/mailherd-lab-k"));
        state.manager = crate::state::Manager::KeepalivedTuned;
        state.nodes.truncate(2);
        for node in &mut state.nodes {
            node.config = crate::keepalived::config_path(&node.dir);
        }
        let answers = vec![
            NodeAnswer {
                role: "master".into(),
                holds_floating_ip: true,
                keepalived_state: Some("MASTER".into()),
                error: None,
                ..NodeAnswer::down("")
            },
            NodeAnswer::down("keepalived is not running"),
        ];
        let value = serde_json::to_value(to_json(&state, &answers)).unwrap();
        assert_eq!(value["manager"], "keepalived");
        assert_eq!(value["keepalived"]["name"], "tuned");
        assert_eq!(value["keepalived"]["vrrp_version"], 3);
        assert_eq!(value["keepalived"]["advert_int_ms"], 50);
        assert!(value.get("token_file").is_none());
        let first = &value["nodes"][0];
        assert_eq!(first["role"], "master");
        assert_eq!(first["keepalived_state"], "MASTER");
        assert!(first["api"].is_null());
        assert_eq!(
            first["config"],
            "/var/lib/mailherd-lab-k/n1/keepalived.conf"
        );
        assert_eq!(value["nodes"][1]["role"], "down");
    }
}
