//! `probe`, `watch` and `mail`: what a client on the lab's LAN sees.
//!
//! Each runs inside the client namespace and talks to the floating IP only.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use crate::state::{LabState, MailAccount};
use crate::topology;

/// Where a client sends SMTP: the floating IP, or what stands in front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    FloatingIp,
    /// HAProxy (`up --haproxy`).
    Haproxy,
    /// The mail gateway (`up --gateway`).
    Gateway,
}

/// The SMTP address of `via` in this lab.
fn smtp_address(state: &LabState, via: Via) -> Result<std::net::SocketAddr> {
    let front = match via {
        Via::FloatingIp => return Ok(topology::smtp_address()),
        Via::Haproxy => state
            .haproxy
            .as_ref()
            .context("this lab has no HAProxy; start one with `mailherd-lab up --haproxy`")?,
        Via::Gateway => state
            .gateway
            .as_ref()
            .context("this lab has no gateway; start one with `mailherd-lab up --gateway`")?,
    };
    Ok(crate::front::smtp_address(front))
}

pub fn probe(timeout: Duration, via: Via) -> Result<()> {
    let state = LabState::load_current()?;
    let address = smtp_address(&state, via)?;
    let banner = crate::netns::run_in(&state.client.namespace, || {
        Ok(crate::probe::read_banner(address, timeout))
    })?;
    match banner {
        Ok(banner) => {
            println!("{banner}");
            Ok(())
        }
        Err(reason) => anyhow::bail!("no banner from {address}: {reason}"),
    }
}

pub fn watch(interval: Duration, duration: Duration, timeout: Duration, json: bool) -> Result<()> {
    let state = LabState::load_current()?;
    let options = crate::probe::WatchOptions {
        address: topology::smtp_address(),
        interval,
        duration,
        timeout,
        json,
    };
    crate::netns::run_in(&state.client.namespace, || {
        let stdout = std::io::stdout();
        crate::probe::watch(&options, &mut stdout.lock())
    })?;
    Ok(())
}

fn mailbox(state: &LabState) -> Result<&MailAccount> {
    state
        .mail
        .as_ref()
        .context("this lab runs the banner stack; mail needs `mailherd-lab up --stack mail`")
}

pub fn send(subject: &str, body: Option<&str>, via: Via, to: Option<&str>) -> Result<()> {
    let state = LabState::load_current()?;
    let account = mailbox(&state)?;
    let address = smtp_address(&state, via)?;
    let to = to.unwrap_or(&account.user);
    let body = body
        .map(str::to_string)
        .unwrap_or_else(|| format!("Sent by mailherd-lab at {}.\n", crate::probe::wall_clock()));
    let reply = crate::netns::run_in(&state.client.namespace, || {
        crate::mail::send(address, to, subject, &body)
    })?;
    println!("{reply}");
    Ok(())
}

/// `login`: another account than the lab's (user, password).
pub fn list(json: bool, login: Option<(String, String)>) -> Result<()> {
    let state = LabState::load_current()?;
    let lab_account = mailbox(&state)?;
    let account = match login {
        Some((user, password)) => MailAccount { user, password },
        None => lab_account.clone(),
    };
    let messages = crate::netns::run_in(&state.client.namespace, || {
        crate::mail::list_subjects(topology::imap_address(), &account.user, &account.password)
    })?;
    if json {
        println!(
            "{}",
            json!({"user": account.user, "mailbox": "INBOX", "count": messages.len(), "messages": messages})
        );
    } else {
        for message in &messages {
            println!("{:>4}  {}", message.seq, message.subject);
        }
        println!("{} messages in {}'s INBOX", messages.len(), account.user);
    }
    Ok(())
}
