//! Which task instances start: the ready units of active runs, claimed
//! in the state store and spawned on free workers.

use super::*;

impl Daemon {
    /// Starts queued runs and ready task instances. Returns when the next
    /// waiting task instance (a retry, a sensor's next poke) is due.
    pub(super) async fn dispatch(&mut self) -> Result<Option<Instant>> {
        let now = self.clock.now();
        self.start_runs(now).await?;
        let mut wake: Option<DateTime<Utc>> = None;
        for key in self.oldest_first(RunState::Running) {
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
            // On PostgreSQL, with more ready units than free workers, the
            // store chooses which to claim (migration 6): replicas that
            // chose for themselves kept choosing the same units, and all
            // but one lost their claims until the next scan.
            let store_picks = waiting_for_workers && free > 0 && self.store.is_postgres();
            if waiting_for_workers && !store_picks {
                if let Some(run) = self.active.get(&key) {
                    // Work that started before goes first: a claim
                    // re-queued from a dead process, and retries that came
                    // due. (The store's pick does the same.)
                    ready.sort_by_key(|u| run.tis.get(u).is_none_or(|t| t.try_number == 0));
                }
                ready.truncate(free);
            }
            if let Some(run) = self.active.get_mut(&key) {
                run.dirty = waiting_for_workers;
                run.wake_at = run_wake;
            }
            if let Some(w) = run_wake {
                wake = Some(wake.map_or(w, |x| x.min(w)));
            }
            let limit = store_picks.then_some(free);
            self.start_many(&key, &ready, limit, now).await?;
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
    pub(super) fn oldest_first(&self, state: RunState) -> Vec<(String, String)> {
        let mut keys: Vec<(i64, &(String, String))> = self
            .active
            .iter()
            .filter(|(_, r)| r.row.state == state && !self.paused.contains(&r.row.dag))
            .map(|(k, r)| (r.row.logical_date, k))
            .collect();
        keys.sort();
        keys.into_iter().map(|(_, k)| k.clone()).collect()
    }

    /// The units of a run that may start now. Marks units whose upstream
    /// failed, and notes in `wake` when a waiting one becomes due.
    pub(super) async fn ready_units(
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
            if !ti.state.is_waiting() {
                continue;
            }
            let next_try_at = ti.next_try_at;
            // One look at each upstream: any failed, or all succeeded?
            let mut upstream_bad = false;
            let mut upstream_done = true;
            for d in units.deps(unit) {
                match run.tis.get(d).map(|t| t.state) {
                    Some(TaskState::Success) => {}
                    Some(s) if s.blocks_downstream() => upstream_bad = true,
                    _ => upstream_done = false,
                }
            }
            if upstream_bad {
                // Marked at once, so the whole chain below it is marked in
                // this one pass (units are in DAG order).
                for m in units.members(unit) {
                    if let Some(ti) = run.tis.get_mut(&m) {
                        ti.state = TaskState::UpstreamFailed;
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
            self.metrics.task_ended(
                &key.0,
                &task,
                TaskState::UpstreamFailed.as_str(),
                None,
                TaskCounts::default(),
            );
            self.pending.push(Op::SetState {
                dag: key.0.clone(),
                run_id: key.1.clone(),
                task,
                state: TaskState::UpstreamFailed,
            });
        }
        Ok(ready)
    }

    /// Publishes how many units of each job are ready and waiting for a
    /// worker. Every replica reads every active run, so the figure is the
    /// store's, the same on each replica.
    pub(super) fn count_queued(&self) {
        let mut per_dag: HashMap<&str, usize> =
            self.jobs.all().map(|j| (j.name.as_str(), 0)).collect();
        for run in self.active.values() {
            *per_dag.entry(run.row.dag.as_str()).or_default() += run.ready_since.len();
        }
        // A removed job drops out rather than keep its last figure.
        self.metrics.reset_queued();
        for (dag, n) in per_dag {
            self.metrics.set_queued(dag, n);
        }
    }

    /// Claims and spawns ready units: all of `units`, or with `limit`
    /// at most that many of them, as the store picks.
    pub(super) async fn start_many(
        &mut self,
        key: &(String, String),
        units: &[String],
        limit: Option<usize>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if units.is_empty() || limit == Some(0) {
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
                    .is_none_or(|t| t.state != TaskState::UpForReschedule)
            })
            .flat_map(|u| run.units.members(u))
            .collect();
        // What finished is written in the same transaction, before what
        // it made ready is claimed.
        let ops = std::mem::take(&mut self.pending);
        let offered: Vec<(String, Vec<String>)> = match limit {
            Some(_) => units
                .iter()
                .map(|u| (u.clone(), run.units.members(u)))
                .collect(),
            None => Vec::new(),
        };
        let claim = Claim {
            dag: &key.0,
            run_id: &key.1,
            tasks: &tasks,
            announce: &announce,
            worker: &self.opts.worker_id,
            now: micros(now),
            seq,
            pick: limit.map(|limit| Pick {
                limit,
                units: &offered,
            }),
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
            } else if limit.is_some() {
                // Not picked, or held by another replica: the next pass
                // offers it again if a worker is still free, and the next
                // scan shows who runs it.
                if let Some(run) = self.active.get_mut(key) {
                    run.dirty = true;
                }
            } else if let Some(run) = self.active.get_mut(key) {
                // Another replica took it; its state comes with the next
                // scan. The worker it would have taken is still free: look
                // at the run again on the next pass.
                if let Some(ti) = run.tis.get_mut(unit) {
                    ti.state = TaskState::Running;
                }
                run.dirty = true;
            }
        }
        Ok(())
    }

    /// Spawns one claimed unit.
    pub(super) fn start(&mut self, key: &(String, String), unit: &str, now: DateTime<Utc>) {
        let run = self.active.get_mut(key).expect("active");
        let members = run.units.members(unit);
        // A sensor's pokes are one attempt, however many there are.
        let bump = run.tis[unit].state != TaskState::UpForReschedule;
        for m in &members {
            if let Some(ti) = run.tis.get_mut(m) {
                ti.state = TaskState::Running;
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
        let tries = members
            .iter()
            .map(|m| run.tis.get(m).map_or(0, |t| t.try_number))
            .collect();
        let attempt = Attempt {
            job: run.job.clone(),
            dag: key.0.clone(),
            run_id: key.1.clone(),
            unit: unit.to_string(),
            members,
            attempt: run.tis[unit].try_number,
            task_attempt: TaskAttempt {
                // A run of a date is created once, so its creation time
                // tells this run of the task instance from another; a
                // clear sets a later one.
                generation: run.tis[unit].generation.unwrap_or(run.row.created_at),
                attempt: run.tis[unit].try_number,
            },
            sensor,
            log: Arc::new(crate::task_log::Recording::start()),
            tries,
        };
        let (job, units) = (run.job.clone(), run.units.clone());
        // This attempt's own values (`ti.try_number`, `ti.hostname`).
        let ctx = Arc::new(RunContext {
            try_number: attempt.attempt,
            hostname: self.opts.worker_id.clone(),
            ..(*run.ctx).clone()
        });
        // One replica on SQLite holds the store alone: nobody can take
        // its claims. On PostgreSQL the publish asks the store first.
        let fence: AttemptFence = if self.store.is_postgres() {
            Arc::new(super::fence::ClaimFence {
                store: self.store.clone(),
                dag: key.0.clone(),
                run_id: key.1.clone(),
                task: unit.to_string(),
                worker: self.opts.worker_id.clone(),
                try_number: attempt.attempt,
                patience: self.opts.heartbeat.saturating_mul(HEARTBEAT_TIMEOUT_BEATS),
            })
        } else {
            Arc::new(sluice_engine::fence::Sole)
        };
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
        let span = a.log.span(&a.dag, &a.run_id, &a.unit, a.attempt);
        let work = async move {
            let t0 = Instant::now();
            let outcome = if a.sensor {
                Outcome::Poked(runner.poke(job, ctx, a.unit.clone()).await)
            } else {
                let work = runner.run(job, ctx, units, a.unit.clone(), a.task_attempt, fence);
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
        };
        let handle = self
            .running
            .spawn(tracing::Instrument::instrument(work, span));
        self.in_flight.insert(handle.id(), attempt);
        self.metrics.task_started(&key.0);
    }
}
