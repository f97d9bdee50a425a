//! `[signup]`: the self-service signup web service (`mailherd signup`),
//! with its `[signup.mailcow]` or `[signup.dovecot]` backend.
//!
//! The schema only; validation is in `validate/signup.rs`, the service in
//! the `mailherd-signup` crate. The mailcow API key is named by file, never
//! written in the config.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[signup]`: where the form is served, what it offers, and the limits
/// that keep it from being abused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupSection {
    /// Where the form and `POST /api/signup` are served.
    pub listen: SocketAddr,
    /// Where accounts are made: `mailcow` (its REST API) or `dovecot` (a
    /// passwd-file on the shared volume).
    pub backend: SignupBackend,
    /// The domains people may choose; an address in any other is refused.
    pub domains: Vec<String>,
    /// Domain quota: at most this many mailboxes per domain (counted in
    /// the backend before each signup).
    #[serde(default = "default_max_mailboxes_per_domain")]
    pub max_mailboxes_per_domain: u64,
    /// The quota of a new mailbox, in MiB (mailcow's `quota`; Dovecot's
    /// `quota_rule`).
    #[serde(default = "default_quota_mib")]
    pub quota_mib: u64,
    /// Passwords shorter than this are refused.
    #[serde(default = "default_min_password_length")]
    pub min_password_length: usize,
    /// More known-weak passwords, one a line, refused like the built-in list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weak_passwords_file: Option<PathBuf>,
    /// Per client IP: at most this many signup attempts per
    /// `rate_window_s` (successful or not: guessing addresses counts too).
    #[serde(default = "default_per_ip_limit")]
    pub per_ip_limit: u32,
    /// All clients together: at most this many attempts per `rate_window_s`.
    #[serde(default = "default_global_limit")]
    pub global_limit: u32,
    #[serde(default = "default_rate_window_s")]
    pub rate_window_s: u64,
    /// The form's token (and `GET /api/token`'s) is accepted only this many
    /// seconds after it was issued: a person takes a while to fill a form,
    /// a bot does not.
    #[serde(default = "default_token_min_age_s")]
    pub token_min_age_s: u64,
    /// ... and at most this many seconds after.
    #[serde(default = "default_token_max_age_s")]
    pub token_max_age_s: u64,
    /// The key that signs tokens (a file, at least 16 bytes). Without it a
    /// random key is made at start: tokens then do not survive a restart
    /// nor work across several signup instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_key_file: Option<PathBuf>,
    /// Where the master is asked for (`GET /master`): agent API base URLs.
    /// Default: every member's `api` of this config.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailcow: Option<MailcowBackendSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dovecot: Option<DovecotBackendSection>,
}

fn default_max_mailboxes_per_domain() -> u64 {
    1_000
}
fn default_quota_mib() -> u64 {
    1_024
}
fn default_min_password_length() -> usize {
    10
}
fn default_per_ip_limit() -> u32 {
    5
}
fn default_global_limit() -> u32 {
    100
}
fn default_rate_window_s() -> u64 {
    3_600
}
fn default_token_min_age_s() -> u64 {
    3
}
fn default_token_max_age_s() -> u64 {
    3_600
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignupBackend {
    Mailcow,
    Dovecot,
}

impl SignupBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            SignupBackend::Mailcow => "mailcow",
            SignupBackend::Dovecot => "dovecot",
        }
    }
}

/// `[signup.mailcow]`: mailcow's REST API on the current master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailcowBackendSection {
    /// The API's base URL, e.g. `https://mail.example.net` (the floating
    /// IP's name). `{master}` in it is replaced by the current master's
    /// address (its agent API's host), for a URL that must name the node.
    pub api_url: String,
    /// A file with the read-write API key (mailcow's API_KEY); the signup
    /// host's address must be in mailcow's API_ALLOW_FROM.
    pub api_key_file: PathBuf,
    /// How long one API request may take.
    #[serde(default = "default_mailcow_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_mailcow_timeout_ms() -> u64 {
    10_000
}

/// `[signup.dovecot]`: a Dovecot passwd-file (and optionally a Postfix
/// virtual mailbox map) on the shared volume, written on the master only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DovecotBackendSection {
    /// The passwd-file Dovecot's passdb and userdb read.
    pub users_file: PathBuf,
    /// A new user's home (and Maildir) is `mail_root/DOMAIN/LOCAL`.
    pub mail_root: PathBuf,
    /// Owner of the mail store (the userdb's uid and gid).
    pub uid: u32,
    pub gid: u32,
    /// Postfix's virtual mailbox map, `TYPE:PATH` (`hash:/srv/vmailbox`):
    /// a line `address DOMAIN/LOCAL/` per user; `postmap` runs after each
    /// change unless the type is `texthash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postfix_map: Option<String>,
}

/// The Postfix map types `postfix_map` may name: those `postmap` builds,
/// and `texthash` (read as text, no `postmap`).
pub const POSTFIX_MAP_TYPES: &[&str] = &["hash", "btree", "lmdb", "cdb", "texthash"];
