//! The daemon's loop: scans the jobs folder, creates the runs that fall
//! due, starts queued runs within `max_active_runs`, claims the task
//! instances whose upstreams succeeded and runs up to `workers` of them,
//! and records every transition in the state store so that a restart
//! resumes where the last process stopped.
//!
//! The loop is one tokio task that owns all scheduling state; the work
//! itself runs on spawned tasks and reports back through a [`JoinSet`], so
//! a finished task makes its downstreams ready without waiting for the
//! next scan.

use crate::clock::{Clock, after, from_micros, micros, micros_after};
use crate::error::Result;
use crate::http::{Health, JobsView};
use crate::jobs::JobSet;
use crate::metrics::{Metrics, TaskCounts};
use crate::retry::retry_delay;
use crate::state::{
    Claim, NewRun, Op, Pick, RunRow, RunState, StateStore, TaskInstanceRow, TaskState, TiUpdate,
};
use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use futures::future::BoxFuture;
use sluice_core::config::{Job, TaskKind};
use sluice_core::schedule::Plan;
use sluice_core::template::RunContext;
use sluice_engine::ErrorKind;
use sluice_engine::runner::{Engine, TaskAttempt, UnitOutput, Units};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

mod completion;
mod dispatch;
mod fence;
mod scheduling;
mod shutdown;
mod streams;
mod task_runner;

pub use task_runner::{AttemptFence, EngineRunner, TaskError, TaskRunner};

#[derive(Debug, Clone)]
pub struct Options {
    /// Task instances run at once.
    pub workers: usize,
    /// How often the jobs folder and the state store are read again.
    pub scan_interval: Duration,
    /// How often running task instances are marked alive; on PostgreSQL a
    /// task instance silent for five of these is taken to be abandoned.
    pub heartbeat: Duration,
    /// How long running tasks may take to finish after a stop signal.
    pub shutdown_grace: Duration,
    /// How long a failing state store is retried before the daemon gives
    /// up; tasks already running go on meanwhile.
    pub state_outage_limit: Duration,
    /// This process's name in the state store.
    pub worker_id: String,
    /// Create runs from schedules (off for a backfill).
    pub schedule: bool,
    /// Work only on these runs, and return when they are done.
    pub only: Option<Vec<(String, String)>>,
}

/// This process's name among the replicas: the host's name (a pod's
/// name on Kubernetes) and the process id, which tells two processes on
/// one host apart.
pub fn replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sluice".into());
    format!("{host}-{}", std::process::id())
}

/// Heartbeats a replica may miss before its claims are taken from it
/// (PostgreSQL): the heartbeat timeout is this many heartbeat intervals.
pub const HEARTBEAT_TIMEOUT_BEATS: u32 = 5;

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 4,
            scan_interval: Duration::from_secs(1),
            heartbeat: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(30),
            state_outage_limit: Duration::from_secs(600),
            worker_id: replica_id(),
            schedule: true,
            only: None,
        }
    }
}

struct ActiveRun {
    row: RunRow,
    job: Arc<Job>,
    units: Arc<Units>,
    ctx: Arc<RunContext>,
    tis: HashMap<String, TaskInstanceRow>,
    /// Something changed (an attempt ended, the store was read again, or
    /// ready units waited for a worker): look for ready units. A clean run
    /// is skipped, so a pass costs only the runs that moved.
    dirty: bool,
    /// When the next waiting unit (a retry, a sensor's poke) comes due.
    wake_at: Option<DateTime<Utc>>,
    /// When each waiting unit was first seen ready, for the ready→start
    /// delay.
    ready_since: HashMap<String, Instant>,
}

/// What a spawned attempt is about.
#[derive(Clone)]
struct Attempt {
    job: Arc<Job>,
    dag: String,
    run_id: String,
    unit: String,
    members: Vec<String>,
    attempt: i64,
    /// What the engine records with a load.
    task_attempt: TaskAttempt,
    sensor: bool,
    /// The lines the attempt logs (see [`crate::task_log`]).
    log: Arc<crate::task_log::Recording>,
    /// Each member's attempt number, as claimed: the end of the attempt
    /// is written only while this claim stands.
    tries: Vec<i64>,
}

enum Outcome {
    Ran(Result<UnitOutput, TaskError>),
    Poked(Result<bool, TaskError>),
}

struct Done {
    attempt: Attempt,
    elapsed: Duration,
    outcome: Outcome,
}

/// Counters of what the loop did, for tests, benchmarks and metrics.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub runs_created: u64,
    pub attempts_started: u64,
    pub attempts_finished: u64,
    /// Delay from a task instance becoming ready to its start, per start.
    pub ready_to_start: Vec<Duration>,
    /// Delay from a task instance being ready with a worker free to its
    /// start: the scheduler's own share of `ready_to_start`, without the
    /// wait for a worker when more tasks are ready than there are workers.
    pub scheduling_delay: Vec<Duration>,
}

