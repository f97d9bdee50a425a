//! Finding the current master: writes always go there.
//!
//! Every agent answers `GET /master` with 200 only when it is a master that
//! finished its promotion and whose stack is operational. The finder asks
//! all configured agents at once and takes the one that says 200. Two
//! that say 200 at once (possible only for a moment around a failover)
//! is refused rather than guessed.

use std::time::Duration;

use futures::future::join_all;

/// One agent API the finder asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// Base URL, e.g. `http://10.0.0.11:7401`.
    pub url: String,
}

impl Agent {
    /// The host part of the URL (an IP address or a name): what `{master}`
    /// in a backend URL becomes.
    pub fn host(&self) -> &str {
        let rest = self
            .url
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(&self.url);
        let authority = rest.split('/').next().unwrap_or(rest);
        match authority.strip_prefix('[') {
            // [v6]:port
            Some(v6) => v6.split(']').next().unwrap_or(v6),
            None => authority
                .rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or(authority),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterError {
    #[error("no master: none of the agents ({asked}) answered 200 on /master{detail}")]
    None { asked: usize, detail: String },
    #[error("two agents claim to be master ({first} and {second}); try again in a moment")]
    Several { first: String, second: String },
}

pub struct MasterFinder {
    agents: Vec<Agent>,
    client: reqwest::Client,
}

impl MasterFinder {
    pub fn new(agents: Vec<Agent>, timeout: Duration) -> MasterFinder {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("a plain HTTP client builds");
        MasterFinder { agents, client }
    }

    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }

    /// Whether `agent` says it is the master now.
    pub async fn is_master(&self, agent: &Agent) -> Result<bool, String> {
        let url = format!("{}/master", agent.url.trim_end_matches('/'));
        match self.client.get(&url).send().await {
            Ok(response) => Ok(response.status() == reqwest::StatusCode::OK),
            Err(error) => Err(format!("{url}: {}", without_url(&error))),
        }
    }

    /// The one agent that is master now.
    pub async fn find(&self) -> Result<Agent, MasterError> {
        let answers = join_all(self.agents.iter().map(|agent| self.is_master(agent))).await;
        let mut masters = Vec::new();
        let mut errors = Vec::new();
        for (agent, answer) in self.agents.iter().zip(answers) {
            match answer {
                Ok(true) => masters.push(agent.clone()),
                Ok(false) => {}
                Err(error) => errors.push(error),
            }
        }
        match masters.as_slice() {
            [master] => Ok(master.clone()),
            [] => Err(MasterError::None {
                asked: self.agents.len(),
                detail: if errors.is_empty() {
                    String::new()
                } else {
                    format!(" (unreachable: {})", errors.join("; "))
                },
            }),
            [first, second, ..] => Err(MasterError::Several {
                first: first.url.clone(),
                second: second.url.clone(),
            }),
        }
    }
}

/// reqwest's error without the URL it carries (the caller names it).
fn without_url(error: &reqwest::Error) -> String {
    use std::error::Error;
    let mut text = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    if let Some(source) = error.source().and_then(|s| s.source()) {
        text.push_str(&format!(": {source}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_an_agent_url() {
        let host = |url: &str| Agent { url: url.into() }.host().to_string();
        assert_eq!(host("http://10.0.0.11:7401"), "10.0.0.11");
        assert_eq!(host("http://10.0.0.11:7401/"), "10.0.0.11");
        assert_eq!(host("https://n1.example.net"), "n1.example.net");
        assert_eq!(host("http://[fd00::1]:7401"), "fd00::1");
    }
}
