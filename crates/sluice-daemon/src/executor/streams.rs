//! Runs the stream jobs: each on a task of its own, on the one replica
//! that holds its lease in the state store. The scan (about every second)
//! starts what this replica may own, renews the leases of what it runs,
//! stops what it lost or what was removed or changed, and restarts a
//! stream that failed after a back-off. A stop commits what was read.

use super::Daemon;
use crate::clock::micros;
use crate::error::Result;
use crate::state::StateStore;
use futures::future::BoxFuture;
use sluice_core::config::Job;
use sluice_engine::runner::Engine;
use sluice_engine::stream::{Checkpoint, Checkpoints, StreamStats};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// After a stream fails, how long before it is started again.
const RESTART_DELAY: Duration = Duration::from_secs(5);

pub(super) struct RunningStream {
    job: Arc<Job>,
    stop: watch::Sender<bool>,
    /// The stream's one task (in a set: dropped, it is aborted, and its
    /// panic is kept for the scan to report).
    task: JoinSet<sluice_engine::Result<()>>,
    pub(super) stats: Arc<StreamStats>,
}

/// Streams this replica runs, and when failed ones may start again.
#[derive(Default)]
pub(super) struct Streams {
    engine: Option<Arc<Engine>>,
    pub(super) running: std::collections::BTreeMap<String, RunningStream>,
    not_before: std::collections::HashMap<String, Instant>,
}

impl Streams {
    pub(super) fn new(engine: Option<Arc<Engine>>) -> Streams {
        Streams {
            engine,
            ..Streams::default()
        }
    }
}

/// A stream's checkpoint in the state store, committed only while this
/// replica holds the stream's lease.
struct StoreCheckpoints {
    store: StateStore,
    job: String,
    owner: String,
}

impl Checkpoints for StoreCheckpoints {
    fn load(&self) -> BoxFuture<'_, sluice_engine::Result<Option<Checkpoint>>> {
        Box::pin(async move {
            let text = self
                .store
                .stream_checkpoint(&self.job)
                .await
                .map_err(|e| sluice_engine::Error::Internal(e.to_string()))?;
            text.map(|t| {
                serde_json::from_str(&t).map_err(|e| {
                    sluice_engine::Error::Internal(format!(
                        "the checkpoint of stream {} does not read: {e}",
                        self.job
                    ))
                })
            })
            .transpose()
        })
    }

    fn commit<'a>(&'a self, cp: &'a Checkpoint) -> BoxFuture<'a, sluice_engine::Result<()>> {
        Box::pin(async move {
            let text = serde_json::to_string(cp)
                .map_err(|e| sluice_engine::Error::Internal(e.to_string()))?;
            let now = micros(chrono::Utc::now());
            let committed = self
                .store
                .commit_stream(&self.job, &self.owner, &text, now)
                .await
                .map_err(|e| sluice_engine::Error::Internal(e.to_string()))?;
            if committed {
                Ok(())
            } else {
                Err(sluice_engine::Error::Fenced(format!(
                    "stream {}: this replica ({}) no longer holds its lease",
                    self.job, self.owner
                )))
            }
        })
    }
}

impl Daemon {
    /// The lease a stream's owner holds, renewed at each scan.
    fn stream_lease(&self) -> Duration {
        self.opts.heartbeat * super::HEARTBEAT_TIMEOUT_BEATS
    }

