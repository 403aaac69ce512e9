//! Which runs exist and which start: recovery at start, scans of the
//! jobs folder, runs created as schedules fall due, queued runs started
//! within `max_active_runs`, SLA misses.

use super::*;

impl Daemon {
    /// After a state store error: task instances the store says this
    /// replica runs but that it does not (a claim whose commit's answer
    /// was lost) go back to be scheduled.
    pub(super) async fn requeue_lost_claims(&mut self) -> Result<()> {
        // Claims this replica still holds: attempts running, and attempts
        // that ended but whose end is not written yet (their end is
        // fenced by the claim, so requeueing them would lose it).
        let ended = self.pending.iter().filter_map(|op| match op {
            Op::Finish {
                dag, run_id, task, ..
            } => Some((dag.clone(), run_id.clone(), task.clone())),
            _ => None,
        });
        let running: HashSet<(String, String, String)> = self
            .in_flight
            .values()
            .flat_map(|a| {
                a.members
                    .iter()
                    .map(|m| (a.dag.clone(), a.run_id.clone(), m.clone()))
            })
            .chain(ended)
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
    pub(super) async fn recover(&mut self) -> Result<()> {
        let now = self.clock.now();
        let stale_before = if self.store.is_postgres() {
            micros(now).saturating_sub(micros_after(
                0,
                self.opts.heartbeat.saturating_mul(HEARTBEAT_TIMEOUT_BEATS),
            ))
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
    pub(super) async fn scan(&mut self) -> Result<()> {
        let now = self.clock.now();
        let changes = self.jobs.scan().await;
        for (name, file) in &changes.loaded {
            tracing::info!(dag = %name, file = %file.display(), "job loaded");
            if let Some(job) = self.jobs.get(name) {
                self.metrics
                    .job_loaded(name, job.dag.order.iter().map(String::as_str));
            }
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
        if self.opts.only.is_none() {
            self.sync_streams().await?;
        }
        self.check_sla(now).await
    }

    /// Creates the runs of `job` that are due by its schedule.
    pub(super) async fn schedule(&mut self, job: &Arc<Job>, now: DateTime<Utc>) -> Result<()> {
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
    pub(super) async fn refresh(&mut self) -> Result<()> {
        let rows = self
            .store
            .runs_in(&[RunState::Queued, RunState::Running])
            .await?;
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
            let load = row.state == RunState::Running;
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

    pub(super) async fn check_sla(&mut self, now: DateTime<Utc>) -> Result<()> {
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
                self.metrics.sla_missed(&dag);
            }
            if let Some(run) = self.active.get_mut(&(dag, run_id)) {
                run.row.sla_missed = true;
            }
        }
        Ok(())
    }

    /// Moves queued runs to running, oldest first, within each job's
    /// `max_active_runs`.
    pub(super) async fn start_runs(&mut self, now: DateTime<Utc>) -> Result<()> {
        let mut running: HashMap<String, u32> = HashMap::new();
        for run in self.active.values() {
            if run.row.state == RunState::Running {
                *running.entry(run.row.dag.clone()).or_default() += 1;
            }
        }
        for key in self.oldest_first(RunState::Queued) {
            let run = self.active.get_mut(&key).expect("active");
            let count = running.entry(key.0.clone()).or_default();
            if *count >= run.job.max_active_runs.max(1) {
                continue;
            }
            if self
                .store
                .move_run(
                    &key.0,
                    &key.1,
                    RunState::Queued,
                    RunState::Running,
                    micros(now),
                )
                .await?
            {
                *count += 1;
                run.row.state = RunState::Running;
                run.row.started_at = Some(micros(now));
                tracing::info!(dag = %key.0, run = %key.1, "run started");
                let tis = self.store.task_instances(&key.0, &key.1).await?;
                run.tis = tis.into_iter().map(|t| (t.task.clone(), t)).collect();
                run.dirty = true;
            }
        }
        Ok(())
    }
}
