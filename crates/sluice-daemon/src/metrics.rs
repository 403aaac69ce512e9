//! Every metric the daemon exports, its name and help text, in one place.
//! `/metrics` renders them in the Prometheus text format.
//!
//! Labels are `dag`, `task` and `state` only: never run ids, dates or
//! paths, whose values grow without bound. A replica counts what it ran,
//! so counters and `sluice_tasks_running` add up across replicas (`sum`);
//! `sluice_tasks_queued` describes the shared state store, so every
//! replica reports the same value and it aggregates with `max`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::time::Duration;

/// Task duration buckets: 10 ms to an hour.
const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

/// Scheduler pass buckets: 100 µs to 10 s.
const PASS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// The daemon's metrics, on a registry of their own (no process-wide
/// globals: tests and several daemons in one process stay apart).
pub struct Metrics {
    registry: Registry,
    task_runs: IntCounterVec,
    task_duration: HistogramVec,
    rows_read: IntCounterVec,
    rows_written: IntCounterVec,
    bytes_written: IntCounterVec,
    bad_records: IntCounterVec,
    dag_runs: IntCounterVec,
    sla_misses: IntCounterVec,
    last_success: prometheus::GaugeVec,
    tasks_queued: IntGaugeVec,
    tasks_running: IntGaugeVec,
    scheduler_pass: Histogram,
    state_store_errors: IntCounter,
    streams: StreamMetrics,
}

/// The metrics of stream jobs. Lag has a `file` label: the files a
/// stream's glob matches right now (a file's series goes when it does).
struct StreamMetrics {
    lines: IntCounterVec,
    read_bytes: IntCounterVec,
    bad_records: IntCounterVec,
    files_rolled: IntCounterVec,
    rolled_bytes: IntCounterVec,
    vanished: IntCounterVec,
    retries: IntCounterVec,
    failures: IntCounterVec,
    lag: IntGaugeVec,
    checkpoint_age: prometheus::GaugeVec,
    latency: HistogramVec,
}

