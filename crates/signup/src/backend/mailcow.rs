//! The `mailcow` backend: mailcow-dockerized's REST API.
//!
//! `POST /api/v1/add/mailbox` with the `X-API-Key` header and the JSON the
//! reference gives. mailcow answers HTTP 200 even when it refuses: the body
//! is an array of `{"type": "success"|"danger"|"error", "msg": [code,
//! args...]}` entries, and only a `success` entry with `mailbox_added`
//! means the mailbox exists. 401 is a wrong key or an address outside
//! API_ALLOW_FROM, 403 a read-only key, 400 a body mailcow could not read.
//! The domain quota is counted with `GET /api/v1/get/domain/DOMAIN`
//! (`mboxes_in_domain`); mailcow's own limit (`max_mailbox_exceeded`)
//! applies as well.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use super::{BackendError, NewMailbox};

pub struct MailcowBackend {
    /// The API's base URL; `{master}` is replaced by the master's host.
    api_url: String,
    /// Never logged, never in an error.
    api_key: String,
    client: reqwest::Client,
}

impl MailcowBackend {
    pub fn new(api_url: String, api_key: String, timeout: Duration) -> MailcowBackend {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("the HTTP client builds");
        MailcowBackend {
            api_url,
            api_key,
            client,
        }
    }

    /// The API's base URL with the master's host filled in.
    pub fn base_url(&self, master_host: &str) -> String {
        self.api_url
            .replace("{master}", master_host)
            .trim_end_matches('/')
            .to_string()
    }

    /// How many mailboxes `domain` has; `None` when mailcow does not know
    /// the domain (it answers `{}`).
    pub async fn count(&self, base: &str, domain: &str) -> Result<Option<u64>, BackendError> {
        let url = format!("{base}/api/v1/get/domain/{domain}");
        let response = self
            .client
            .get(&url)
            .header("X-API-Key", &self.api_key)
            .send()
            .await
            .map_err(|error| transport(&url, &error))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != StatusCode::OK {
            return Err(refused_request(&url, status, &body));
        }
        let count = match body.get("mboxes_in_domain") {
            None => return Ok(None),
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            Some(_) => None,
        };
        count.map(Some).ok_or_else(|| {
            BackendError::Failed(format!(
                "{url}: mboxes_in_domain is not a number: {}",
                body["mboxes_in_domain"]
            ))
        })
    }

    pub async fn create(&self, base: &str, new: &NewMailbox) -> Result<String, BackendError> {
        let account = &new.account;
        let address = account.address();
        if let Some(count) = self.count(base, &account.domain).await? {
            if count >= new.max_mailboxes_per_domain {
                return Err(BackendError::DomainFull {
                    domain: account.domain.clone(),
                    limit: new.max_mailboxes_per_domain.to_string(),
                });
            }
        }
        let url = format!("{base}/api/v1/add/mailbox");
        let body = json!({
            "active": "1",
            "domain": account.domain,
            "local_part": account.local_part,
            "name": account.name,
            "password": account.password,
            "password2": account.password,
            "quota": new.quota_mib.to_string(),
            "force_pw_update": "0",
            "tls_enforce_in": "1",
            "tls_enforce_out": "1",
            "authsource": "mailcow",
            "tags": [],
        });
        let response = self
            .client
            .post(&url)
            .header("X-API-Key", &self.api_key)
            .json(&body)
            .send()
            .await
            .map_err(|error| transport(&url, &error))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status != StatusCode::OK {
            return Err(refused_request(&url, status, &body));
        }
        interpret(&address, &url, &body)
    }
}

/// Reads mailcow's HTTP-200 reply: success only with a `success` entry
/// saying `mailbox_added`, and no `danger` or `error` entry.
pub fn interpret(address: &str, url: &str, body: &Value) -> Result<String, BackendError> {
    // Usually an array; a single object is read the same way.
    let entries: Vec<&Value> = match body {
        Value::Array(entries) => entries.iter().collect(),
        Value::Object(_) => vec![body],
        _ => {
            return Err(BackendError::Failed(format!(
                "{url}: unexpected reply {body}"
            )))
        }
    };
    let failure = entries
        .iter()
        .find(|entry| matches!(entry["type"].as_str(), Some("danger" | "error")));
    if let Some(entry) = failure {
        let (code, args) = message(&entry["msg"]);
        return Err(failure_of(address, &code, &args, url));
    }
    let added = entries
        .iter()
        .any(|entry| entry["type"] == "success" && message(&entry["msg"]).0 == "mailbox_added");
    if added {
        Ok(address.to_string())
    } else {
        Err(BackendError::Failed(format!(
            "{url}: no success entry with mailbox_added in the reply {body}"
        )))
    }
}

