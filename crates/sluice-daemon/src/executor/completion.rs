//! The end of an attempt: its outcome recorded (retried, failed or
//! succeeded), its log lines and writes batched to the state store, and
//! its run finished when nothing is left to run.

use super::*;

impl Daemon {
    pub(super) async fn joined(
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
    pub(super) async fn complete(&mut self, done: Done) -> Result<()> {
        self.stats.attempts_finished += 1;
        let now = self.clock.now();
        let a = &done.attempt;
        self.metrics.task_stopped(&a.dag);
        let key = (a.dag.clone(), a.run_id.clone());
        let job = a.job.clone();
        let task = job.task(&a.unit).expect("task").clone();
        // What the attempt logged, before the line that says how it ended.
        for line in a.log.take() {
            self.log_at(a, line.at, line.level, &line.message);
        }
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
                            failures,
                            next_try_at: Some(micros(next)),
                            ..TiUpdate::to(TaskState::UpForReschedule)
                        };
                        return self.record(a, update, None, done.elapsed).await;
                    }
                }
            }
        };
        match result {
            Ok(out) => {
                // The unit's last member is the one whose rows it delivered.
                let (rows_in, rows_out) = out
                    .as_ref()
                    .and_then(|o| o.counts.first().zip(o.counts.last()))
                    .map_or((0, 0), |(first, last)| (first.1.rows_in, last.1.rows_out));
                tracing::info!(dag = %a.dag, run = %a.run_id, task = %a.unit, attempt = a.attempt, rows_in, rows_out, seconds = done.elapsed.as_secs_f64(), "task succeeded");
                self.log(
                    a,
                    "info",
                    &format!("succeeded in {:.3}s", done.elapsed.as_secs_f64()),
                );
                let update = TiUpdate {
                    failures,
                    ended_at: Some(micros(now)),
                    ..TiUpdate::to(TaskState::Success)
                };
                self.record(a, update, out, done.elapsed).await?;
            }
            Err(TaskError {
                kind,
                message,
                missing_input,
                fenced,
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
                    // Whatever is recorded next, the store keeps only if
                    // the claim still stands (it could not tell).
                    _ if fenced => {
                        tracing::warn!(dag = %a.dag, run = %a.run_id, task = %a.unit, attempt = a.attempt, error = %message, "attempt fenced: its output was not published");
                        self.log(a, "warn", &format!("fenced: {message}"));
                    }
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
                    failures,
                    next_try_at: next.map(|(t, _)| micros(t)),
                    ended_at: Some(micros(now)),
                    error: Some(message),
                    ..TiUpdate::to(if retry {
                        TaskState::UpForRetry
                    } else {
                        TaskState::Failed
                    })
                };
                self.record(a, update, None, done.elapsed).await?;
            }
        }
        self.maybe_finish(&key).await
    }

    /// `message` (an upstream task's staged output is missing) with the
    /// replica that wrote that output: on a second replica, a `file://`
    /// staging folder is another machine's disk.
    pub(super) async fn where_staged(
        &self,
        a: &Attempt,
        upstream: &str,
        message: String,
    ) -> String {
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
    pub(super) async fn record(
        &mut self,
        a: &Attempt,
        update: TiUpdate,
        out: Option<UnitOutput>,
        elapsed: Duration,
    ) -> Result<()> {
        let key = &(a.dag.clone(), a.run_id.clone());
        for (i, m) in a.members.iter().enumerate() {
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
            // A sensor between pokes has not ended its attempt.
            if u.state != TaskState::UpForReschedule {
                let count = |v: Option<i64>| v.map_or(0, |n| n.max(0) as u64);
                self.metrics.task_ended(
                    &key.0,
                    m,
                    u.state.as_str(),
                    Some(elapsed),
                    TaskCounts {
                        rows_read: count(u.rows_in),
                        rows_written: count(u.rows_out),
                        bytes_written: count(u.bytes_written),
                        bad_records: count(u.bad_records),
                    },
                );
            }
            self.pending.push(Op::Finish {
                dag: key.0.clone(),
                run_id: key.1.clone(),
                task: m.clone(),
                update: u.clone(),
                worker: self.opts.worker_id.clone(),
                attempt: a.tries.get(i).copied().unwrap_or(a.attempt),
            });
            if let Some(run) = self.active.get_mut(key) {
                run.dirty = true;
            }
            if let Some(ti) = self.active.get_mut(key).and_then(|r| r.tis.get_mut(m)) {
                ti.state = u.state;
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
    pub(super) async fn maybe_finish(&mut self, key: &(String, String)) -> Result<()> {
        let Some(run) = self.active.get(key) else {
            return Ok(());
        };
        if run.row.state != RunState::Running {
            return Ok(());
        }
        let state_of = |t: &String| run.tis.get(t).map_or(TaskState::Scheduled, |ti| ti.state);
        // Last tasks first: they are the ones usually still to finish, so
        // a run with work left is told after a look or two.
        if !run
            .job
            .dag
            .order
            .iter()
            .rev()
            .all(|t| state_of(t).is_terminal())
        {
            return Ok(());
        }
        let state = if run
            .job
            .dag
            .order
            .iter()
            .all(|t| state_of(t) == TaskState::Success)
        {
            RunState::Success
        } else {
            RunState::Failed
        };
        let now = self.clock.now();
        self.flush().await?;
        let run = self.active.get(key).expect("active");
        if self
            .store
            .move_run(&key.0, &key.1, RunState::Running, state, micros(now))
            .await?
        {
            tracing::info!(dag = %key.0, run = %key.1, state = %state, "run finished");
            self.metrics.run_finished(
                &key.0,
                state.as_str(),
                now.timestamp_millis() as f64 / 1000.0,
            );
            if state == RunState::Success {
                self.cleanups
                    .spawn(self.runner.run_succeeded(run.job.clone(), run.ctx.clone()));
            }
        }
        self.active.remove(key);
        Ok(())
    }

    /// Appends a line to an attempt's log (written with the next batch).
    pub(super) fn log(&mut self, a: &Attempt, level: &str, message: &str) {
        let now = micros(self.clock.now());
        self.log_at(a, now, level, message);
    }

    /// Appends a line logged at `at` (unix microseconds).
    pub(super) fn log_at(&mut self, a: &Attempt, at: i64, level: &str, message: &str) {
        let now = at;
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
    pub(super) fn next_log_seq(&mut self) -> i64 {
        self.log_seq = (self.log_seq + 1).max(micros(self.clock.now()));
        self.log_seq
    }

    /// Writes what is pending, waiting out a state store outage for up
    /// to `state_outage_limit`: the last writes before exiting must not
    /// be lost to a blip.
    pub(super) async fn flush_patiently(&mut self) -> Result<()> {
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
    pub(super) async fn flush(&mut self) -> Result<()> {
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
