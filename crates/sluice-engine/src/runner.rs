//! The units of work of a job and how one runs. A load whose input feeds
//! nothing else is fused with the task that produces it, so the data
//! streams from source to destination without being staged. Which unit
//! runs when, and how often it is retried, is the daemon's executor's
//! business, for `sluice run` as for `serve`.

use crate::error::{Error, Result};
use crate::fence::Fence;
use crate::logs::LogsSource;
use crate::sink::{ParquetOptions, write_dataset};
use crate::staging::{StagedDataset, Staging};
use crate::store::{Location, Stores};
use arrow::array::Array;
use datafusion::execution::SendableRecordBatchStream;
use object_store::ObjectStoreExt;
use sluice_core::config::{
    DaemonConfig, Extract, Job, Load, LoadMode, OnError, SensorKind, Task, TaskKind,
};
use sluice_core::template::{Dialect, RunContext};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Shared, per-process state of the data plane.
pub struct Engine {
    pub config: DaemonConfig,
    pub stores: Stores,
    staging: Staging,
    dead_letter: Location,
    /// Where incremental extracts read their marks; without it they fail.
    marks: Option<Arc<dyn crate::db::MarkSource>>,
    /// One memory pool for every transform and check of the process.
    runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
}

impl Engine {
    pub fn new(config: DaemonConfig) -> Result<Self> {
        let stores = Stores::new(config.connections.clone());
        let staging = Staging::new(stores.resolve(&config.staging, None)?);
        let dead_letter = stores.resolve(&config.dead_letter, None)?;
        let runtime = crate::sql::runtime(config.memory_limit)?;
        Ok(Engine {
            runtime,
            config,
            stores,
            staging,
            dead_letter,
            marks: None,
        })
    }

    /// Lets incremental extracts read the marks kept in `source`.
    pub fn with_marks(mut self, source: Arc<dyn crate::db::MarkSource>) -> Self {
        self.marks = Some(source);
        self
    }

    /// The memory pool and spill space every SQL session shares.
    pub(crate) fn runtime(&self) -> Arc<datafusion::execution::runtime_env::RuntimeEnv> {
        self.runtime.clone()
    }

    /// The dead-letter store's root.
    pub(crate) fn dead_letter_root(&self) -> &Location {
        &self.dead_letter
    }

    /// Where a task's bad records go for one logical date.
    pub fn dead_letter_dir(&self, job: &str, task: &str, ctx: &RunContext) -> Location {
        self.dead_letter
            .child(job)
            .child(task)
            .child(&ctx.date_key())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Success,
    Failed,
    /// Not run because a task it depends on failed.
    UpstreamFailed,
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TaskState::Success => "success",
            TaskState::Failed => "failed",
            TaskState::UpstreamFailed => "upstream_failed",
        })
    }
}

/// What one task did.
#[derive(Debug, Clone)]
pub struct TaskReport {
    pub task: String,
    pub kind: &'static str,
    pub state: TaskState,
    pub rows_in: u64,
    pub rows_out: u64,
    pub bad_records: u64,
    pub bytes_written: u64,
    pub duration: Duration,
    /// Attempts started: 1 unless the task was retried.
    pub attempts: u32,
    pub error: Option<String>,
    /// An incremental extract's next mark, for the caller to keep once
    /// the run has succeeded.
    pub watermark: Option<String>,
}

/// What a run did, task by task in DAG order.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub job: String,
    pub run_id: String,
    pub tasks: Vec<TaskReport>,
}

impl RunReport {
    pub fn success(&self) -> bool {
        self.tasks.iter().all(|t| t.state == TaskState::Success)
    }
}

/// Counts a unit of work reports for each task in it.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub rows_in: u64,
    pub rows_out: u64,
    pub bad: u64,
    pub bytes: u64,
    /// For an incremental extract: the mark to advance to once the run
    /// has succeeded.
    pub watermark: Option<String>,
}