pub struct Daemon {
    store: StateStore,
    runner: Arc<dyn TaskRunner>,
    clock: Arc<dyn Clock>,
    jobs: JobSet,
    opts: Options,
    active: BTreeMap<(String, String), ActiveRun>,
    running: JoinSet<Done>,
    /// Removals of succeeded runs' staging: off the loop, since on object
    /// storage they take a request per file.
    cleanups: JoinSet<()>,
    /// Whether the shutdown stopped running tasks (their statements may
    /// still run on a database server).
    stopped_tasks: bool,
    in_flight: HashMap<tokio::task::Id, Attempt>,
    paused: HashSet<String>,
    /// When each free worker became free, oldest first (one per worker).
    free_since: VecDeque<Instant>,
    /// When other replicas' abandoned task instances were last looked
    /// for (PostgreSQL), once a heartbeat interval; this replica's own
    /// heartbeats have a task of their own.
    last_recover: Option<DateTime<Utc>>,
    log_seq: i64,
    /// Writes not yet sent to the state store; see [`Daemon::flush`].
    pending: Vec<Op>,
    pub stats: Stats,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    jobs_view: Arc<JobsView>,
    streams: streams::Streams,
}

impl Daemon {
    pub fn new(
        store: StateStore,
        runner: Arc<dyn TaskRunner>,
        clock: Arc<dyn Clock>,
        jobs: JobSet,
        opts: Options,
    ) -> Daemon {
        Daemon {
            store,
            runner,
            clock,
            jobs,
            opts,
            active: BTreeMap::new(),
            running: JoinSet::new(),
            cleanups: JoinSet::new(),
            stopped_tasks: false,
            in_flight: HashMap::new(),
            paused: HashSet::new(),
            free_since: VecDeque::new(),
            last_recover: None,
            log_seq: 0,
            pending: Vec::new(),
            stats: Stats::default(),
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::new()),
            jobs_view: Arc::new(JobsView::new()),
            streams: streams::Streams::new(None),
        }
    }

    /// Runs the stream jobs (`mode = "stream"`) on `engine`; without it
    /// (`sluice run`, tests of the scheduler) they are not run.
    pub fn with_streams(mut self, engine: Arc<Engine>) -> Daemon {
        self.streams = streams::Streams::new(Some(engine));
        self
    }

    /// Counts into `metrics` (those `/metrics` serves) instead of a
    /// registry of its own.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Daemon {
        self.metrics = metrics;
        self
    }

    /// Publishes the jobs it runs into `view` (what the API lists).
    pub fn with_jobs_view(mut self, view: Arc<JobsView>) -> Daemon {
        self.jobs_view = view;
        self
    }

    /// Reports into `health` (what `/readyz` answers).
    pub fn with_health(mut self, health: Arc<Health>) -> Daemon {
        self.health = health;
        self
    }

    pub fn jobs_mut(&mut self) -> &mut JobSet {
        &mut self.jobs
    }

    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// Runs until `shutdown` resolves (or, with `only`, until those runs
    /// are done), then lets running tasks finish within the grace period
    /// and puts the rest back for the next process.
    pub async fn serve(&mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        self.recover().await?;
        let now = Instant::now();
        // Past a few thousand workers the delay is the ready→start one.
        self.free_since = (self.running.len()..self.opts.workers.min(1 << 16))
            .map(|_| now)
            .collect();
        let mut next_scan = Instant::now();
        // Heartbeats go on their own task: a slow pass of the loop (or a
        // state store outage it is waiting out) must not make another
        // replica take this one's tasks for abandoned.
        let _heartbeats = self.spawn_heartbeats();
        // Since when, and how many times in a row, the state store failed.
        let mut outage: Option<(Instant, u32)> = None;
        loop {
            match self.turn(&mut next_scan, &mut shutdown).await {
                Ok(false) => {
                    self.health.store_reachable(true);
                    if let Some((since, _)) = outage.take() {
                        tracing::info!(after = %humanize(since.elapsed()), "state store reachable again");
                    }
                }
                Ok(true) => break,
                Err(e @ crate::error::Error::State { .. }) => {
                    self.metrics.state_store_error();
                    self.health.store_reachable(false);
                    let (since, failures) = outage.get_or_insert((Instant::now(), 0));
                    *failures += 1;
                    if since.elapsed() >= self.opts.state_outage_limit {
                        tracing::error!(error = %e, limit = %humanize(self.opts.state_outage_limit), "state store still failing; giving up");
                        return Err(e);
                    }
                    let delay = retry_delay(
                        Duration::from_millis(100),
                        Duration::from_secs(10),
                        *failures,
                    );
                    tracing::warn!(error = %e, retry_in = %humanize(delay), running = self.running.len(), "state store failed; running tasks go on, retrying");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                    // Read everything again, and put back claims that may
                    // have committed although their answer was lost.
                    next_scan = Instant::now();
                    if let Err(e) = self.requeue_lost_claims().await {
                        tracing::warn!(error = %e, "could not check this replica's claims yet");
                    }
                }
                Err(e) => return Err(e),
            }
        }
        self.stop_streams().await;
        let drained = self.drain().await;
        self.finish_cleanups().await;
        drained
    }

    /// One turn of the loop: scan when due, start what is ready, then wait
    /// for a task to end, the next wake-up or the stop signal. Returns
    /// whether to stop.
    async fn turn<F: std::future::Future<Output = ()>>(
        &mut self,
        next_scan: &mut Instant,
        shutdown: &mut std::pin::Pin<&mut F>,
    ) -> Result<bool> {
        let pass = Instant::now();
        if Instant::now() >= *next_scan {
            self.scan().await?;
            self.jobs_view.set(self.jobs.all().cloned());
            self.health.jobs_loaded();
            *next_scan = Instant::now() + self.opts.scan_interval;
        }
        while let Some(done) = self.cleanups.try_join_next() {
            shutdown::log_cleanup(done);
        }
        if sluice_engine::has_abandoned() {
            // A task timed out mid-statement: stop the statement too.
            self.cleanups.spawn(async {
                sluice_engine::cancel_abandoned().await;
            });
        }
        let wake = self.dispatch().await?;
        if let Some(only) = &self.opts.only
            && self.running.is_empty()
            && only.iter().all(|k| !self.active.contains_key(k))
        {
            // A backfill is done when its runs have left the active set
            // (finished) and nothing runs.
            let rows = self
                .store
                .runs_in(&[RunState::Queued, RunState::Running])
                .await?;
            if !rows
                .iter()
                .any(|r| only.contains(&(r.dag.clone(), r.run_id.clone())))
            {
                return Ok(true);
            }
        }
        self.count_queued();
        self.metrics.pass(pass.elapsed());
        let until = wake.map_or(*next_scan, |w| w.min(*next_scan));
        tokio::select! {
            biased;
            () = shutdown.as_mut() => return Ok(true),
            Some(joined) = self.running.join_next_with_id(), if !self.running.is_empty() => {
                self.joined(joined).await?;
                // Take every other finished task before dispatching again.
                while let Some(joined) = self.running.try_join_next_with_id() {
                    self.joined(joined).await?;
                }
            }
            () = tokio::time::sleep_until(until.into()) => {}
        }
        Ok(false)
    }

    /// Starts the heartbeat task; it stops when the returned set is dropped.
    fn spawn_heartbeats(&self) -> JoinSet<()> {
        let mut set = JoinSet::new();
        let (store, clock) = (self.store.clone(), self.clock.clone());
        let (worker, every) = (self.opts.worker_id.clone(), self.opts.heartbeat);
        set.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = store.heartbeat(&worker, micros(clock.now())).await {
                    tracing::warn!(error = %e, "heartbeat not recorded");
                }
            }
        });
        set
    }
}

