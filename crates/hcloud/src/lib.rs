//! A client for the part of the Hetzner Cloud API that mailherd uses:
//! floating IPs, volumes, servers, and the actions that move the first two
//! between servers.
//!
//! The `hetzner` drivers call it in the middle of a promotion, when seconds
//! count and the API may answer `locked`, rate limit us or fail at its edge.
//! So the client retries exactly what is safe to retry (the policy of the
//! official Go client, see [`retry`]), waits for actions by polling them,
//! and turns every failure into one typed [`Error`] whose message names the
//! request (`POST /volumes/7/actions/attach`) and never the token.
//!
//! # Layout
//! - [`token`] holds [`Token`], the API token, read from a file or the
//!   environment and redacted wherever it could be printed;
//! - [`config`] holds [`ClientConfig`] and [`RetryPolicy`], with the defaults of
//!   the official client;
//! - [`client`] holds [`Client`]: requests, pagination, action waiting and the
//!   last rate-limit headers seen;
//! - [`retry`] decides which failures are retried and how long to wait, pure;
//! - [`types`] holds the resources as the API returns them, tolerant of extra
//!   fields and of nulls;
//! - [`error`] holds [`Error`], [`ApiError`] and [`ErrorCode`];
//! - [`metadata`] holds [`metadata_instance_id`], a server asking the metadata
//!   service who it is.
//!
//! Architecture Invariant: the token leaves this crate only in the
//! `Authorization` header of a request (marked sensitive). No `Debug`,
//! `Display`, log line or error message contains it.

pub mod client;
pub mod config;
pub mod error;
pub mod metadata;
pub mod retry;
pub mod token;
pub mod types;

pub use client::Client;
pub use config::{ClientConfig, RetryPolicy, DEFAULT_BASE_URL};
pub use error::{ApiError, Error, ErrorCode, Result};
pub use metadata::{metadata_instance_id, DEFAULT_METADATA_URL};
pub use token::{Token, TokenError, TOKEN_ENV_VAR};
pub use types::{
    Action, ActionError, ActionResource, ActionStatus, Datacenter, DnsPtr, FloatingIp, IpType,
    Location, Pagination, Protection, PublicIpv4, PublicNet, RateLimit, Server, ServerStatus,
    Volume, VolumeStatus,
};