impl StreamMetrics {
    fn new(r: &Registry) -> StreamMetrics {
        let c = |name: &str, help: &str| counter(r, name, help, &["dag"]);
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "sluice_stream_latency_seconds",
                "From reading a stream segment's first line to its files being visible, per commit.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["dag"],
        )
        .expect("valid metric");
        r.register(Box::new(latency.clone())).expect("unique name");
        let checkpoint_age = prometheus::GaugeVec::new(
            Opts::new(
                "sluice_stream_checkpoint_age_seconds",
                "Seconds since the stream's last commit (checkpoint and files).",
            ),
            &["dag"],
        )
        .expect("valid metric");
        r.register(Box::new(checkpoint_age.clone()))
            .expect("unique name");
        StreamMetrics {
            lines: c(
                "sluice_stream_lines_total",
                "Lines streams read (good and bad).",
            ),
            read_bytes: c(
                "sluice_stream_read_bytes_total",
                "Bytes streams read from their files.",
            ),
            bad_records: c(
                "sluice_stream_bad_records_total",
                "Lines streams could not read (skipped or dead-lettered).",
            ),
            files_rolled: c(
                "sluice_stream_files_rolled_total",
                "Parquet files streams made visible.",
            ),
            rolled_bytes: c(
                "sluice_stream_rolled_bytes_total",
                "Bytes of the Parquet files streams made visible.",
            ),
            vanished: c(
                "sluice_stream_vanished_files_total",
                "Input files deleted before a stream read them to their end.",
            ),
            retries: c(
                "sluice_stream_retries_total",
                "Writes that failed, after which a stream read again from its last checkpoint.",
            ),
            failures: c(
                "sluice_stream_failures_total",
                "Streams that stopped on an error (restarted after a pause).",
            ),
            lag: gauge(
                r,
                "sluice_stream_lag_bytes",
                "Bytes of a followed file not yet read.",
                &["dag", "file"],
            ),
            checkpoint_age,
            latency,
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// What one task attempt did, as metrics count it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskCounts {
    pub rows_read: u64,
    pub rows_written: u64,
    pub bytes_written: u64,
    pub bad_records: u64,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique name");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("unique name");
    g
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let task_runs = counter(
            &r,
            "sluice_task_runs_total",
            "Task attempts ended, by the state they ended in (success, failed, up_for_retry, upstream_failed).",
            &["dag", "task", "state"],
        );
        let task_duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_task_duration_seconds",
                "Duration of task attempts that ran (sensor pokes excluded).",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["dag", "task"],
        )
        .expect("valid metric");
        r.register(Box::new(task_duration.clone()))
            .expect("unique name");
        let rows_read = counter(
            &r,
            "sluice_rows_read_total",
            "Rows tasks read from their sources or upstream tasks.",
            &["dag", "task"],
        );
        let rows_written = counter(
            &r,
            "sluice_rows_written_total",
            "Rows tasks wrote (staged, published or loaded).",
            &["dag", "task"],
        );
        let bytes_written = counter(
            &r,
            "sluice_bytes_written_total",
            "Bytes tasks wrote to their destinations.",
            &["dag", "task"],
        );
        let bad_records = counter(
            &r,
            "sluice_bad_records_total",
            "Input records tasks could not read (skipped or dead-lettered).",
            &["dag", "task"],
        );
        let dag_runs = counter(
            &r,
            "sluice_dag_runs_total",
            "DAG runs finished, by final state (success, failed).",
            &["dag", "state"],
        );
        let sla_misses = counter(
            &r,
            "sluice_sla_misses_total",
            "Runs not finished within their job's sla after their interval ended.",
            &["dag"],
        );
        let last_success = prometheus::GaugeVec::new(
            Opts::new(
                "sluice_last_success_timestamp_seconds",
                "When this replica last finished a run of the job successfully (Unix time).",
            ),
            &["dag"],
        )
        .expect("valid metric");
        r.register(Box::new(last_success.clone()))
            .expect("unique name");
        let tasks_queued = gauge(
            &r,
            "sluice_tasks_queued",
            "Task instances ready to run and waiting for a worker, in the whole state store: every replica reports the same value, aggregate with max.",
            &["dag"],
        );
        let tasks_running = gauge(
            &r,
            "sluice_tasks_running",
            "Task attempts running on this replica.",
            &["dag"],
        );
        let scheduler_pass = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_scheduler_pass_seconds",
                "Duration of one pass of the scheduler loop.",
            )
            .buckets(PASS_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        r.register(Box::new(scheduler_pass.clone()))
            .expect("unique name");
        let state_store_errors = IntCounter::new(
            "sluice_state_store_errors_total",
            "State store statements that failed (the loop retries them).",
        )
        .expect("valid metric");
        r.register(Box::new(state_store_errors.clone()))
            .expect("unique name");
        let build_info = gauge(
            &r,
            "sluice_build_info",
            "Always 1; the labels say which build is running.",
            &["version"],
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique name");
        let streams = StreamMetrics::new(&r);
        Metrics {
            streams,
            registry: r,
            task_runs,
            task_duration,
            rows_read,
            rows_written,
            bytes_written,
            bad_records,
            dag_runs,
            sla_misses,
            last_success,
            tasks_queued,
            tasks_running,
            scheduler_pass,
            state_store_errors,
        }
    }

    /// Starts every series of a job at zero when it is loaded, so that a
    /// dashboard shows the job before anything happened and `increase()`
    /// sees its first failure (a series born at 1 has no increase).
    pub fn job_loaded<'a>(&self, dag: &str, tasks: impl IntoIterator<Item = &'a str>) {
        for task in tasks {
            for state in ["success", "failed", "up_for_retry", "upstream_failed"] {
                self.task_runs.with_label_values(&[dag, task, state]);
            }
            self.task_duration.with_label_values(&[dag, task]);
            for c in [
                &self.rows_read,
                &self.rows_written,
                &self.bytes_written,
                &self.bad_records,
            ] {
                c.with_label_values(&[dag, task]);
            }
        }
        for state in ["success", "failed"] {
            self.dag_runs.with_label_values(&[dag, state]);
        }
        self.sla_misses.with_label_values(&[dag]);
        self.tasks_running.with_label_values(&[dag]);
    }

    /// An attempt of `task` ended in `state` after `elapsed` (`None`: it
    /// never ran, as for upstream_failed).
    pub fn task_ended(
        &self,
        dag: &str,
        task: &str,
        state: &str,
        elapsed: Option<Duration>,
        counts: TaskCounts,
    ) {
        self.task_runs.with_label_values(&[dag, task, state]).inc();
        if let Some(elapsed) = elapsed {
            self.task_duration
                .with_label_values(&[dag, task])
                .observe(elapsed.as_secs_f64());
        }
        let add = |c: &IntCounterVec, n: u64| {
            if n > 0 {
                c.with_label_values(&[dag, task]).inc_by(n);
            }
        };
        add(&self.rows_read, counts.rows_read);
        add(&self.rows_written, counts.rows_written);
        add(&self.bytes_written, counts.bytes_written);
        add(&self.bad_records, counts.bad_records);
    }

    /// A run of `dag` finished in `state` at `at` (Unix seconds).
    pub fn run_finished(&self, dag: &str, state: &str, at: f64) {
        self.dag_runs.with_label_values(&[dag, state]).inc();
        if state == "success" {
            self.last_success.with_label_values(&[dag]).set(at);
        }
    }

    pub fn sla_missed(&self, dag: &str) {
        self.sla_misses.with_label_values(&[dag]).inc();
    }

    /// Task instances ready and waiting, per job, after a pass.
    pub fn set_queued(&self, dag: &str, n: usize) {
        self.tasks_queued
            .with_label_values(&[dag])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Forgets every job's queued figure, before a pass sets them again.
    pub fn reset_queued(&self) {
        self.tasks_queued.reset();
    }

    pub fn task_started(&self, dag: &str) {
        self.tasks_running.with_label_values(&[dag]).inc();
    }

    pub fn task_stopped(&self, dag: &str) {
        self.tasks_running.with_label_values(&[dag]).dec();
    }

    pub fn pass(&self, elapsed: Duration) {
        self.scheduler_pass.observe(elapsed.as_secs_f64());
    }

    pub fn state_store_error(&self) {
        self.state_store_errors.inc();
    }

    /// Every metric, in the Prometheus text format.
    /// A stream stopped on an error.
    pub fn stream_failed(&self, dag: &str) {
        self.streams.failures.with_label_values(&[dag]).inc();
    }

    /// Moves what a running stream counted since the last call into the
    /// metrics (its counters are drained).
    pub fn stream_observed(&self, dag: &str, stats: &sluice_engine::stream::StreamStats) {
        use std::sync::atomic::Ordering::Relaxed;
        let m = &self.streams;
        for (counter, value) in [
            (&m.lines, &stats.lines),
            (&m.read_bytes, &stats.bytes_read),
            (&m.bad_records, &stats.bad),
            (&m.files_rolled, &stats.files_rolled),
            (&m.rolled_bytes, &stats.bytes_rolled),
            (&m.vanished, &stats.vanished),
            (&m.retries, &stats.retries),
        ] {
            counter
                .with_label_values(&[dag])
                .inc_by(value.swap(0, Relaxed));
        }
        // Every series of a stream exists from its start (at 0), so that
        // increase() and rate() see its first commit.
        let latency = m.latency.with_label_values(&[dag]);
        for seconds in std::mem::take(&mut *stats.latencies.lock().expect("not poisoned")) {
            latency.observe(seconds);
        }
        let committed = stats.committed_at_ms.load(Relaxed);
        if committed > 0 {
            let now = chrono::Utc::now().timestamp_millis() as f64;
            m.checkpoint_age
                .with_label_values(&[dag])
                .set(((now - committed as f64) / 1000.0).max(0.0));
        }
        let lag = stats.lag.lock().expect("not poisoned");
        // Series of files no longer followed go.
        for family in self.registry.gather() {
            if family.name() != "sluice_stream_lag_bytes" {
                continue;
            }
            for metric in family.get_metric() {
                let labels: Vec<(&str, &str)> = metric
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                let of_dag = labels.iter().any(|(n, v)| *n == "dag" && *v == dag);
                if let Some((_, file)) = labels.iter().find(|(n, _)| *n == "file")
                    && of_dag
                    && !lag.contains_key(*file)
                {
                    let _ = m.lag.remove_label_values(&[dag, file]);
                }
            }
        }
        for (file, behind) in lag.iter() {
            m.lag
                .with_label_values(&[dag, file.as_str()])
                .set(i64::try_from(*behind).unwrap_or(i64::MAX));
        }
    }

    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(16 << 10);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("the text encoder writes to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_declared_with_help_and_renders() {
        let m = Metrics::new();
        m.task_ended(
            "d",
            "t",
            "success",
            Some(Duration::from_millis(20)),
            TaskCounts {
                rows_read: 3,
                rows_written: 2,
                bytes_written: 100,
                bad_records: 1,
            },
        );
        m.run_finished("d", "success", 1_700_000_000.0);
        m.sla_missed("d");
        m.set_queued("d", 4);
        m.task_started("d");
        m.pass(Duration::from_micros(300));
        m.state_store_error();
        let text = m.render();
        for line in [
            "sluice_task_runs_total{dag=\"d\",state=\"success\",task=\"t\"} 1",
            "sluice_task_duration_seconds_bucket{dag=\"d\",task=\"t\",le=\"0.025\"} 1",
            "sluice_rows_read_total{dag=\"d\",task=\"t\"} 3",
            "sluice_rows_written_total{dag=\"d\",task=\"t\"} 2",
            "sluice_bytes_written_total{dag=\"d\",task=\"t\"} 100",
            "sluice_bad_records_total{dag=\"d\",task=\"t\"} 1",
            "sluice_dag_runs_total{dag=\"d\",state=\"success\"} 1",
            "sluice_sla_misses_total{dag=\"d\"} 1",
            "sluice_last_success_timestamp_seconds{dag=\"d\"} 1700000000",
            "sluice_tasks_queued{dag=\"d\"} 4",
            "sluice_tasks_running{dag=\"d\"} 1",
            "sluice_scheduler_pass_seconds_count 1",
            "sluice_state_store_errors_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(text.contains("sluice_build_info{version=\""), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        // Every family has its help text.
        for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let name = family.split(' ').next().unwrap();
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no help"
            );
        }
    }
}