/// A run for the interval [start, end) of `job`.
pub fn new_run(
    job: &Job,
    run_type: &str,
    start: DateTime<Tz>,
    end: DateTime<Tz>,
    params: Option<serde_json::Value>,
    now: DateTime<Utc>,
) -> NewRun {
    NewRun {
        dag: job.name.clone(),
        run_id: format!(
            "{run_type}__{}",
            start.to_rfc3339_opts(SecondsFormat::Secs, false)
        ),
        logical_date: micros(start.with_timezone(&Utc)),
        interval_start: micros(start.with_timezone(&Utc)),
        interval_end: micros(end.with_timezone(&Utc)),
        run_type: run_type.to_string(),
        params: params.map(|p| p.to_string()),
        tasks: job.dag.order.clone(),
        created_at: micros(now),
    }
}

/// The template context of a stored run: the job's params overlaid with
/// the run's own.
fn context(job: &Job, row: &RunRow) -> RunContext {
    let mut params = job.params.clone();
    if let Some(extra) = row
        .params
        .as_deref()
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        && let (Some(base), serde_json::Value::Object(extra)) = (params.as_object_mut(), extra)
    {
        base.extend(extra);
    }
    RunContext {
        data_interval_start: from_micros(row.interval_start).with_timezone(&job.timezone),
        data_interval_end: from_micros(row.interval_end).with_timezone(&job.timezone),
        run_id: row.run_id.clone(),
        params,
        try_number: 0,
        hostname: String::new(),
    }
}

fn humanize(d: Duration) -> String {
    if d.as_secs() >= 1 && d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}
