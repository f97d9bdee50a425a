//! mailherd's drivers: the only code that changes the host.
//!
//! Architecture Invariant: nothing outside this crate adds addresses,
//! mounts file systems or starts and stops the mail stack. The pure core
//! decides; the agent calls a driver; the driver does it and says exactly
//! what happened or what failed ([`DriverError`]).
//!
//! There is one trait per resource kind — [`FloatingIp`], [`Volume`],
//! [`Services`] — and one file per driver behind it. Every call is
//! idempotent (acquire an address already held, unmount a volume not
//! mounted, stop a stack already stopped) so the promotion and demotion
//! pipelines and the reconciler can repeat calls without first asking.
//! Drivers act in the namespaces (network, mount) of the calling thread.
//!
//! # Layout
//! - [`error`] holds [`DriverError`];
//! - [`floating_ip`]: the [`FloatingIp`] trait and its drivers
//!   ([`floating_ip::local`]: netlink + gratuitous ARP;
//!   [`floating_ip::hetzner`]: Hetzner Cloud assign, then the /32 locally);
//! - [`volume`]: the [`Volume`] trait and its drivers ([`volume::local`];
//!   [`volume::hetzner`]: detach elsewhere, attach here, then as local),
//!   with mounting ([`volume::mount`]) and the epoch fence
//!   ([`volume::epoch`]);
//! - [`replication`]: storage replication for sites without shared
//!   volumes ([`replication::SnapshotStore`]: btrfs, zfs);
//! - [`hetzner`]: the Hetzner Cloud API as both `hetzner` drivers use it
//!   (client from `[hetzner]`, this server's id, bounded and timed moves);
//! - [`services`]: the [`Services`] trait and its drivers
//!   ([`services::command`]), with bounded command runs
//!   ([`services::process`]);
//! - [`watchdog`]: the [`Watchdog`] trait and its drivers
//!   ([`watchdog::device`], [`watchdog::socket`]);
//! - [`database`]: the [`Database`] trait and its driver, MariaDB GTID
//!   replication (on `mailherd_mariadb`, which talks to the servers);
//! - [`suite`]: the shared test suite of each trait, which every driver of
//!   that kind passes (run by the tests under `tests/`).

pub mod database;
pub mod error;
pub mod floating_ip;
pub mod hetzner;
pub mod replication;
pub mod services;
pub mod suite;
pub mod volume;
pub mod watchdog;

pub use database::{database_from_config, Database};
pub use error::DriverError;
pub use floating_ip::{floating_ip_from_config, FloatingIp};
pub use services::{services_from_config, Services};
pub use volume::{volume_from_config, Volume};
pub use watchdog::{watchdog_from_config, Watchdog};
