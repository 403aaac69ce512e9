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
use crate::jobs::JobSet;
use crate::retry::retry_delay;
use crate::state::{Claim, NewRun, Op, RunRow, StateStore, TaskInstanceRow, TiUpdate};
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

/// Why an attempt failed, and whether another attempt could do better.
#[derive(Debug, Clone)]
pub struct TaskError {
    pub kind: ErrorKind,
    pub message: String,
    /// The upstream task whose staged output was missing, if that is why:
    /// the executor then says which replica wrote it.
    pub missing_input: Option<String>,
}

impl TaskError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        TaskError {
            kind,
            message: message.into(),
            missing_input: None,
        }
    }
}

impl From<sluice_engine::Error> for TaskError {
    fn from(e: sluice_engine::Error) -> Self {
        TaskError {
            missing_input: e.missing_input().map(str::to_string),
            ..TaskError::new(e.kind(), e.to_string())
        }
    }
}

/// Runs the work of task instances. The daemon uses the data plane's
/// [`Engine`]; the scheduler benchmark uses tasks that do nothing, to
/// measure the scheduler alone.
pub trait TaskRunner: Send + Sync + 'static {
    /// Runs one unit (a task, or a load with its fused producer).
    fn run(
        &self,
        job: Arc<Job>,
        ctx: Arc<RunContext>,
        units: Arc<Units>,
        unit: String,
        attempt: TaskAttempt,
    ) -> BoxFuture<'static, Result<UnitOutput, TaskError>>;

    /// One poke of a sensor.
    fn poke(
        &self,
        job: Arc<Job>,
        ctx: Arc<RunContext>,
        task: String,
    ) -> BoxFuture<'static, Result<bool, TaskError>>;

    /// Called once when a run succeeds (the engine removes its staging).
    fn run_succeeded(&self, job: Arc<Job>, ctx: Arc<RunContext>) -> BoxFuture<'static, ()>;
}

pub struct EngineRunner(pub Arc<Engine>);

impl TaskRunner for EngineRunner {
    fn run(
        &self,
        job: Arc<Job>,
        ctx: Arc<RunContext>,
        units: Arc<Units>,
        unit: String,
        attempt: TaskAttempt,
    ) -> BoxFuture<'static, Result<UnitOutput, TaskError>> {
        let engine = self.0.clone();
        Box::pin(async move { Ok(engine.run_unit(&job, &ctx, &units, &unit, attempt).await?) })
    }

    fn poke(
        &self,
        job: Arc<Job>,
        ctx: Arc<RunContext>,
        task: String,
    ) -> BoxFuture<'static, Result<bool, TaskError>> {
        let engine = self.0.clone();
        Box::pin(async move {
            let t = job
                .task(&task)
                .ok_or_else(|| TaskError::new(ErrorKind::Internal, format!("no task {task}")))?;
            Ok(engine.poke(&job, &ctx, t).await?)
        })
    }

    fn run_succeeded(&self, job: Arc<Job>, ctx: Arc<RunContext>) -> BoxFuture<'static, ()> {
        let engine = self.0.clone();
        Box::pin(async move {
            if let Err(e) = engine.remove_staging(&job.name, &ctx).await {
                tracing::warn!(dag = %job.name, run = %ctx.run_id, error = %e, "could not remove staged data");
            }
        })
    }
}

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

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 4,
            scan_interval: Duration::from_secs(1),
            heartbeat: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(30),
            state_outage_limit: Duration::from_secs(600),
            worker_id: format!(
                "{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "sluice".into()),
                std::process::id()
            ),
            schedule: true,
            only: None,
        }
    }
}