/// How a job's tasks group into units of work. A load whose input feeds
/// nothing else is fused with the extract or transform producing it, so
/// the data streams from source to destination without being staged; the
/// pair runs (and is retried) as one unit.
#[derive(Debug, Clone)]
pub struct Units {
    /// load id -> producer id.
    fused: HashMap<String, String>,
    /// Every selected task but fused producers, in DAG order.
    pub order: Vec<String>,
    /// unit -> the tasks that must succeed before it starts.
    deps: HashMap<String, Vec<String>>,
}

impl Units {
    pub fn plan(job: &Job, selected: &HashSet<String>) -> Units {
        let mut fused = HashMap::new();
        for task in &job.tasks {
            if let TaskKind::Load(load) = &task.kind {
                let input = load.input();
                let producer = job.task(input).expect("validated input");
                let single = job.dag.downstream[input].len() == 1;
                let streamable =
                    matches!(producer.kind, TaskKind::Extract(_) | TaskKind::Transform(_));
                if single && streamable && selected.contains(&task.id) {
                    fused.insert(task.id.clone(), input.to_string());
                }
            }
        }
        let producers: HashSet<&String> = fused.values().collect();
        let order: Vec<String> = job
            .dag
            .order
            .iter()
            .filter(|t| selected.contains(*t) && !producers.contains(t))
            .cloned()
            .collect();
        let deps = order
            .iter()
            .map(|unit| {
                let producer = fused.get(unit);
                let mut deps: Vec<String> = job.dag.upstream[unit]
                    .iter()
                    .filter(|u| producer != Some(*u))
                    .cloned()
                    .collect();
                if let Some(p) = producer {
                    deps.extend(job.dag.upstream[p].iter().cloned());
                }
                (unit.clone(), deps)
            })
            .collect();
        Units { fused, order, deps }
    }

    /// Every task of the job.
    pub fn all(job: &Job) -> Units {
        Units::plan(job, &job.tasks.iter().map(|t| t.id.clone()).collect())
    }

    /// The producer fused into `unit`, if any.
    pub fn producer(&self, unit: &str) -> Option<&str> {
        self.fused.get(unit).map(String::as_str)
    }

    /// The tasks `unit` runs: its fused producer first, then itself.
    pub fn members(&self, unit: &str) -> Vec<String> {
        let mut members: Vec<String> = self
            .producer(unit)
            .map(str::to_string)
            .into_iter()
            .collect();
        members.push(unit.to_string());
        members
    }

    /// The tasks that must succeed before `unit` starts.
    pub fn deps(&self, unit: &str) -> &[String] {
        self.deps.get(unit).map_or(&[], Vec::as_slice)
    }
}

/// Which run of a task instance an attempt belongs to. SQL loads record
/// it in the target (see `db::LoadMarker`), so that a retry of a load
/// that committed does not load again while a re-run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskAttempt {
    /// Changes when the task instance is deliberately run again (a new
    /// run of its date, a clear); a retry keeps it.
    pub generation: i64,
    /// 1 for the first attempt, counting up with retries.
    pub attempt: i64,
}

/// What a unit of work did: counts for each of its tasks, and the dataset
/// it staged for later tasks, if any.
#[derive(Debug)]
pub struct UnitOutput {
    pub counts: Vec<(String, Counts)>,
    pub staged: Option<StagedDataset>,
}

impl Engine {
    /// Runs one unit of a run on its own, for the daemon: its inputs are
    /// read back from the staging store, where earlier units (perhaps in
    /// an earlier process) left them. The caller enforces the timeout.
    pub async fn run_unit(
        &self,
        job: &Job,
        ctx: &RunContext,
        units: &Units,
        unit: &str,
        attempt: TaskAttempt,
        fence: &dyn Fence,
    ) -> Result<UnitOutput> {
        let date_key = ctx.date_key();
        let task = job
            .task(unit)
            .ok_or_else(|| Error::Internal(format!("job {} has no task {unit}", job.name)))?;
        crate::faults::pause_at("before_inputs", unit).await;
        let mut inputs = HashMap::new();
        for dep in units.deps(unit) {
            let producer = job.task(dep).expect("dependency");
            if matches!(producer.kind, TaskKind::Extract(_) | TaskKind::Transform(_)) {
                let staged = self.staging.open(&job.name, &date_key, dep).await?;
                inputs.insert(dep.clone(), staged);
            }
        }
        let (counts, staged) = run_unit(
            self,
            job,
            ctx,
            task,
            units.producer(unit),
            &inputs,
            Claim { attempt, fence },
        )
        .await?;
        Ok(UnitOutput { counts, staged })
    }

