//! Stopping: running tasks get `shutdown_grace` to finish, the rest are
//! put back to run again, statements they left on database servers are
//! cancelled, and staging removals under way are waited for.

use super::*;

impl Daemon {
    /// Cancels on their servers the statements of tasks stopped by the
    /// shutdown, then waits, up to the shutdown grace, for staging removals
    /// under way; a run's staging left behind is removed when it runs
    /// again, or by hand.
    pub(super) async fn finish_cleanups(&mut self) {
        // A stopped task's readers unwind on the runtime's threads just
        // after it; give them a moment to say what they leave running.
        let moments = if self.stopped_tasks { 10 } else { 1 };
        for i in 0..moments {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if sluice_engine::has_abandoned() {
                sluice_engine::cancel_abandoned().await;
            }
        }
        let grace = self.opts.shutdown_grace;
        let all = async {
            while let Some(done) = self.cleanups.join_next().await {
                log_cleanup(done);
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                left = self.cleanups.len(),
                "stopping before the staging of every succeeded run was removed"
            );
        }
    }

    /// After a stop signal: waits for running tasks up to the grace
    /// period, then cancels the rest and puts them back to be run again.
    pub(super) async fn drain(&mut self) -> Result<()> {
        if self.running.is_empty() {
            return self.flush_patiently().await;
        }
        tracing::info!(running = self.running.len(), grace = %humanize(self.opts.shutdown_grace), "stopping: waiting for running tasks");
        let mut deadline = tokio::time::Instant::now() + self.opts.shutdown_grace;
        let mut cancelled = false;
        loop {
            match tokio::time::timeout_at(deadline, self.running.join_next_with_id()).await {
                Ok(None) => break,
                Ok(Some(Ok((id, done)))) => {
                    self.in_flight.remove(&id);
                    self.complete(done).await?;
                }
                Ok(Some(Err(e))) => {
                    if let Some(a) = self.in_flight.remove(&e.id()) {
                        self.put_back(&a).await?;
                    }
                }
                Err(_) if !cancelled => {
                    // Cancel the rest and give them a moment to unwind.
                    cancelled = true;
                    self.stopped_tasks = true;
                    self.running.abort_all();
                    deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                }
                Err(_) => break,
            }
        }
        self.flush_patiently().await?;
        let left: Vec<Attempt> = self.in_flight.drain().map(|(_, a)| a).collect();
        for a in &left {
            self.put_back(a).await?;
        }
        Ok(())
    }

    /// Returns an attempt stopped by shutdown to the queue.
    pub(super) async fn put_back(&mut self, a: &Attempt) -> Result<()> {
        self.flush().await?;
        for m in &a.members {
            self.store.requeue(&a.dag, &a.run_id, m).await?;
        }
        tracing::warn!(dag = %a.dag, run = %a.run_id, task = %a.unit, "task stopped by shutdown; it will run again");
        Ok(())
    }
}

/// A staging removal that panicked is a bug to see in the logs; it
/// changes no run's outcome.
pub(super) fn log_cleanup(done: std::result::Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(
            error = %sluice_engine::panic_message(e.into_panic()),
            "removing a run's staging panicked"
        );
    }
}
