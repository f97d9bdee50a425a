//! Where accounts are made: one file per backend behind [`Backend`].
//!
//! - [`mailcow`]: mailcow's REST API (`POST /api/v1/add/mailbox`), on the
//!   current master's address;
//! - [`dovecot`]: a Dovecot passwd-file and a Postfix virtual mailbox map
//!   on the shared volume, written only on the master.

pub mod dovecot;
pub mod mailcow;

use crate::policy::Account;

/// What the backend is asked to make: the account and the limits that
/// apply to it.
#[derive(Debug, Clone)]
pub struct NewMailbox {
    pub account: Account,
    pub quota_mib: u64,
    /// The domain quota: no more mailboxes than this in the domain.
    pub max_mailboxes_per_domain: u64,
}

/// Why a backend did not make the mailbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("{address} already exists")]
    Exists { address: String },
    #[error("{domain} is full: it has its maximum of {limit} mailboxes")]
    DomainFull { domain: String, limit: String },
    /// The backend refused the input (its own rules are stricter).
    #[error("{field}: {message}")]
    Refused {
        field: &'static str,
        message: String,
    },
    /// Writes must go to the master, and there is none (or this node is
    /// not it).
    #[error("{0}")]
    NotMaster(String),
    /// The backend failed or is misconfigured: not the client's fault.
    #[error("{0}")]
    Failed(String),
}

pub enum Backend {
    Mailcow(mailcow::MailcowBackend),
    Dovecot(dovecot::DovecotBackend),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Mailcow(_) => "mailcow",
            Backend::Dovecot(_) => "dovecot",
        }
    }
}