    /// One poke of a sensor: whether its condition holds now.
    pub async fn poke(&self, job: &Job, ctx: &RunContext, task: &Task) -> Result<bool> {
        let TaskKind::Sensor(sensor) = &task.kind else {
            return Err(Error::Internal(format!("task {} is not a sensor", task.id)));
        };
        match &sensor.kind {
            SensorKind::ObjectExists { url, connection } => {
                let key = format!("{}: tasks.{}.url", job.file.display(), task.id);
                let url = ctx.render(url, &key)?;
                let loc = self.stores.resolve(&url, connection.as_deref())?;
                match loc.store.head(&loc.path).await {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(Error::store(format!("checking {}", loc.url()), e)),
                }
            }
            SensorKind::Sql { connection, query } => {
                let key = format!("{}: tasks.{}.query", job.file.display(), task.id);
                let dialect = crate::db::dialect(&self.config, connection);
                let query = ctx.render_sql(query, &key, dialect)?;
                crate::db::poke(&self.config, connection, &query).await
            }
        }
    }

    /// Removes what a finished run staged.
    pub async fn remove_staging(&self, job: &str, ctx: &RunContext) -> Result<()> {
        self.staging.remove_run(job, &ctx.date_key()).await
    }
}

type UnitResult = Result<(Vec<(String, Counts)>, Option<StagedDataset>)>;

/// The attempt a unit runs as: what a SQL load's marker records, and the
/// fence a publish asks first.
#[derive(Clone, Copy)]
struct Claim<'a> {
    attempt: TaskAttempt,
    fence: &'a dyn Fence,
}

