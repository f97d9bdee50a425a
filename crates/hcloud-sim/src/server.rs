//! [`Simulator`] and [`SimHandle`]: seeding, serving, controlling and
//! stopping a simulated API.
//!
//! [`Simulator::run`] serves until a shutdown future resolves (the binary
//! passes its signal handler); [`Simulator::serve`] spawns the server and
//! returns a [`SimHandle`] with its address and control (the tests and the
//! lab use that).
//!
//! Tear-down order: stop accepting connections; wake the requests held by
//! `timeout` faults and drop the pending action completions (so that the
//! graceful shutdown does not wait for them); let the requests in flight
//! finish; return.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use rand::Rng;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::state::{ActionPlan, ApiFailure, Completion, SimState};
use crate::{api, control, EventHook, Fault, SimConfig, SimError, World};

/// What the server's tasks share.
pub(crate) struct Shared {
    pub(crate) config: SimConfig,
    state: Mutex<SimState>,
    hook: Option<EventHook>,
    /// Becomes true when the server shuts down: held requests and pending
    /// action completions watch it so they do not delay the shutdown.
    stopping: watch::Sender<bool>,
    /// Serializes writes of the state file, so an older world never
    /// replaces a newer one.
    persist_lock: tokio::sync::Mutex<()>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock leaves a state that is still a
        // consistent value; keep simulating rather than poison every test.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves when the server begins to shut down.
    pub(crate) async fn stopped(&self) {
        let mut stopping = self.stopping.subscribe();
        let _ = stopping.wait_for(|stopping| *stopping).await;
    }

    /// Checks a request with `plan` and, if it passes, starts its action
    /// and schedules its completion. Returns the action document.
    pub(crate) fn start_action(
        self: &Arc<Self>,
        plan: impl FnOnce(&SimState) -> Result<ActionPlan, ApiFailure>,
    ) -> Result<Value, ApiFailure> {
        let duration = self.draw_action_duration();
        let started = {
            let mut state = self.lock();
            let plan = plan(&state)?;
            state.start_action(plan, duration)
        };
        if let Some(duration) = started.duration {
            let shared = Arc::clone(self);
            let id = started.id;
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(duration) => shared.complete_action(id).await,
                    _ = shared.stopped() => {}
                }
            });
        }
        Ok(started.document)
    }

    fn draw_action_duration(&self) -> Duration {
        let base = self.config.action_duration.as_secs_f64();
        let jitter = self.config.jitter.as_secs_f64();
        let offset = if jitter > 0.0 {
            rand::rng().random_range(-jitter..=jitter)
        } else {
            0.0
        };
        Duration::from_secs_f64((base + offset).max(0.0))
    }

    async fn complete_action(self: &Arc<Self>, id: u64) {
        let event = match self.lock().begin_completion(id) {
            Completion::Succeeds(event) => event,
            Completion::SucceededWithoutEffect => {
                tracing::info!(
                    action = id,
                    "action succeeded without effect (injected action_without_effect)"
                );
                return;
            }
            Completion::Failed | Completion::Gone => return,
        };
        if let (Some(event), Some(hook)) = (event, self.hook.clone()) {
            tracing::debug!(?event, action = id, "calling the event hook");
            // The hook may run a command (the lab's `ip route replace`): a
            // blocking thread, and the change waits for it.
            if let Err(error) = tokio::task::spawn_blocking(move || hook(event)).await {
                tracing::error!(action = id, "the event hook failed: {error}");
                self.lock()
                    .finish_error(id, "service_error", "the simulator's event hook failed");
                return;
            }
        }
        self.lock().finish_success(id);
        self.persist().await;
    }

    async fn persist(&self) {
        let Some(path) = self.config.state_file.clone() else {
            return;
        };
        let _only_writer = self.persist_lock.lock().await;
        let world = self.lock().world.clone();
        let json = match serde_json::to_vec_pretty(&world) {
            Ok(json) => json,
            Err(error) => {
                tracing::error!("cannot serialize the world: {error}");
                return;
            }
        };
        // Write aside and rename: a reader never sees half a file.
        let temporary = path.with_extension("json.tmp");
        let written = async {
            tokio::fs::write(&temporary, &json).await?;
            tokio::fs::rename(&temporary, &path).await
        };
        if let Err(error) = written.await {
            tracing::error!(path = %path.display(), "cannot write the state file: {error}");
        }
    }
}

