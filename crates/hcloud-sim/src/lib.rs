//! A simulator of the part of the Hetzner Cloud API that mailherd uses:
//! floating IPs, volumes, servers, their actions, and the metadata
//! service's instance id.
//!
//! It exists so that the `hetzner` drivers and the client under them can
//! be tested for real — over HTTP, with actions that take seconds, servers
//! that are `locked` meanwhile, a rate limit, and injected failures — and
//! so the lab (`mailherd-lab up --cloud hetzner-sim`) can route the
//! floating IP and expose a volume the way Hetzner would, from an
//! [`EventHook`] called when an action completes.
//!
//! Faithful means: the paths, the JSON shapes, the status codes and the
//! error documents of the reference (`shared/reference.md`, "Hetzner Cloud
//! API"); where the reference is silent, each choice is commented where it
//! is made.
//!
//! # Layout
//! - [`server`] holds [`Simulator`] (seed, serve, run until a shutdown future)
//!   and [`SimHandle`] (address, control, stop);
//! - [`config`] holds [`SimConfig`] and [`RateLimitConfig`];
//! - [`world`] holds [`World`], the seed and the current state of servers,
//!   floating IPs and volumes, loadable from JSON;
//! - [`event`] holds [`SimEvent`] and [`EventHook`];
//! - [`fault`] holds [`Fault`], the failures the tests and the lab inject;
//! - `state` holds the mutable simulation (world, actions, locks, faults,
//!   counters) behind one mutex, and the rules of each action;
//! - `render` writes the JSON documents, as the API spells them;
//! - `api` serves the Hetzner paths under `/v1` and the gate every request passes
//!   (count, latency, token, rate limit, faults);
//! - `control` serves the simulator's own paths under `/_sim` and the metadata
//!   service;
//! - `rate_limit` holds the token bucket.

pub mod config;
pub mod event;
pub mod fault;
pub mod server;
pub mod world;

mod api;
mod control;
mod rate_limit;
mod render;
mod state;

pub use config::{RateLimitConfig, SimConfig};
pub use event::{EventHook, SimEvent};
pub use fault::Fault;
pub use server::{SimHandle, Simulator};
pub use world::{World, WorldFloatingIp, WorldServer, WorldVolume};

/// What the simulator refuses or fails to do.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The seed contradicts itself (duplicate ids, an unknown server, a
    /// volume attached across locations).
    #[error("invalid world: {0}")]
    InvalidWorld(String),

    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },

    #[error("{} is not a valid world: {source}", path.display())]
    Parse {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },

    #[error("no server {0} in the world")]
    UnknownServer(u64),

    #[error("cannot serve: {0}")]
    Serve(std::io::Error),
}