/// `msg` is `[code, args...]` or a bare string.
fn message(msg: &Value) -> (String, Vec<String>) {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match msg {
        Value::Array(parts) => (
            parts.first().map(text).unwrap_or_default(),
            parts.iter().skip(1).map(text).collect(),
        ),
        Value::String(s) => (s.clone(), Vec::new()),
        other => (other.to_string(), Vec::new()),
    }
}

fn failure_of(address: &str, code: &str, args: &[String], url: &str) -> BackendError {
    let domain = address.split_once('@').map(|(_, d)| d).unwrap_or("");
    match code {
        "object_exists" | "is_alias" => BackendError::Exists {
            address: address.to_string(),
        },
        "max_mailbox_exceeded" | "mailbox_quota_left_exceeded" => BackendError::DomainFull {
            domain: domain.to_string(),
            limit: format!("mailcow: {code} {}", args.join(" "))
                .trim()
                .to_string(),
        },
        "domain_not_found" | "domain_invalid" => BackendError::Refused {
            field: "domain",
            message: format!("mailcow refused the domain ({code})"),
        },
        "mailbox_invalid" => BackendError::Refused {
            field: "local_part",
            message: "mailcow refused the address (mailbox_invalid)".to_string(),
        },
        "password_complexity" | "password_mismatch" => BackendError::Refused {
            field: "password",
            message: format!("mailcow's password policy refused it ({code})"),
        },
        "mailbox_quota_exceeded" => BackendError::Failed(format!(
            "{url}: signup.quota_mib is above the domain's per-mailbox maximum ({code} {})",
            args.join(" ")
        )),
        "access_denied" => BackendError::Failed(format!(
            "{url}: access_denied: the API key may not add mailboxes"
        )),
        other => BackendError::Failed(format!(
            "{url}: mailcow refused: {other} {}",
            args.join(" ")
        )),
    }
}

/// A non-200 answer: the key, the allow-list, or a request mailcow could
/// not read. Always the operator's problem, never the client's.
fn refused_request(url: &str, status: StatusCode, body: &Value) -> BackendError {
    let msg = body["msg"].as_str().unwrap_or("no msg");
    let hint = match status {
        StatusCode::UNAUTHORIZED => {
            ": check signup.mailcow.api_key_file and that this host is in API_ALLOW_FROM"
        }
        StatusCode::FORBIDDEN => ": the key is read-only (API_KEY_READ_ONLY); use API_KEY",
        _ => "",
    };
    BackendError::Failed(format!("{url} answered {status} ({msg}){hint}"))
}

fn transport(url: &str, error: &reqwest::Error) -> BackendError {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    BackendError::Failed(format!("{url}: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://mailcow/api/v1/add/mailbox";

    #[test]
    fn only_a_success_entry_with_mailbox_added_is_success() {
        let ok = json!([{"type": "success", "log": [], "msg": ["mailbox_added", "a@d.tld"]}]);
        assert_eq!(interpret("a@d.tld", URL, &ok), Ok("a@d.tld".to_string()));
        let other = json!([{"type": "success", "msg": ["something_else"]}]);
        assert!(matches!(
            interpret("a@d.tld", URL, &other),
            Err(BackendError::Failed(_))
        ));
        assert!(matches!(
            interpret("a@d.tld", URL, &json!([])),
            Err(BackendError::Failed(_))
        ));
    }

    #[test]
    fn failure_codes_map_to_what_the_client_is_told() {
        let fail = |code: &str| {
            interpret(
                "a@d.tld",
                URL,
                &json!([{"type": "danger", "msg": [code, "x"]}]),
            )
            .unwrap_err()
        };
        assert_eq!(
            fail("object_exists"),
            BackendError::Exists {
                address: "a@d.tld".into()
            }
        );
        assert_eq!(
            fail("is_alias"),
            BackendError::Exists {
                address: "a@d.tld".into()
            }
        );
        assert!(matches!(
            fail("max_mailbox_exceeded"),
            BackendError::DomainFull { .. }
        ));
        assert!(matches!(
            fail("password_complexity"),
            BackendError::Refused {
                field: "password",
                ..
            }
        ));
        assert!(matches!(
            fail("domain_not_found"),
            BackendError::Refused {
                field: "domain",
                ..
            }
        ));
        assert!(matches!(fail("access_denied"), BackendError::Failed(_)));
        // `error` counts as failure too, and a bare string msg is read.
        let error = json!({"type": "error", "msg": "object_exists"});
        assert!(matches!(
            interpret("a@d.tld", URL, &error),
            Err(BackendError::Exists { .. })
        ));
    }
}