/// A simulator, seeded, not yet serving.
pub struct Simulator {
    config: SimConfig,
    world: World,
    hook: Option<EventHook>,
}

impl Simulator {
    /// A simulator of `world` (normalized: see [`World::normalized`]).
    pub fn new(config: SimConfig, world: World) -> Result<Simulator, SimError> {
        Ok(Simulator {
            config,
            world: world.normalized()?,
            hook: None,
        })
    }

    /// Calls `hook` with every world change, before the action reports
    /// success.
    pub fn on_event(mut self, hook: EventHook) -> Simulator {
        self.hook = Some(hook);
        self
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), SimError> {
        serve_until(self.into_shared(), listener, shutdown)
            .await
            .map_err(SimError::Serve)
    }

    /// Serves on `listener` in a task of the current runtime and returns
    /// its handle.
    pub async fn serve(self, listener: TcpListener) -> Result<SimHandle, SimError> {
        let addr = listener.local_addr().map_err(SimError::Serve)?;
        let shared = self.into_shared();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_until(Arc::clone(&shared), listener, async move {
            let _ = stopped.await;
        }));
        tracing::info!(%addr, "hcloud simulator serving");
        Ok(SimHandle {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    fn into_shared(self) -> Arc<Shared> {
        let state = SimState::new(&self.config, self.world);
        Arc::new(Shared {
            config: self.config,
            state: Mutex::new(state),
            hook: self.hook,
            stopping: watch::Sender::new(false),
            persist_lock: tokio::sync::Mutex::new(()),
        })
    }
}

async fn serve_until(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = api::router(Arc::clone(&shared))
        .merge(control::router(Arc::clone(&shared)))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            count_requests,
        ));
    let stopping = Arc::clone(&shared);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            stopping.stopping.send_replace(true);
        })
        .await
}

/// Counts every request to the API and the metadata service, whatever its
/// answer (so retries show), but not the control requests.
async fn count_requests(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if !path.starts_with("/_sim/") || path.starts_with("/_sim/as/") {
        shared.lock().count_request(request.method().as_str(), path);
    }
    next.run(request).await
}

/// A running simulator: its address, its control, and its stop.
///
/// Dropping it stops the server too, without waiting.
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API root for a client: `http://ADDR/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The metadata service root: `http://ADDR`. Without an `X-Sim-Server`
    /// header it answers for the server with the lowest id.
    pub fn metadata_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A metadata service root that answers for the server named
    /// `server_name`: `http://ADDR/_sim/as/NAME`.
    pub fn metadata_url_for(&self, server_name: &str) -> String {
        format!("http://{}/_sim/as/{server_name}", self.addr)
    }

    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    /// The faults not yet used up.
    pub fn faults(&self) -> Vec<Fault> {
        self.shared.lock().faults.clone()
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// The world as the API shows it now.
    pub fn world(&self) -> World {
        self.shared.lock().world.clone()
    }

    /// Requests received for `method` and `path` (the full path, with
    /// `/v1`, without the query): `request_count("POST", "/v1/volumes/7/actions/attach")`.
    pub fn request_count(&self, method: &str, path: &str) -> u64 {
        self.shared
            .lock()
            .requests
            .get(&format!("{method} {path}"))
            .copied()
            .unwrap_or(0)
    }

    /// All counters, keyed `"<METHOD> <path>"`.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.shared.lock().requests.clone()
    }

    pub fn reset_request_counts(&self) {
        self.shared.lock().requests.clear();
    }

    /// Powers a server on (`running`) or off (`off`).
    pub fn set_power(&self, server: u64, on: bool) -> Result<(), SimError> {
        if self.shared.lock().set_power(server, on) {
            Ok(())
        } else {
            Err(SimError::UnknownServer(server))
        }
    }

    /// Stops the server and waits until it has stopped.
    pub async fn shutdown(mut self) -> Result<(), SimError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => match task.await {
                Ok(result) => result.map_err(SimError::Serve),
                Err(error) => Err(SimError::Serve(std::io::Error::other(error))),
            },
            None => Ok(()),
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
