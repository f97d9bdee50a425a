//! A simulator of the part of mailcow-dockerized's REST API that the
//! signup service's `mailcow` backend uses.
//!
//! Faithful means: the paths, the `X-API-Key` header with a read-write and
//! a read-only key, the `API_ALLOW_FROM` allow-list, and mailcow's habit of
//! answering HTTP 200 even when an action fails, with an array of
//! `{"type", "log", "msg": [code, args...]}` entries — all as
//! `shared/reference.md` ("mailcow-dockerized") gives them. Where the
//! reference is silent, the choice is commented where it is made.
//!
//! # Layout
//! - this file: [`SimConfig`], [`Domain`], [`MailcowSim`] (serve until a
//!   shutdown future, or spawn and get a [`SimHandle`]);
//! - `api`: the routes, the key and allow-list gate, the mailbox rules.

mod api;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How the simulated mailcow is set up.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// mailcow.conf's API_KEY: may read and write.
    pub api_key: String,
    /// mailcow.conf's API_KEY_READ_ONLY: may only read.
    pub read_only_key: Option<String>,
    /// mailcow.conf's API_ALLOW_FROM: client addresses whose keys are
    /// accepted. Empty accepts every address (the simulator's default;
    /// mailcow itself ships a list).
    pub allow_from: Vec<IpAddr>,
    /// The domains mailcow serves, with their limits.
    pub domains: Vec<Domain>,
    /// mailcow's default password policy: at least this many characters.
    pub min_password_length: usize,
}

impl SimConfig {
    pub fn new(api_key: impl Into<String>) -> SimConfig {
        SimConfig {
            api_key: api_key.into(),
            read_only_key: None,
            allow_from: Vec::new(),
            domains: Vec::new(),
            min_password_length: 6,
        }
    }
}

/// One mailcow domain and its limits (the domain's settings in mailcow's UI).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Domain {
    pub name: String,
    /// "Max. possible mailboxes".
    pub max_mailboxes: u64,
    /// "Max. quota per mailbox" in MiB.
    pub max_quota_mib: u64,
    /// "Total domain quota" in MiB, shared by its mailboxes.
    pub total_quota_mib: u64,
    /// Existing aliases (`local@domain`): an address taken by an alias is
    /// refused with `is_alias`.
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl Domain {
    pub fn new(name: impl Into<String>) -> Domain {
        Domain {
            name: name.into(),
            max_mailboxes: 10,
            max_quota_mib: 10_240,
            total_quota_mib: 102_400,
            aliases: Vec::new(),
        }
    }
}

/// One mailbox as the simulator keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mailbox {
    pub username: String,
    pub domain: String,
    pub local_part: String,
    pub name: String,
    pub quota_mib: u64,
    pub active: bool,
}

/// The simulator's whole state behind one mutex.
pub(crate) struct Shared {
    pub(crate) config: SimConfig,
    state: Mutex<State>,
}

#[derive(Default)]
pub(crate) struct State {
    /// Keyed by username (`local@domain`), as mailcow's mailbox table is.
    pub(crate) mailboxes: BTreeMap<String, Mailbox>,
    /// Every API request that passed the gate, for tests.
    pub(crate) requests: u64,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent value; keep
        // simulating rather than poison every later request.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A simulated mailcow API.
pub struct MailcowSim {
    shared: Arc<Shared>,
}

impl MailcowSim {
    pub fn new(config: SimConfig) -> MailcowSim {
        MailcowSim {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = api::router(self.shared);
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    }

    /// Spawns the server on `listener`; the handle stops it.
    pub fn serve(self, listener: TcpListener) -> std::io::Result<SimHandle> {
        let address = listener.local_addr()?;
        let shared = self.shared.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.run(listener, async {
            let _ = stopped.await;
        }));
        Ok(SimHandle {
            address,
            shared,
            stop: Some(stop),
            task,
        })
    }
}

/// A running simulator: its address, what it holds, and its stop.
pub struct SimHandle {
    address: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl SimHandle {
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://ADDRESS`, what the backend's `api_url` names.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The mailboxes made so far, by username.
    pub fn mailboxes(&self) -> BTreeMap<String, Mailbox> {
        self.shared.lock().mailboxes.clone()
    }

    /// API requests that passed the key and allow-list gate.
    pub fn requests(&self) -> u64 {
        self.shared.lock().requests
    }

    /// Stops accepting, lets requests in flight finish, and returns.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}