/// Runs one unit: a task, or a load with its fused producer.
async fn run_unit(
    engine: &Engine,
    job: &Job,
    ctx: &RunContext,
    task: &Task,
    producer: Option<&str>,
    inputs: &HashMap<String, StagedDataset>,
    claim: Claim<'_>,
) -> UnitResult {
    let Claim { attempt, fence } = claim;
    let date_key = &ctx.date_key();
    let key = |k: &str| format!("{}: tasks.{}.{k}", job.file.display(), task.id);
    match &task.kind {
        TaskKind::Extract(_) | TaskKind::Transform(_) => {
            let (stream, finish) = produce(engine, job, ctx, task, inputs).await?;
            let staged = engine
                .staging
                .stage(stream, &job.name, date_key, &task.id, fence)
                .await?;
            let counts = finish(staged.rows);
            Ok((vec![(task.id.clone(), counts)], Some(staged)))
        }
        TaskKind::Load(load) => {
            let mut counts = Vec::new();
            let marker = crate::db::LoadMarker {
                job: job.name.clone(),
                task: task.id.clone(),
                logical_date: ctx
                    .logical_date()
                    .with_timezone(&chrono::Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                generation: attempt.generation,
                attempt: attempt.attempt,
            };
            if let Load::Sql(l) = load
                && let Some(rows) = crate::db::take_load(&engine.config, l, &marker).await?
            {
                // The process that loaded died before it could say so.
                tracing::warn!(dag = %job.name, task = %task.id, rows, "an earlier attempt of this task instance committed its load; not loading again");
                if let Some(pid) = producer {
                    counts.push((
                        pid.to_string(),
                        Counts {
                            rows_in: rows,
                            rows_out: rows,
                            ..Counts::default()
                        },
                    ));
                }
                counts.push((
                    task.id.clone(),
                    Counts {
                        rows_in: rows,
                        rows_out: rows,
                        ..Counts::default()
                    },
                ));
                return Ok((counts, None));
            }
            let (stream, finish): (SendableRecordBatchStream, Option<Finish>) = match producer {
                Some(pid) => {
                    let producer_task = job.task(pid).expect("producer");
                    let (s, f) = produce(engine, job, ctx, producer_task, inputs).await?;
                    (s, Some(f))
                }
                None => {
                    let input_name = load.input();
                    let input = inputs.get(input_name).ok_or_else(|| {
                        Error::Internal(format!("input {input_name} was not staged"))
                    })?;
                    let session = crate::sql::session(&engine.runtime)?;
                    crate::sql::register(&session, input_name, input).await?;
                    let df = session.table(input_name).await?;
                    (df.execute_stream().await?, None)
                }
            };
            let (rows, bytes) = match load {
                Load::Parquet(p) => {
                    let url = ctx.render(&p.url, &key("url"))?;
                    let dest = engine.stores.resolve(&url, p.connection.as_deref())?;
                    let options = ParquetOptions {
                        compression: p.compression,
                        row_group_size: p.row_group_size,
                        max_file_size: p.max_file_size,
                        partition_by: p.partition_by.clone(),
                    };
                    let run_key = format!("{}-{}-{}", job.name, task.id, date_key);
                    let summary = write_dataset(stream, &dest, &run_key, &options, fence).await?;
                    tracing::info!(dag = %job.name, task = %task.id, files = summary.files.len(), rows = summary.rows, dest = %dest.url(), "published");
                    (summary.rows, summary.bytes)
                }
                Load::Sql(l) => {
                    let dialect = crate::db::dialect(&engine.config, &l.connection);
                    let table = ctx.render_sql(&l.table, &key("table"), dialect)?;
                    let delete_where = match &l.mode {
                        LoadMode::DeleteInsert { delete_where } => {
                            Some(ctx.render_sql(delete_where, &key("delete_where"), dialect)?)
                        }
                        _ => None,
                    };
                    let request = crate::db::LoadRequest {
                        spec: l,
                        table: &table,
                        delete_where: delete_where.as_deref(),
                        marker: &marker,
                        fence,
                    };
                    let loaded = crate::db::load(&engine.config, request, stream).await?;
                    let rows = loaded.rows();
                    match loaded {
                        crate::db::Loaded::Now(_) => {
                            tracing::info!(dag = %job.name, task = %task.id, rows, table = %table, "loaded")
                        }
                        crate::db::Loaded::Before(_) => {
                            tracing::warn!(dag = %job.name, task = %task.id, rows, table = %table, "another attempt of this task instance loaded first; this one rolled back")
                        }
                    }
                    crate::faults::pause_at("after_load_commit", &task.id).await;
                    (rows, 0)
                }
            };
            if let (Some(pid), Some(finish)) = (producer, finish) {
                counts.push((pid.to_string(), finish(rows)));
            }
            counts.push((
                task.id.clone(),
                Counts {
                    rows_in: rows,
                    rows_out: rows,
                    bytes,
                    ..Counts::default()
                },
            ));
            Ok((counts, None))
        }
        TaskKind::Check(check) => {
            let sql = ctx.render_sql(&check.sql, &key("check"), Dialect::Standard)?;
            let session = crate::sql::session(&engine.runtime)?;
            let mut rows_in = 0;
            for (name, ds) in inputs {
                crate::sql::register(&session, name, ds).await?;
                rows_in += ds.rows;
            }
            let sql_err = |e| Error::sql(format!("check {}", sql.trim()), e);
            let batches = session
                .sql(&sql)
                .await
                .map_err(sql_err)?
                .collect()
                .await
                .map_err(sql_err)?;
            let value = batches.iter().find(|b| b.num_rows() > 0).and_then(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::BooleanArray>()
                    .map(|a| (a.len(), a.is_valid(0) && a.value(0)))
            });
            match value {
                Some((1, true)) => Ok((
                    vec![(
                        task.id.clone(),
                        Counts {
                            rows_in,
                            ..Counts::default()
                        },
                    )],
                    None,
                )),
                Some((_, true)) => Err(Error::CheckFailed(format!(
                    "query returned more than one row: {}",
                    sql.trim()
                ))),
                Some((_, false)) => Err(Error::CheckFailed(format!(
                    "query returned false: {}",
                    sql.trim()
                ))),
                None => Err(Error::CheckFailed(format!(
                    "query must return one boolean value: {}",
                    sql.trim()
                ))),
            }
        }
        TaskKind::Sensor(sensor) => loop {
            if engine.poke(job, ctx, task).await? {
                return Ok((vec![(task.id.clone(), Counts::default())], None));
            }
            tracing::info!(dag = %job.name, task = %task.id, "sensor waiting");
            tokio::time::sleep(sensor.poke_interval).await;
        },
    }
}

