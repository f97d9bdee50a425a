//! A loopback cluster of real agents reached over their HTTP API, and a
//! plain HTTP/1.0 client for it (no client library between the test and
//! what the agent really sends).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use serde_json::Value;

/// One cluster at a time: on a two-core CI machine, six clusters of three
/// to five agents at once starve each other of CPU, and what would then be
/// tested is the scheduler. (Per test binary: cargo runs the binaries one
/// after another.)
static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Held by a test for as long as its cluster runs.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One agent of the cluster.
pub struct Agent {
    pub name: String,
    pub config: PathBuf,
    pub api_port: u16,
    child: Option<Child>,
}

impl Agent {
    pub fn start(&mut self, dir: &Path) {
        let log = dir.join(format!("{}.log", self.name));
        self.child = Some(super::start_agent(&self.config, &log));
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    pub fn get(&self, path: &str) -> Option<Response> {
        http(self.api_port, "GET", path, None, "")
    }

    /// `GET /status` as JSON.
    pub fn status(&self) -> Option<Value> {
        serde_json::from_str(&self.get("/status")?.body).ok()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An answer of the agent.
#[derive(Debug)]
pub struct Response {
    pub code: u16,
    pub content_type: String,
    pub body: String,
}

/// One HTTP/1.0 request to 127.0.0.1:`port` (the server closes after the
/// answer, so the body is whatever follows the headers); `None` when
/// nothing answers.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> Option<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut request = format!("{method} {path} HTTP/1.0\r\nhost: test\r\n");
    if let Some(value) = authorization {
        request.push_str(&format!("authorization: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let content_type = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim().to_string())
        .unwrap_or_default();
    Some(Response {
        code,
        content_type,
        body: body.to_string(),
    })
}

/// Writes the configs of `n` agents `n1..nN` on loopback into `dir`:
/// `cluster_extra` goes into every `[cluster]` section, `api_extra` follows
/// the `[api]` section's lines (so it may start with more `[api]` keys such
/// as `token_file` and go on with other sections). Returns each agent's
/// name, config file and API port.
pub fn write_configs(
    dir: &Path,
    n: usize,
    cluster_extra: &str,
    api_extra: &str,
) -> Vec<(String, PathBuf, u16)> {
    let (ports, members) = super::members(n);
    ports
        .iter()
        .enumerate()
        .map(|(i, (peer, api))| {
            let name = format!("n{}", i + 1);
            let config = dir.join(format!("{name}.toml"));
            let text = format!(
                "[node]\nname = \"{name}\"\ndata_dir = \"{}\"\n\n[cluster]\nname = \"test\"\n{cluster_extra}\n\n{members}[api]\nlisten = \"127.0.0.1:{api}\"\npeer_listen = \"127.0.0.1:{peer}\"\n{api_extra}",
                dir.join(&name).display(),
            );
            std::fs::write(&config, text).unwrap();
            (name, config, *api)
        })
        .collect()
}

/// `n` agents on loopback, not started; see [`write_configs`].
pub fn loopback_cluster(dir: &Path, n: usize, cluster_extra: &str, api_extra: &str) -> Vec<Agent> {
    write_configs(dir, n, cluster_extra, api_extra)
        .into_iter()
        .map(|(name, config, api_port)| Agent {
            name,
            config,
            api_port,
            child: None,
        })
        .collect()
}

/// The indexes of the agents that report `master`, and the highest epoch
/// any of them reports.
pub fn masters(agents: &[Agent]) -> (Vec<usize>, u64) {
    let mut found = Vec::new();
    let mut epoch = 0;
    for (i, agent) in agents.iter().enumerate() {
        if let Some(status) = agent.status() {
            if status["role"] == "master" {
                found.push(i);
            }
            epoch = epoch.max(status["epoch"].as_u64().unwrap_or(0));
        }
    }
    (found, epoch)
}