pub const TERMINAL: [&str; 3] = ["success", "failed", "upstream_failed"];
const WAITING: [&str; 3] = ["scheduled", "up_for_retry", "up_for_reschedule"];

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
            in_flight: HashMap::new(),
            paused: HashSet::new(),
            free_since: VecDeque::new(),
            last_recover: None,
            log_seq: 0,
            pending: Vec::new(),
            stats: Stats::default(),
        }
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
                    if let Some((since, _)) = outage.take() {
                        tracing::info!(after = %humanize(since.elapsed()), "state store reachable again");
                    }
                }
                Ok(true) => break,
                Err(e @ crate::error::Error::State { .. }) => {
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
        let drained = self.drain().await;
        self.finish_cleanups().await;
        drained
    }

    /// Waits, up to the shutdown grace, for staging removals under way; a
    /// run's staging left behind is removed when it runs again, or by hand.
    async fn finish_cleanups(&mut self) {
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

    /// One turn of the loop: scan when due, start what is ready, then wait
    /// for a task to end, the next wake-up or the stop signal. Returns
    /// whether to stop.
    async fn turn<F: std::future::Future<Output = ()>>(
        &mut self,
        next_scan: &mut Instant,
        shutdown: &mut std::pin::Pin<&mut F>,
    ) -> Result<bool> {
        if Instant::now() >= *next_scan {
            self.scan().await?;
            *next_scan = Instant::now() + self.opts.scan_interval;
        }
        while let Some(done) = self.cleanups.try_join_next() {
            log_cleanup(done);
        }
        let wake = self.dispatch().await?;
        if let Some(only) = &self.opts.only
            && self.running.is_empty()
            && only.iter().all(|k| !self.active.contains_key(k))
        {
            // A backfill is done when its runs have left the active set
            // (finished) and nothing runs.
            let rows = self.store.runs_in(&["queued", "running"]).await?;
            if !rows
                .iter()
                .any(|r| only.contains(&(r.dag.clone(), r.run_id.clone())))
            {
                return Ok(true);
            }
        }
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

    /// After a state store error: task instances the store says this
    /// replica runs but that it does not (a claim whose commit's answer
    /// was lost) go back to be scheduled.
    async fn requeue_lost_claims(&mut self) -> Result<()> {
        let running: HashSet<(String, String, String)> = self
            .in_flight
            .values()
            .flat_map(|a| {
                a.members
                    .iter()
                    .map(|m| (a.dag.clone(), a.run_id.clone(), m.clone()))
            })
            .collect();
        let n = self
            .store
            .requeue_unowned(&self.opts.worker_id, &running)
            .await?;
        if n > 0 {
            tracing::warn!(
                task_instances = n,
                "re-queued claims this replica made but did not start"
            );
        }
        Ok(())
    }

    /// Puts back task instances a dead process left running. SQLite is
    /// one process's file, so everything running there is abandoned; on
    /// PostgreSQL only those whose heartbeat stopped.
    async fn recover(&mut self) -> Result<()> {
        let now = self.clock.now();
        let stale_before = if self.store.is_postgres() {
            micros(now).saturating_sub(micros_after(0, self.opts.heartbeat.saturating_mul(5)))
        } else {
            i64::MAX
        };
        let n = self.store.requeue_abandoned(stale_before).await?;
        if n > 0 {
            tracing::warn!(
                task_instances = n,
                "re-queued task instances an earlier process left running"
            );
        }
        Ok(())
    }

    /// Reads the jobs folder and the state store again and creates due runs.
    async fn scan(&mut self) -> Result<()> {
        let now = self.clock.now();
        let changes = self.jobs.scan().await;
        for (name, file) in &changes.loaded {
            tracing::info!(dag = %name, file = %file.display(), "job loaded");
            self.store
                .upsert_job(name, &file.display().to_string(), None, micros(now))
                .await?;
        }
        for (name, file, error) in &changes.failed {
            let kept = self.jobs.get(name).is_some();
            tracing::error!(dag = %name, file = %file.display(), error = %error, kept_last_valid = kept, "job file not loaded");
            self.store
                .upsert_job(name, &file.display().to_string(), Some(error), micros(now))
                .await?;
        }
        for name in &changes.removed {
            tracing::info!(dag = %name, "job file removed; no longer scheduled");
        }
        self.paused = self.store.paused_jobs().await?.into_iter().collect();
        if self.opts.schedule {
            let jobs: Vec<Arc<Job>> = self.jobs.all().cloned().collect();
            for job in jobs {
                if !self.paused.contains(&job.name) {
                    self.schedule(&job, now).await?;
                }
            }
        }
        if self.store.is_postgres()
            && self
                .last_recover
                .is_none_or(|t| now >= after(t, self.opts.heartbeat))
        {
            self.last_recover = Some(now);
            self.recover().await?;
        }
        self.refresh().await?;
        self.check_sla(now).await
    }

    /// Creates the runs of `job` that are due by its schedule.
    async fn schedule(&mut self, job: &Arc<Job>, now: DateTime<Utc>) -> Result<()> {
        let Some(schedule) = &job.schedule else {
            return Ok(());
        };
        let tz = job.timezone;
        let last = self
            .store
            .last_scheduled(&job.name)
            .await?
            .map(|us| from_micros(us).with_timezone(&tz));
        // Without `start`, a job begins with the latest complete interval.
        let (start, catchup) = match job.start {
            Some(s) => (s, job.catchup),
            None => (
                from_micros(0).with_timezone(&tz),
                job.catchup && last.is_some(),
            ),
        };
        let plan = Plan {
            schedule,
            start,
            end: job.end,
            catchup,
        };
        let due = plan.due(last.as_ref(), &now.with_timezone(&tz), 1000);
        for interval in due {
            let run = new_run(job, "scheduled", interval.start, interval.end, None, now);
            if self.store.create_run(&run).await? {
                self.stats.runs_created += 1;
                tracing::info!(dag = %job.name, run = %run.run_id, "run created");
            }
        }
        Ok(())
    }

    /// Brings the active runs in line with the state store.
    async fn refresh(&mut self) -> Result<()> {
        let rows = self.store.runs_in(&["queued", "running"]).await?;
        let mut seen = HashSet::new();
        for row in rows {
            let key = (row.dag.clone(), row.run_id.clone());
            if let Some(only) = &self.opts.only
                && !only.contains(&key)
            {
                continue;
            }
            let Some(job) = self.jobs.get(&row.dag).cloned() else {
                continue; // Its job file is gone or never loaded.
            };
            seen.insert(key.clone());
            let load = row.state == "running";
            let tis = if load {
                Some(self.store.task_instances(&row.dag, &row.run_id).await?)
            } else {
                None
            };
            match self.active.get_mut(&key) {
                Some(active) => {
                    if !Arc::ptr_eq(&active.job, &job) {
                        active.units = Arc::new(Units::all(&job));
                        active.ctx = Arc::new(context(&job, &row));
                        active.job = job;
                    }
                    active.row = row;
                    if let Some(tis) = tis {
                        active.tis = tis.into_iter().map(|t| (t.task.clone(), t)).collect();
                    }
                    active.dirty = true;
                }
                None => {
                    let run = ActiveRun {
                        units: Arc::new(Units::all(&job)),
                        ctx: Arc::new(context(&job, &row)),
                        job,
                        row,
                        tis: tis
                            .unwrap_or_default()
                            .into_iter()
                            .map(|t| (t.task.clone(), t))
                            .collect(),
                        dirty: true,
                        wake_at: None,
                        ready_since: HashMap::new(),
                    };
                    self.active.insert(key, run);
                }
            }
        }
        self.active.retain(|k, _| seen.contains(k));
        Ok(())
    }

    async fn check_sla(&mut self, now: DateTime<Utc>) -> Result<()> {
        let mut missed = Vec::new();
        for run in self.active.values() {
            if let Some(sla) = run.job.sla
                && !run.row.sla_missed
                && micros(now) > micros_after(run.row.interval_end, sla)
            {
                missed.push((run.row.dag.clone(), run.row.run_id.clone(), sla));
            }
        }
        for (dag, run_id, sla) in missed {
            if self.store.mark_sla_missed(&dag, &run_id).await? {
                tracing::warn!(dag = %dag, run = %run_id, sla = ?sla, "SLA missed: the run is not finished");
            }
            if let Some(run) = self.active.get_mut(&(dag, run_id)) {
                run.row.sla_missed = true;
            }
        }
        Ok(())
    }

    /// Starts queued runs and ready task instances. Returns when the next
    /// waiting task instance (a retry, a sensor's next poke) is due.
    async fn dispatch(&mut self) -> Result<Option<Instant>> {
        let now = self.clock.now();
        self.start_runs(now).await?;
        let mut wake: Option<DateTime<Utc>> = None;
        for key in self.oldest_first("running") {
            let run = self.active.get(&key).expect("active");
            if !run.dirty && run.wake_at.is_none_or(|w| w > now) {
                if let Some(w) = run.wake_at {
                    wake = Some(wake.map_or(w, |x| x.min(w)));
                }
                continue;
            }
            let mut run_wake = None;
            let mut ready = self.ready_units(&key, now, &mut run_wake).await?;
            let free = self.opts.workers.saturating_sub(self.running.len());
            let waiting_for_workers = ready.len() > free;
            ready.truncate(free);
            if let Some(run) = self.active.get_mut(&key) {
                run.dirty = waiting_for_workers;
                run.wake_at = run_wake;
            }
            if let Some(w) = run_wake {
                wake = Some(wake.map_or(w, |x| x.min(w)));
            }
            self.start_many(&key, &ready, now).await?;
            self.maybe_finish(&key).await?;
        }
        self.flush().await?;
        Ok(wake.and_then(|w| {
            let ahead = (w - self.clock.now()).to_std().unwrap_or_default();
            Instant::now().checked_add(ahead)
        }))
    }

    /// The active runs in `state` of jobs not paused, oldest logical date
    /// first.
    fn oldest_first(&self, state: &str) -> Vec<(String, String)> {
        let mut keys: Vec<(i64, &(String, String))> = self
            .active
            .iter()
            .filter(|(_, r)| r.row.state == state && !self.paused.contains(&r.row.dag))
            .map(|(k, r)| (r.row.logical_date, k))
            .collect();
        keys.sort();
        keys.into_iter().map(|(_, k)| k.clone()).collect()
    }

    /// Moves queued runs to running, oldest first, within each job's
    /// `max_active_runs`.
    async fn start_runs(&mut self, now: DateTime<Utc>) -> Result<()> {
        let mut running: HashMap<String, u32> = HashMap::new();
        for run in self.active.values() {
            if run.row.state == "running" {
                *running.entry(run.row.dag.clone()).or_default() += 1;
            }
        }
        for key in self.oldest_first("queued") {
            let run = self.active.get_mut(&key).expect("active");
            let count = running.entry(key.0.clone()).or_default();
            if *count >= run.job.max_active_runs.max(1) {
                continue;
            }
            if self
                .store
                .move_run(&key.0, &key.1, "queued", "running", micros(now))
                .await?
            {
                *count += 1;
                run.row.state = "running".into();
                run.row.started_at = Some(micros(now));
                tracing::info!(dag = %key.0, run = %key.1, "run started");
                let tis = self.store.task_instances(&key.0, &key.1).await?;
                run.tis = tis.into_iter().map(|t| (t.task.clone(), t)).collect();
                run.dirty = true;
            }
        }
        Ok(())
    }

    /// The units of a run that may start now. Marks units whose upstream
    /// failed, and notes in `wake` when a waiting one becomes due.
    async fn ready_units(
        &mut self,
        key: &(String, String),
        now: DateTime<Utc>,
        wake: &mut Option<DateTime<Utc>>,
    ) -> Result<Vec<String>> {
        let run = self.active.get_mut(key).expect("active");
        let units = run.units.clone();
        let mut ready = Vec::new();
        let mut upstream_failed = Vec::new();
        for unit in &units.order {
            if !run.tis.contains_key(unit) {
                // A task added to the job after the run was created.
                for m in units.members(unit) {
                    self.store.add_task_instance(&key.0, &key.1, &m).await?;
                }
                let tis = self.store.task_instances(&key.0, &key.1).await?;
                run.tis = tis.into_iter().map(|t| (t.task.clone(), t)).collect();
            }
            let Some(ti) = run.tis.get(unit) else {
                continue;
            };
            if !WAITING.contains(&ti.state.as_str()) {
                continue;
            }
            let next_try_at = ti.next_try_at;
            // One look at each upstream: any failed, or all succeeded?
            let mut upstream_bad = false;
            let mut upstream_done = true;
            for d in units.deps(unit) {
                match run.tis.get(d).map(|t| t.state.as_str()) {
                    Some("success") => {}
                    Some("failed" | "upstream_failed") => upstream_bad = true,
                    _ => upstream_done = false,
                }
            }
            if upstream_bad {
                // Marked at once, so the whole chain below it is marked in
                // this one pass (units are in DAG order).
                for m in units.members(unit) {
                    if let Some(ti) = run.tis.get_mut(&m) {
                        ti.state = "upstream_failed".into();
                    }
                    upstream_failed.push(m);
                }
                continue;
            }
            if !upstream_done {
                continue;
            }
            if let Some(at) = next_try_at.map(from_micros)
                && at > now
            {
                *wake = Some(wake.map_or(at, |w| w.min(at)));
                continue;
            }
            if !run.ready_since.contains_key(unit) {
                run.ready_since.insert(unit.clone(), Instant::now());
            }
            ready.push(unit.clone());
        }
        for task in upstream_failed {
            self.pending.push(Op::SetState {
                dag: key.0.clone(),
                run_id: key.1.clone(),
                task,
                state: "upstream_failed".into(),
            });
        }
        Ok(ready)
    }

    /// Claims and spawns one unit.
    async fn start_many(
        &mut self,
        key: &(String, String),
        units: &[String],
        now: DateTime<Utc>,
    ) -> Result<()> {
        if units.is_empty() {
            return Ok(());
        }
        let seq = self.next_log_seq();
        let run = self.active.get(key).expect("active");
        let tasks: Vec<String> = units.iter().flat_map(|u| run.units.members(u)).collect();
        // A sensor's next poke continues its attempt; anything else starts one.
        let announce: Vec<String> = units
            .iter()
            .filter(|u| {
                run.tis
                    .get(*u)
                    .is_none_or(|t| t.state != "up_for_reschedule")
            })
            .flat_map(|u| run.units.members(u))
            .collect();
        // What finished is written in the same transaction, before what
        // it made ready is claimed.
        let ops = std::mem::take(&mut self.pending);
        let claim = Claim {
            dag: &key.0,
            run_id: &key.1,
            tasks: &tasks,
            announce: &announce,
            worker: &self.opts.worker_id,
            now: micros(now),
            seq,
        };
        let claimed: HashSet<String> = match self.store.apply_and_claim(&ops, &claim).await {
            Ok(got) => got.into_iter().collect(),
            Err(e) => {
                self.pending.splice(0..0, ops);
                if let Some(run) = self.active.get_mut(key) {
                    run.dirty = true;
                }
                return Err(e);
            }
        };
        for unit in units {
            if claimed.contains(unit) {
                self.start(key, unit, now);
            } else if let Some(ti) = self.active.get_mut(key).and_then(|r| r.tis.get_mut(unit)) {
                // Another replica took it; its state comes with the next scan.
                ti.state = "running".into();
            }
        }
        Ok(())
    }

    /// Spawns one claimed unit.
    fn start(&mut self, key: &(String, String), unit: &str, now: DateTime<Utc>) {
        let run = self.active.get_mut(key).expect("active");
        let members = run.units.members(unit);
        // A sensor's pokes are one attempt, however many there are.
        let bump = run.tis[unit].state != "up_for_reschedule";
        for m in &members {
            if let Some(ti) = run.tis.get_mut(m) {
                ti.state = "running".into();
                if bump {
                    ti.try_number += 1;
                }
                ti.first_try_at.get_or_insert(micros(now));
                ti.started_at = Some(micros(now));
            }
        }
        if let Some(t0) = run.ready_since.remove(unit) {
            self.stats.ready_to_start.push(t0.elapsed());
            let free = self.free_since.front().map_or(t0, |f| t0.max(*f));
            self.stats.scheduling_delay.push(free.elapsed());
        }
        self.free_since.pop_front();
        self.stats.attempts_started += 1;
        let task = run.job.task(unit).expect("task").clone();
        let sensor = matches!(task.kind, TaskKind::Sensor(_));
        let attempt = Attempt {
            job: run.job.clone(),
            dag: key.0.clone(),
            run_id: key.1.clone(),
            unit: unit.to_string(),
            members,
            attempt: run.tis[unit].try_number,
            task_attempt: TaskAttempt {
                // A run of a date is created once, so its creation time
                // tells this run of the task instance from another.
                generation: run.row.created_at,
                attempt: run.tis[unit].try_number,
            },
            sensor,
        };
        let (job, ctx, units) = (run.job.clone(), run.ctx.clone(), run.units.clone());
        // The claim wrote the "attempt started" log line.
        if !sensor || bump {
            tracing::info!(dag = %key.0, run = %key.1, task = %unit, attempt = attempt.attempt, "task started");
        }
        // The unit's timeout is its tightest member's.
        let timeout = attempt
            .members
            .iter()
            .filter_map(|m| job.task(m).and_then(|t| t.timeout))
            .min();
        let runner = self.runner.clone();
        let a = attempt.clone();
        let handle = self.running.spawn(async move {
            let t0 = Instant::now();
            let outcome = if a.sensor {
                Outcome::Poked(runner.poke(job, ctx, a.unit.clone()).await)
            } else {
                let work = runner.run(job, ctx, units, a.unit.clone(), a.task_attempt);
                Outcome::Ran(match timeout {
                    Some(limit) => match tokio::time::timeout(limit, work).await {
                        Ok(r) => r,
                        Err(_) => Err(TaskError::new(
                            ErrorKind::External,
                            format!("timed out after {}", humanize(limit)),
                        )),
                    },
                    None => work.await,
                })
            };
            Done {
                attempt: a,
                elapsed: t0.elapsed(),
                outcome,
            }
        });
        self.in_flight.insert(handle.id(), attempt);
    }

    async fn joined(
        &mut self,
        joined: std::result::Result<(tokio::task::Id, Done), tokio::task::JoinError>,
    ) -> Result<()> {
        self.free_since.push_back(Instant::now());
        match joined {
            Ok((id, done)) => {
                self.in_flight.remove(&id);
                self.complete(done).await
            }
            Err(e) => {
                let Some(attempt) = self.in_flight.remove(&e.id()) else {
                    return Ok(());
                };
                let message = if e.is_panic() {
                    format!(
                        "the task panicked: {}",
                        sluice_engine::panic_message(e.into_panic())
                    )
                } else {
                    "the task was cancelled".to_string()
                };
                self.complete(Done {
                    attempt,
                    elapsed: Duration::ZERO,
                    outcome: Outcome::Ran(Err(TaskError::new(ErrorKind::Internal, message))),
                })
                .await
            }
        }
    }

    /// Records the end of an attempt and what comes next for the task.
    async fn complete(&mut self, done: Done) -> Result<()> {
        self.stats.attempts_finished += 1;
        let now = self.clock.now();
        let a = &done.attempt;
        let key = (a.dag.clone(), a.run_id.clone());
        let job = a.job.clone();
        let task = job.task(&a.unit).expect("task").clone();
        // The run may have left the active set (its job file was removed);
        // the attempt's end is recorded all the same.
        let ti = match self.active.get(&key) {
            Some(run) => run.tis.get(&a.unit).cloned(),
            None => self
                .store
                .task_instances(&a.dag, &a.run_id)
                .await?
                .into_iter()
                .find(|t| t.task == a.unit),
        };
        let failures = ti.as_ref().map_or(0, |t| t.failures);
        // A sensor that timed out has had its time: no retry.
        let mut sensor_timed_out = false;
        let result: Result<Option<UnitOutput>, TaskError> = match done.outcome {
            Outcome::Ran(Ok(out)) => Ok(Some(out)),
            Outcome::Ran(Err(e)) | Outcome::Poked(Err(e)) => Err(e),
            Outcome::Poked(Ok(true)) => Ok(None),
            Outcome::Poked(Ok(false)) => {
                let first = ti
                    .as_ref()
                    .and_then(|t| t.first_try_at)
                    .unwrap_or(micros(now));
                let waited = Duration::from_micros((micros(now) - first).max(0) as u64);
                let TaskKind::Sensor(sensor) = &task.kind else {
                    unreachable!("only sensors poke")
                };
                match task.timeout {
                    Some(limit) if waited >= limit => {
                        sensor_timed_out = true;
                        Err(TaskError::new(
                            ErrorKind::External,
                            format!("sensor timed out after {}", humanize(limit)),
                        ))
                    }
                    _ => {
                        let next = after(now, sensor.poke_interval);
                        let update = TiUpdate {
                            state: "up_for_reschedule".into(),
                            failures,
                            next_try_at: Some(micros(next)),
                            ..TiUpdate::default()
                        };
                        return self.record(&key, &a.members, update, None).await;
                    }
                }
            }
        };
        match result {
            Ok(out) => {
                tracing::info!(dag = %a.dag, run = %a.run_id, task = %a.unit, attempt = a.attempt, seconds = done.elapsed.as_secs_f64(), "task succeeded");
                self.log(
                    a,
                    "info",
                    &format!("succeeded in {:.3}s", done.elapsed.as_secs_f64()),
                );
                let update = TiUpdate {
                    state: "success".into(),
                    failures,
                    ended_at: Some(micros(now)),
                    ..TiUpdate::default()
                };
                self.record(&key, &a.members, update, out).await?;
            }
            Err(TaskError {
                kind,
                message,
                missing_input,
            }) => {
                let message = match missing_input {
                    Some(upstream) => self.where_staged(a, &upstream, message).await,
                    None => message,
                };
                let failures = failures + 1;
                let retry =
                    !sensor_timed_out && kind.is_retryable() && failures <= i64::from(task.retries);
                let next = retry.then(|| {
                    let delay =
                        retry_delay(task.retry_delay, task.max_retry_delay, failures as u32);
                    (after(now, delay), delay)
                });
                match &next {
                    Some((_, delay)) => {
                        tracing::warn!(dag = %a.dag, run = %a.run_id, task = %a.unit, attempt = a.attempt, error = %message, retry_in = %humanize(*delay), "task failed; will retry");
                        self.log(
                            a,
                            "error",
                            &format!("failed: {message}; retrying in {}", humanize(*delay)),
                        );
                    }
                    None if !kind.is_retryable() && failures <= i64::from(task.retries) => {
                        // Retries left, but the same input fails the same way.
                        tracing::error!(dag = %a.dag, run = %a.run_id, task = %a.unit, attempt = a.attempt, error = %message, kind = %kind, "task failed; not retried: the job or its data must change");
                        self.log(
                            a,
                            "error",
                            &format!(
                                "failed: {message}; not retried: a {kind} error, which another attempt would meet again"
                            ),
                        );
                    }
                    None => {
                        tracing::error!(dag = %a.dag, run = %a.run_id, task = %a.unit, attempt = a.attempt, error = %message, kind = %kind, "task failed");
                        self.log(a, "error", &format!("failed: {message}"));
                    }
                }
                let update = TiUpdate {
                    state: if retry { "up_for_retry" } else { "failed" }.into(),
                    failures,
                    next_try_at: next.map(|(t, _)| micros(t)),
                    ended_at: Some(micros(now)),
                    error: Some(message),
                    ..TiUpdate::default()
                };
                self.record(&key, &a.members, update, None).await?;
            }
        }
        self.maybe_finish(&key).await
    }

    /// `message` (an upstream task's staged output is missing) with the
    /// replica that wrote that output: on a second replica, a `file://`
    /// staging folder is another machine's disk.
    async fn where_staged(&self, a: &Attempt, upstream: &str, message: String) -> String {
        let rows = match self.store.task_instances(&a.dag, &a.run_id).await {
            Ok(rows) => rows,
            // The message stands without the replica's name.
            Err(_) => return message,
        };
        match rows
            .iter()
            .find(|t| t.task == upstream)
            .and_then(|t| t.ended_by.as_deref())
        {
            Some(by) if by != self.opts.worker_id => format!(
                "{message}; it was written by replica {by}, and this attempt ran on {me}: \
                 every replica must reach the staging store (object storage such as s3://, \
                 or a file system mounted on each)",
                me = self.opts.worker_id
            ),
            Some(by) => {
                format!("{message}; it was written by this replica ({by}) and since removed")
            }
            None => message,
        }
    }

    /// Writes an attempt's end for each member of its unit.
    async fn record(
        &mut self,
        key: &(String, String),
        members: &[String],
        update: TiUpdate,
        out: Option<UnitOutput>,
    ) -> Result<()> {
        for m in members {
            let mut u = update.clone();
            if let Some(c) = out
                .as_ref()
                .and_then(|o| o.counts.iter().find(|(id, _)| id == m))
                .map(|(_, c)| c)
            {
                u.rows_in = Some(c.rows_in as i64);
                u.rows_out = Some(c.rows_out as i64);
                u.bad_records = Some(c.bad as i64);
                u.bytes_written = Some(c.bytes as i64);
                u.watermark = c.watermark.clone();
            }
            self.pending.push(Op::Finish {
                dag: key.0.clone(),
                run_id: key.1.clone(),
                task: m.clone(),
                update: u.clone(),
            });
            if let Some(run) = self.active.get_mut(key) {
                run.dirty = true;
            }
            if let Some(ti) = self.active.get_mut(key).and_then(|r| r.tis.get_mut(m)) {
                ti.state = u.state.clone();
                ti.failures = u.failures;
                ti.next_try_at = u.next_try_at;
                ti.ended_at = u.ended_at;
                ti.error = u.error.clone();
                ti.rows_in = u.rows_in;
                ti.rows_out = u.rows_out;
            }
        }
        Ok(())
    }

    /// Ends a run whose task instances are all done.
    async fn maybe_finish(&mut self, key: &(String, String)) -> Result<()> {
        let Some(run) = self.active.get(key) else {
            return Ok(());
        };
        if run.row.state != "running" {
            return Ok(());
        }
        let state_of = |t: &String| run.tis.get(t).map_or("scheduled", |ti| ti.state.as_str());
        // Last tasks first: they are the ones usually still to finish, so
        // a run with work left is told after a look or two.
        if !run
            .job
            .dag
            .order
            .iter()
            .rev()
            .all(|t| TERMINAL.contains(&state_of(t)))
        {
            return Ok(());
        }
        let state = if run.job.dag.order.iter().all(|t| state_of(t) == "success") {
            "success"
        } else {
            "failed"
        };
        let now = self.clock.now();
        self.flush().await?;
        let run = self.active.get(key).expect("active");
        if self
            .store
            .move_run(&key.0, &key.1, "running", state, micros(now))
            .await?
        {
            tracing::info!(dag = %key.0, run = %key.1, state, "run finished");
            if state == "success" {
                self.cleanups
                    .spawn(self.runner.run_succeeded(run.job.clone(), run.ctx.clone()));
            }
        }
        self.active.remove(key);
        Ok(())
    }

    /// After a stop signal: waits for running tasks up to the grace
    /// period, then cancels the rest and puts them back to be run again.
    async fn drain(&mut self) -> Result<()> {
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
    async fn put_back(&mut self, a: &Attempt) -> Result<()> {
        self.flush().await?;
        for m in &a.members {
            self.store.requeue(&a.dag, &a.run_id, m).await?;
        }
        tracing::warn!(dag = %a.dag, run = %a.run_id, task = %a.unit, "task stopped by shutdown; it will run again");
        Ok(())
    }

    /// Appends a line to an attempt's log (written with the next batch).
    fn log(&mut self, a: &Attempt, level: &str, message: &str) {
        let now = micros(self.clock.now());
        let seq = self.next_log_seq();
        for m in &a.members {
            self.pending.push(Op::Log {
                dag: a.dag.clone(),
                run_id: a.run_id.clone(),
                task: m.clone(),
                attempt: a.attempt,
                seq,
                at: now,
                level: level.to_string(),
                message: message.to_string(),
            });
        }
    }

    /// The next log line's sequence number; they grow across restarts too.
    fn next_log_seq(&mut self) -> i64 {
        self.log_seq = (self.log_seq + 1).max(micros(self.clock.now()));
        self.log_seq
    }

    /// Writes what is pending, waiting out a state store outage for up
    /// to `state_outage_limit`: the last writes before exiting must not
    /// be lost to a blip.
    async fn flush_patiently(&mut self) -> Result<()> {
        let since = Instant::now();
        let mut failures = 0;
        loop {
            match self.flush().await {
                Err(e @ crate::error::Error::State { .. })
                    if since.elapsed() < self.opts.state_outage_limit =>
                {
                    failures += 1;
                    let delay = retry_delay(
                        Duration::from_millis(100),
                        Duration::from_secs(10),
                        failures,
                    );
                    tracing::warn!(error = %e, retry_in = %humanize(delay), "state store failed; retrying the last writes");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// Writes the batched task instance changes and log lines.
    async fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.pending);
        if let Err(e) = self.store.apply(&ops).await {
            // Not written: kept, in order, for the next try.
            self.pending.splice(0..0, ops);
            return Err(e);
        }
        Ok(())
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
    }
}

fn humanize(d: Duration) -> String {
    if d.as_secs() >= 1 && d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// A staging removal that panicked is a bug to see in the logs; it
/// changes no run's outcome.
fn log_cleanup(done: std::result::Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(
            error = %sluice_engine::panic_message(e.into_panic()),
            "removing a run's staging panicked"
        );
    }
}
