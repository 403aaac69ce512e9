//! The state store's answer to the engine's question before it publishes:
//! does this attempt still hold its claim? See `sluice_engine::fence`.

use super::*;
use sluice_engine::fence::Fence;

/// The claim of one attempt, as the store records it.
pub(super) struct ClaimFence {
    pub(super) store: StateStore,
    pub(super) dag: String,
    pub(super) run_id: String,
    /// The unit's task; its members were claimed with it.
    pub(super) task: String,
    pub(super) worker: String,
    pub(super) try_number: i64,
    /// How long a store that fails is asked again before the publish is
    /// given up (the heartbeat timeout: past it the claim would lapse
    /// anyway).
    pub(super) patience: Duration,
}

impl Fence for ClaimFence {
    fn check(&self) -> BoxFuture<'_, sluice_engine::Result<()>> {
        Box::pin(async move {
            let deadline = Instant::now() + self.patience;
            let mut failures = 0;
            loop {
                let held = self
                    .store
                    .holds_claim(
                        &self.dag,
                        &self.run_id,
                        &self.task,
                        &self.worker,
                        self.try_number,
                    )
                    .await;
                match held {
                    Ok(true) => return Ok(()),
                    Ok(false) => {
                        tracing::warn!(dag = %self.dag, run = %self.run_id, task = %self.task, attempt = self.try_number, "this attempt lost its claim (another replica re-ran the task after this one stopped heart-beating); not publishing");
                        return Err(sluice_engine::Error::Fenced(format!(
                            "attempt {} lost its claim to another replica, which re-ran the task after this one stopped heart-beating",
                            self.try_number
                        )));
                    }
                    Err(e) if Instant::now() >= deadline => {
                        return Err(sluice_engine::Error::Fenced(format!(
                            "the state store could not confirm that attempt {} still holds its claim: {e}",
                            self.try_number
                        )));
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::debug!(error = %e, "claim check failed; asking again");
                        let wait = retry_delay(
                            Duration::from_millis(100),
                            Duration::from_secs(2),
                            failures,
                        );
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        })
    }
}
