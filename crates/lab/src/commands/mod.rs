//! One module per subcommand family; `main` parses arguments and calls these.
//!
//! - [`up`]: build a lab and wait until the floating IP serves a banner;
//! - [`down`]: remove everything a lab (or a crashed `up`) left;
//! - [`status`]: the JSON shape of design §7, or a table;
//! - [`fault`]: `fail` and `heal`;
//! - [`client`]: `probe`, `watch` and `mail`, run from the client namespace;
//! - [`exec`]: a command inside a node;
//! - [`members`]: `add-node` and `remove-node` on the running cluster;
//! - [`bench`]: failover times, mailherd against keepalived;
//! - [`nemesis`]: random faults under mail load, invariants checked.

pub mod bench;
pub mod client;
pub mod down;
pub mod exec;
pub mod fault;
pub mod members;
pub mod nemesis;
pub mod status;
pub mod up;
