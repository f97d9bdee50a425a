//! The agent's side of the watchdog: arm before a promotion, pet by the
//! core's rule (`mailherd_core::watchdog`), disarm once nothing is held.
//!
//! Modes (`[watchdog] mode`): `off`; `automatic`, which uses the watchdog
//! when it can and otherwise says once why not and goes on without it;
//! `required`, where a node that cannot arm it does not promote.

use std::time::Duration;

use mailherd_config::{Config, MemberRole, WatchdogMode};
use mailherd_core::watchdog::{pet_due, step, LastPet, WatchdogStep};
use mailherd_core::{Holder, Millis};
use mailherd_drivers::{watchdog_from_config, Watchdog};
use serde::Serialize;

/// How often a failing pet is logged.
const ERROR_LOG_EVERY_MS: u64 = 1_000;

pub struct WatchdogGuard {
    driver: Box<dyn Watchdog>,
    mode: WatchdogMode,
    timeout_ms: u64,
    armed: bool,
    /// Why an automatic watchdog is not used (it could not be armed).
    unusable: Option<String>,
    /// Whether a timer a previous run may have left running was stopped.
    leftover_checked: bool,
    last_error_logged: Option<Millis>,
    last_pet: Option<LastPet>,
}

/// The watchdog as `/status` shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct WatchdogStatus {
    pub mode: String,
    pub driver: String,
    pub timeout_ms: u64,
    pub armed: bool,
    /// Why it is not in use, when it is not.
    pub unusable: Option<String>,
}

impl WatchdogGuard {
    /// None when the watchdog is off, on a witness, or (automatic mode) when
    /// the lease is too short for the driver: then the reason is logged.
    pub fn from_config(config: &Config) -> Option<WatchdogGuard> {
        let section = &config.watchdog;
        if section.mode == WatchdogMode::Off || config.me().role == MemberRole::Witness {
            return None;
        }
        let driver = watchdog_from_config(section);
        // `config validate` refuses a required watchdog that cannot work.
        let timeout_ms = match section.timeout_ms(&config.cluster.timing().lease) {
            Ok(ms) => ms,
            Err(reason) => {
                tracing::warn!(
                    watchdog = %driver.describe(),
                    %reason,
                    "watchdog not used: a killed or frozen agent would leave its stack running"
                );
                return None;
            }
        };
        tracing::info!(
            watchdog = %driver.describe(),
            timeout_ms,
            mode = ?section.mode,
            "watchdog armed while this node holds the role"
        );
        Some(WatchdogGuard {
            driver,
            mode: section.mode,
            timeout_ms,
            armed: false,
            unusable: None,
            leftover_checked: false,
            last_error_logged: None,
            last_pet: None,
        })
    }

    pub fn status(&self) -> WatchdogStatus {
        WatchdogStatus {
            mode: match self.mode {
                WatchdogMode::Off => "off",
                WatchdogMode::Automatic => "automatic",
                WatchdogMode::Required => "required",
            }
            .into(),
            driver: self.driver.describe(),
            timeout_ms: self.timeout_ms,
            armed: self.armed,
            unusable: self.unusable.clone(),
        }
    }

    /// Arms the watchdog for a promotion about to start. An error means the
    /// promotion must not run (required mode only).
    pub fn arm_for_promotion(
        &mut self,
        now: Millis,
        lease_end: Option<Millis>,
    ) -> Result<(), String> {
        if self.armed || self.unusable.is_some() {
            return Ok(());
        }
        match step(true, lease_end, false, self.timeout_ms, now) {
            WatchdogStep::Arm => self.arm(),
            // Arming starts the timer; with too little lease left it would
            // reset the node after the lease ended. The next confirmed
            // renewal makes room.
            _ if self.mode == WatchdogMode::Required => Err(format!(
                "too little lease left to arm the watchdog ({} ms timeout)",
                self.timeout_ms
            )),
            _ => Ok(()),
        }
    }

    /// Called on every tick of the control loop.
    pub fn tick(&mut self, now: Millis, holder: &Holder) {
        let phase = holder.phase();
        let holds = phase.holding_epoch().is_some_and(|epoch| epoch != 0);
        if !holds && *phase == mailherd_core::Phase::Backup && !self.leftover_checked {
            // After the start-up cleanup let go of everything: a previous
            // run that was killed may have left the timer running.
            self.leftover_checked = true;
            if let Err(error) = self.driver.disarm() {
                tracing::debug!(%error, "no leftover watchdog to stop");
            }
        }
        if self.unusable.is_some() {
            return;
        }
        let outcome = match step(holds, holder.lease_end(), self.armed, self.timeout_ms, now) {
            WatchdogStep::Keep => Ok(()),
            WatchdogStep::Arm => self.arm(),
            WatchdogStep::Pet => match holder.lease_end() {
                Some(lease_end) if pet_due(self.last_pet, lease_end, now) => {
                    self.last_pet = Some(LastPet { at: now, lease_end });
                    self.driver.pet().map_err(|e| e.to_string())
                }
                _ => Ok(()),
            },
            WatchdogStep::Disarm => {
                self.armed = false;
                self.last_pet = None;
                match self.driver.disarm() {
                    Ok(()) => {
                        tracing::info!("watchdog disarmed: nothing held");
                        Ok(())
                    }
                    Err(error) => Err(error.to_string()),
                }
            }
        };
        if let Err(error) = outcome {
            if self
                .last_error_logged
                .is_none_or(|at| now.since(at) >= ERROR_LOG_EVERY_MS)
            {
                self.last_error_logged = Some(now);
                tracing::error!(%error, "watchdog call failed");
            }
        }
    }

    fn arm(&mut self) -> Result<(), String> {
        match self.driver.arm(Duration::from_millis(self.timeout_ms)) {
            Ok(in_force) => {
                self.armed = true;
                self.timeout_ms = in_force.as_millis() as u64;
                tracing::info!(timeout_ms = self.timeout_ms, "watchdog armed");
                Ok(())
            }
            Err(error) if self.mode == WatchdogMode::Required => {
                Err(format!("cannot arm the watchdog: {error}"))
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    "watchdog not used (mode automatic): a killed or frozen agent would leave its stack running"
                );
                self.unusable = Some(error.to_string());
                Ok(())
            }
        }
    }
}