/// Turns the number of rows a consumer took into the producer's counts.
type Finish = Box<dyn FnOnce(u64) -> Counts + Send>;

/// The output stream of an extract or transform.
async fn produce(
    engine: &Engine,
    job: &Job,
    ctx: &RunContext,
    task: &Task,
    inputs: &HashMap<String, StagedDataset>,
) -> Result<(SendableRecordBatchStream, Finish)> {
    let key = |k: &str| format!("{}: tasks.{}.{k}", job.file.display(), task.id);
    match &task.kind {
        TaskKind::Extract(Extract::Logs(spec)) => {
            let path = ctx.render(&spec.path, &key("path"))?;
            let dead_letter = (spec.on_error == OnError::DeadLetter)
                .then(|| engine.dead_letter_dir(&job.name, &task.id, ctx));
            let source = LogsSource::open(spec, &path, &engine.stores, dead_letter).await?;
            let stats = source.stats();
            let stream = source.into_stream();
            let finish: Finish = Box::new(move |rows| Counts {
                rows_in: stats.get(&stats.records),
                rows_out: rows,
                bad: stats.get(&stats.bad),
                ..Counts::default()
            });
            Ok((stream, finish))
        }
        TaskKind::Extract(Extract::Sql(spec)) => {
            let dialect = crate::db::dialect(&engine.config, &spec.connection);
            let query = ctx.render_sql(&spec.query, &key("query"), dialect)?;
            let mark = match (&spec.incremental, &engine.marks) {
                (None, _) => None,
                (Some(_), None) => {
                    return Err(Error::Config(format!(
                        "{}: incremental extraction keeps its mark in the state store, which this run has not opened",
                        key("incremental")
                    )));
                }
                (Some(_), Some(source)) => source
                    .mark(&job.name, &task.id)
                    .await
                    .map_err(|e| Error::Internal(format!("reading the watermark: {e}")))?
                    .map(|text| crate::db::Mark::parse(&text))
                    .transpose()?,
            };
            let (stream, tracker) = crate::db::extract(&engine.config, spec, &query, mark).await?;
            let incremental = spec.incremental.is_some();
            let finish: Finish = Box::new(move |rows| Counts {
                rows_in: rows,
                rows_out: rows,
                watermark: incremental.then(|| tracker.next(mark)).flatten(),
                ..Counts::default()
            });
            Ok((stream, finish))
        }
        TaskKind::Transform(t) => {
            let sql = ctx.render_sql(&t.sql, &key("transform"), Dialect::Standard)?;
            let session = crate::sql::session(&engine.runtime)?;
            let mut rows_in = 0;
            for (name, ds) in inputs {
                crate::sql::register(&session, name, ds).await?;
                rows_in += ds.rows;
            }
            let context = format!("{}: tasks.{}.transform", job.file.display(), task.id);
            let df = session
                .sql(&sql)
                .await
                .map_err(|e| Error::sql(context.clone(), e))?;
            let stream = df
                .execute_stream()
                .await
                .map_err(|e| Error::sql(context, e))?;
            let finish: Finish = Box::new(move |rows| Counts {
                rows_in,
                rows_out: rows,
                ..Counts::default()
            });
            Ok((stream, finish))
        }
        _ => Err(Error::Internal(format!(
            "task {} produces no stream",
            task.id
        ))),
    }
}