    /// Starts, renews, restarts and stops streams; see the module's
    /// documentation.
    pub(super) async fn sync_streams(&mut self) -> Result<()> {
        let now = chrono::Utc::now();
        let until = micros(now) + self.stream_lease().as_micros() as i64;
        let me = self.opts.worker_id.clone();
        // Ended (failed, or fenced out): reported, then started again
        // after a pause.
        let mut ended = Vec::new();
        for (name, s) in self.streams.running.iter_mut() {
            if let Some(result) = s.task.try_join_next() {
                ended.push((name.clone(), result));
            }
        }
        for (name, result) in ended {
            self.streams.running.remove(&name);
            match result {
                Ok(Ok(())) => tracing::info!(dag = %name, "stream stopped"),
                Ok(Err(e)) => {
                    tracing::error!(dag = %name, error = %e, restart_in = ?RESTART_DELAY, "stream failed");
                    self.metrics.stream_failed(&name);
                }
                Err(e) => {
                    let message = match e.try_into_panic() {
                        Ok(panic) => sluice_engine::panic_message(panic),
                        Err(e) => e.to_string(),
                    };
                    tracing::error!(dag = %name, error = %message, restart_in = ?RESTART_DELAY, "stream panicked");
                    self.metrics.stream_failed(&name);
                }
            }
            self.streams
                .not_before
                .insert(name, Instant::now() + RESTART_DELAY);
        }
        // Removed, changed or paused: stopped (a changed job starts again
        // with its new definition on the next scan).
        let stale: Vec<String> = self
            .streams
            .running
            .iter()
            .filter(|(name, s)| {
                self.paused.contains(*name)
                    || self.jobs.get(name).is_none_or(|j| !Arc::ptr_eq(j, &s.job))
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            self.stop_stream(&name).await;
        }
        let Some(engine) = self.streams.engine.clone() else {
            return Ok(());
        };
        let jobs: Vec<Arc<Job>> = self
            .jobs
            .all()
            .filter(|j| j.is_stream() && !self.paused.contains(&j.name))
            .cloned()
            .collect();
        for job in jobs {
            let running = self.streams.running.contains_key(&job.name);
            // On SQLite this is the only replica: a lease still held is
            // a dead process's (killed before it let go), so it is taken.
            let lapsed_before = if self.store.is_postgres() {
                micros(now)
            } else {
                i64::MAX
            };
            let held = self
                .store
                .lease_stream(&job.name, &me, lapsed_before, until)
                .await?;
            if running && !held {
                tracing::warn!(dag = %job.name, "stream lease lost to another replica; stopping it here");
                self.stop_stream(&job.name).await;
                continue;
            }
            let waiting = self
                .streams
                .not_before
                .get(&job.name)
                .is_some_and(|t| Instant::now() < *t);
            if running || !held || waiting {
                continue;
            }
            tracing::info!(dag = %job.name, replica = %me, "stream started");
            let (stop, stop_rx) = watch::channel(false);
            let stats = Arc::new(StreamStats::default());
            let checkpoints = Arc::new(StoreCheckpoints {
                store: self.store.clone(),
                job: job.name.clone(),
                owner: me.clone(),
            });
            let mut task = JoinSet::new();
            task.spawn({
                let (engine, job, stats) = (engine.clone(), job.clone(), stats.clone());
                async move {
                    sluice_engine::stream::run(&engine, &job, checkpoints, stats, stop_rx).await
                }
            });
            self.streams.running.insert(
                job.name.clone(),
                RunningStream {
                    job,
                    stop,
                    task,
                    stats,
                },
            );
        }
        self.export_stream_metrics();
        Ok(())
    }

    /// Stops stream `name`: what it read is committed, within the
    /// shutdown grace period; past it the task is dropped (what was not
    /// committed is read again by the next owner).
    async fn stop_stream(&mut self, name: &str) {
        let Some(mut s) = self.streams.running.remove(name) else {
            return;
        };
        let _ = s.stop.send(true);
        match tokio::time::timeout(self.opts.shutdown_grace, s.task.join_next()).await {
            Ok(Some(Ok(Ok(())))) | Ok(None) => tracing::info!(dag = %name, "stream stopped"),
            Ok(Some(Ok(Err(e)))) => {
                tracing::warn!(dag = %name, error = %e, "stream stopped with an error")
            }
            Ok(Some(Err(e))) => {
                tracing::warn!(dag = %name, error = %e, "stream task ended abnormally")
            }
            Err(_) => {
                s.task.abort_all();
                tracing::warn!(dag = %name, "stream did not stop within the grace period; dropped");
            }
        }
        if let Err(e) = self.store.release_stream(name, &self.opts.worker_id).await {
            tracing::warn!(dag = %name, error = %e, "could not release the stream's lease; it lapses");
        }
    }

    /// Stops every stream (the daemon is stopping).
    pub(super) async fn stop_streams(&mut self) {
        let names: Vec<String> = self.streams.running.keys().cloned().collect();
        for name in names {
            self.stop_stream(&name).await;
        }
    }

    fn export_stream_metrics(&self) {
        for (name, s) in &self.streams.running {
            self.metrics.stream_observed(name, &s.stats);
        }
    }
}
