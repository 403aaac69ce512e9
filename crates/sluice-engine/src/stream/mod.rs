//! Stream jobs: a `logs` extract followed as files grow and rotate, an
//! optional chain of SQL transforms applied to each micro-batch, and a
//! Parquet load that rolls files by size and by age.
//!
//! Exactly once: a segment's files are finished under hidden names, then
//! one checkpoint, written in one transaction of the state store, records
//! both where each input file stands and the final names of the files
//! that cover it; the renames follow, and a start finishes whatever
//! renames the last checkpoint names (see [`segment`]). A failure while
//! writing a segment (the object store refusing an upload, say) drops the
//! segment and reads its lines again from the last checkpoint, after a
//! back-off: reading pauses while the store fails, and nothing is lost or
//! written twice.

pub mod segment;
#[cfg(test)]
mod stream_tests;
pub mod tail;
#[cfg(test)]
mod tail_tests;

use crate::error::{Error, Result};
use crate::logs::{BadRecord, Chunk, DeadLetter, Parser};
use crate::runner::Engine;
use crate::sink::parquet::ParquetOptions;
use crate::store::Location;
use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use futures::future::BoxFuture;
use object_store::ObjectStoreExt;
use segment::{Pending, Segment};
use serde::{Deserialize, Serialize};
use sluice_core::config::{Extract, Job, Load, LogsExtract, OnError, ParquetLoad, TaskKind};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tail::{Cursor, Fingerprint, Tailer};

/// What a stream commits: where each input file stands, and the files
/// the commit makes visible (renamed into place right after it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub cursors: BTreeMap<Fingerprint, Cursor>,
    pub pending: Vec<Pending>,
    /// When it was committed, Unix milliseconds (0 in a checkpoint
    /// written before this was kept).
    #[serde(default)]
    pub committed_at_ms: u64,
}

/// Where a stream keeps its checkpoint: the daemon's state store.
pub trait Checkpoints: Send + Sync {
    /// The last checkpoint committed, if any.
    fn load(&self) -> BoxFuture<'_, Result<Option<Checkpoint>>>;
    /// Replaces the checkpoint, in one transaction. Fails with
    /// [`Error::Fenced`] when this process no longer owns the stream.
    fn commit<'a>(&'a self, checkpoint: &'a Checkpoint) -> BoxFuture<'a, Result<()>>;
}

/// What a running stream has done, for metrics and `sluice streams`.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub lines: AtomicU64,
    pub bytes_read: AtomicU64,
    pub rows: AtomicU64,
    pub bad: AtomicU64,
    pub files_rolled: AtomicU64,
    pub bytes_rolled: AtomicU64,
    pub commits: AtomicU64,
    /// Unix milliseconds of the last commit.
    pub committed_at_ms: AtomicU64,
    /// Input files deleted before they were read to their end.
    pub vanished: AtomicU64,
    /// Write failures that made the stream back off and read again.
    pub retries: AtomicU64,
    /// Seconds from reading a segment's first line to its files being
    /// visible, of each commit (the daemon's histogram drains it).
    pub latencies: std::sync::Mutex<Vec<f64>>,
    /// Bytes not yet read, per input file (by path).
    pub lag: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl StreamStats {
    fn add(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// The stream knobs with their defaults.
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 128 << 20;
pub const DEFAULT_MAX_FILE_AGE: Duration = Duration::from_secs(300);
pub const DEFAULT_MAX_BUFFER_BYTES: u64 = 64 << 20;
/// How often a stream with nothing new looks at its files again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A stream job's tasks, in the one shape a stream has: a logs extract,
/// SQL transforms in a chain, a Parquet load.
struct Plan<'a> {
    extract_id: &'a str,
    logs: &'a LogsExtract,
    transforms: Vec<(&'a str, &'a str)>,
    load_id: &'a str,
    load: &'a ParquetLoad,
}

impl<'a> Plan<'a> {
    fn of(job: &'a Job) -> Result<Plan<'a>> {
        let mut extract = None;
        let mut transforms = Vec::new();
        let mut load = None;
        for id in &job.dag.order {
            let task = job.task(id).expect("the DAG's tasks are the job's");
            match &task.kind {
                TaskKind::Extract(Extract::Logs(l)) => extract = Some((task.id.as_str(), l)),
                TaskKind::Transform(t) => transforms.push((task.id.as_str(), t.sql.as_str())),
                TaskKind::Load(Load::Parquet(p)) => load = Some((task.id.as_str(), p)),
                _ => {
                    return Err(Error::Config(format!(
                        "task {id}: a stream job has a logs extract, SQL transforms and one Parquet load"
                    )));
                }
            }
        }
        let (Some((extract_id, logs)), Some((load_id, load))) = (extract, load) else {
            return Err(Error::Config(
                "a stream job needs a logs extract and a Parquet load".into(),
            ));
        };
        Ok(Plan {
            extract_id,
            logs,
            transforms,
            load_id,
            load,
        })
    }
}

/// Runs stream `job` until `stop` turns true: then what was read is
/// committed and published, and it returns. Fails on what a retry cannot
/// fix (a bad record with `on_error = "fail"`, a SQL error, losing the
/// stream to another replica); object store and state store failures are
/// retried with back-off.
pub async fn run(
    engine: &Engine,
    job: &Job,
    checkpoints: Arc<dyn Checkpoints>,
    stats: Arc<StreamStats>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let plan = Plan::of(job)?;
    let dest = engine
        .stores
        .resolve(&plan.load.url, plan.load.connection.as_deref())?;
    run_at(engine, job, dest, checkpoints, stats, stop).await
}

/// [`run`], writing to `dest` (tests give it a store that fails).
pub(crate) async fn run_at(
    engine: &Engine,
    job: &Job,
    dest: Location,
    checkpoints: Arc<dyn Checkpoints>,
    stats: Arc<StreamStats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let plan = Plan::of(job)?;
    let parser = crate::logs::stream_parser(plan.logs)?;
    let session = crate::sql::session(&engine.runtime())?;
    let out_schema = output_schema(&session, &plan, parser.schema()).await?;
    let options = ParquetOptions {
        compression: plan.load.compression,
        row_group_size: plan.load.row_group_size,
        max_file_size: u64::MAX,
        partition_by: plan.load.partition_by.clone(),
    };
    let target = plan
        .load
        .target_file_size
        .unwrap_or(DEFAULT_TARGET_FILE_SIZE);
    let max_age = plan.load.max_file_age.unwrap_or(DEFAULT_MAX_FILE_AGE);
    // What one pass reads: a quarter of the buffer, and small beside the
    // target size, so that a file rolls close to it (the size is looked
    // at between passes).
    let budget = (plan
        .logs
        .max_buffer_bytes
        .unwrap_or(DEFAULT_MAX_BUFFER_BYTES)
        / 4)
    .min(target / 16)
    .clamp(16 << 10, 16 << 20) as usize;
    let dead_letter = (plan.logs.on_error == OnError::DeadLetter).then(|| {
        engine
            .dead_letter_root()
            .child(&job.name)
            .child(plan.extract_id)
            .child("stream")
    });

    // Finish the last commit's renames, then drop what no commit names.
    let mut committed = loop {
        match recover(&*checkpoints, &dest).await {
            Ok(cp) => {
                // The checkpoint's age is the stream's, whichever process
                // committed it.
                stats
                    .committed_at_ms
                    .store(cp.committed_at_ms, Ordering::Relaxed);
                break cp.cursors;
            }
            Err(e) if e.kind().is_retryable() && !e.is_fenced() => {
                tracing::warn!(job = %job.name, error = %e, "stream recovery failed; retrying");
                if sleep_or_stop(&mut stop, Duration::from_secs(1)).await {
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
    };
    let mut tailer = Some(Tailer::new(
        &plan.logs.path,
        committed.clone(),
        plan.logs.max_line_bytes,
    )?);
    let mut backoff = Duration::from_millis(100);
    let ctx = Ctx {
        job,
        plan: &plan,
        parser: &parser,
        session: &session,
        dest: &dest,
        options: &options,
        out_schema: &out_schema,
        stats: &stats,
        dead_letter: dead_letter.as_ref(),
    };
    loop {
        let stopping = *stop.borrow();
        let result = ctx
            .segment_pass(
                &mut tailer,
                &*checkpoints,
                &mut committed,
                target,
                max_age,
                budget,
                &mut stop,
            )
            .await;
        match result {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) if e.kind().is_retryable() && !e.is_fenced() => {
                stats.add(&stats.retries, 1);
                tracing::warn!(
                    job = %job.name, error = %e, retry_in = ?backoff,
                    "stream write failed; reading again from the last checkpoint"
                );
                if let Some(t) = tailer.as_mut() {
                    t.rewind(committed.clone());
                }
                // Stopped while backing off: what was not committed is
                // read again at the next start.
                if sleep_or_stop(&mut stop, backoff).await {
                    return Ok(());
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(e) => return Err(e),
        }
        if stopping {
            return Ok(());
        }
    }
}

/// Publishes what the last checkpoint names and removes hidden files no
/// checkpoint names; the last checkpoint.
async fn recover(checkpoints: &dyn Checkpoints, dest: &Location) -> Result<Checkpoint> {
    let cp = checkpoints.load().await?.unwrap_or_default();
    segment::publish(dest, &cp.pending).await?;
    let removed = segment::remove_orphans(dest, &[]).await?;
    if removed > 0 {
        tracing::info!(dest = %dest.url(), removed, "removed files of uncommitted segments");
    }
    Ok(cp)
}

/// Sleeps `d`, or less if `stop` turns true; whether it did.
async fn sleep_or_stop(stop: &mut tokio::sync::watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

struct Ctx<'a> {
    job: &'a Job,
    plan: &'a Plan<'a>,
    parser: &'a Arc<dyn Parser>,
    session: &'a SessionContext,
    dest: &'a Location,
    options: &'a ParquetOptions,
    out_schema: &'a SchemaRef,
    stats: &'a StreamStats,
    dead_letter: Option<&'a Location>,
}

impl Ctx<'_> {
    /// Reads, transforms and writes one segment, then commits and
    /// publishes it: when it is big enough, old enough, or `stop` turns
    /// true.
    #[allow(clippy::too_many_arguments)]
    async fn segment_pass(
        &self,
        tailer: &mut Option<Tailer>,
        checkpoints: &dyn Checkpoints,
        committed: &mut BTreeMap<Fingerprint, Cursor>,
        target: u64,
        max_age: Duration,
        budget: usize,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<()> {
        let mut segment = Segment::new(self.dest.clone(), self.out_schema, self.options)?;
        let mut bad: Vec<BadRecord> = Vec::new();
        let mut first_read: Option<Instant> = None;
        let result: Result<()> = async {
            loop {
                let stopping = *stop.borrow();
                let old = segment.started().is_some_and(|t| t.elapsed() >= max_age);
                if stopping || old || segment.largest() >= target {
                    return Ok(());
                }
                let mut t = tailer.take().expect("the tailer is put back");
                let (t, poll) = tokio::task::spawn_blocking(move || {
                    let poll = t.poll(budget);
                    (t, poll)
                })
                .await
                .map_err(|e| Error::Internal(format!("stream reader panicked: {e}")))?;
                self.report_lag(&t);
                *tailer = Some(t);
                let poll = poll?;
                for (fp, cursor) in &poll.vanished {
                    self.stats.add(&self.stats.vanished, 1);
                    tracing::warn!(
                        job = %self.job.name, file = %cursor.path.display(), fingerprint = %fp,
                        unread_bytes = cursor.size.saturating_sub(cursor.offset),
                        "input file deleted before it was read to its end"
                    );
                }
                if poll.reads.is_empty() {
                    let wait = match segment.started() {
                        Some(t) => max_age.saturating_sub(t.elapsed()).min(POLL_INTERVAL),
                        None => POLL_INTERVAL,
                    };
                    sleep_or_stop(stop, wait).await;
                    continue;
                }
                first_read.get_or_insert_with(Instant::now);
                for read in poll.reads {
                    self.stats
                        .add(&self.stats.bytes_read, read.data.len() as u64);
                    let chunk = Chunk {
                        file: read.path.display().to_string().into(),
                        first_line: read.first_line,
                        data: read.data,
                    };
                    // Parsing is CPU work: off the async threads.
                    let parser = self.parser.clone();
                    let parsed = tokio::task::spawn_blocking(move || parser.parse(&chunk))
                        .await
                        .map_err(|e| Error::Internal(format!("stream parser panicked: {e}")))??;
                    self.stats.add(&self.stats.lines, parsed.records);
                    if let Some(first) = parsed.bad.first() {
                        if self.plan.logs.on_error == OnError::Fail {
                            return Err(Error::BadRecord {
                                file: first.file.to_string(),
                                line: first.line,
                                message: first.error.clone(),
                            });
                        }
                        self.stats.add(&self.stats.bad, parsed.bad.len() as u64);
                        if self.dead_letter.is_some() {
                            bad.extend(parsed.bad);
                        }
                    }
                    for batch in parsed.batches {
                        let out = self.transform(batch).await?;
                        for b in out {
                            self.stats.add(&self.stats.rows, b.num_rows() as u64);
                            segment.write(b).await?;
                        }
                    }
                    segment.covers(read.file, read.start, read.end);
                }
            }
        }
        .await;
        if let Err(e) = result {
            segment.abort().await;
            return Err(e);
        }
        let changed = tailer.as_ref().expect("put back").cursors() != committed;
        if segment.is_empty() && !changed {
            return Ok(());
        }
        let rows = segment.rows();
        let pending = segment.finish().await?;
        if let (Some(dl), false) = (self.dead_letter, bad.is_empty()) {
            self.write_dead_letters(dl, &pending, &bad).await?;
        }
        let cp = Checkpoint {
            cursors: tailer.as_ref().expect("put back").cursors().clone(),
            pending,
            committed_at_ms: chrono::Utc::now().timestamp_millis().max(0) as u64,
        };
        self.commit(checkpoints, &cp).await?;
        *committed = cp.cursors.clone();
        // Committed: from here on a failure must not read these lines
        // again. The renames are retried until they are done (a start
        // would finish them too).
        let mut wait = Duration::from_millis(100);
        while let Err(e) = segment::publish(self.dest, &cp.pending).await {
            tracing::warn!(job = %self.job.name, error = %e, "publishing a committed segment failed; retrying");
            if sleep_or_stop(stop, wait).await {
                return Ok(());
            }
            wait = (wait * 2).min(MAX_BACKOFF);
        }
        let s = self.stats;
        s.add(&s.commits, 1);
        s.add(&s.files_rolled, cp.pending.len() as u64);
        s.add(&s.bytes_rolled, cp.pending.iter().map(|p| p.bytes).sum());
        s.committed_at_ms
            .store(cp.committed_at_ms, Ordering::Relaxed);
        if let Some(t) = first_read {
            s.latencies
                .lock()
                .expect("not poisoned")
                .push(t.elapsed().as_secs_f64());
        }
        tracing::debug!(job = %self.job.name, rows, files = cp.pending.len(), "stream segment committed");
        Ok(())
    }

    /// Commits `cp`. When the store's answer is lost (the connection
    /// dropped), the checkpoint read back tells whether it went in: the
    /// hidden files it names must then not be taken for orphans.
    async fn commit(&self, checkpoints: &dyn Checkpoints, cp: &Checkpoint) -> Result<()> {
        match checkpoints.commit(cp).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_fenced() => {
                // The stream is another replica's now: this segment's
                // files go (its lines are the new owner's to read).
                for p in &cp.pending {
                    let _ = self
                        .dest
                        .store
                        .delete(&object_store::path::Path::from(p.tmp.as_str()))
                        .await;
                }
                Err(e)
            }
            Err(e) => match checkpoints.load().await {
                Ok(Some(stored)) if stored == *cp => Ok(()),
                _ => {
                    let _ = segment::remove_orphans(self.dest, &[]).await;
                    Err(e)
                }
            },
        }
    }

    async fn write_dead_letters(
        &self,
        dl: &Location,
        pending: &[Pending],
        bad: &[BadRecord],
    ) -> Result<()> {
        // Named like the segment, so a segment read again replaces them.
        let name = pending
            .first()
            .and_then(|p| p.to.rsplit('/').next())
            .map_or_else(
                || format!("{}.jsonl", uuid::Uuid::new_v4().simple()),
                |n| n.replace(".parquet", ".jsonl"),
            );
        let mut writer = DeadLetter::create(dl.child(&name));
        writer.write(bad).await?;
        writer.finish().await
    }

    /// Runs the transforms over one batch; with no transform, the batch.
    async fn transform(&self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let mut batches = vec![batch];
        let mut name = self.plan.extract_id;
        for (id, sql) in &self.plan.transforms {
            let table = MemTable::try_new(batches[0].schema(), vec![batches])?;
            let _ = self.session.deregister_table(name);
            self.session
                .register_table(name, Arc::new(table))
                .map_err(|e| Error::sql(format!("tasks.{name}"), e))?;
            let context = format!("{}: tasks.{id}.transform", self.job.file.display());
            batches = self
                .session
                .sql(sql)
                .await
                .map_err(|e| Error::sql(context.clone(), e))?
                .collect()
                .await
                .map_err(|e| Error::sql(context, e))?;
            name = id;
            if batches.is_empty() {
                return Ok(Vec::new());
            }
        }
        batches
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| derive_partitions(b, self.out_schema))
            .collect()
    }

    fn report_lag(&self, tailer: &Tailer) {
        let mut lag = self.stats.lag.lock().expect("not poisoned");
        lag.clear();
        for (_, cursor, behind) in tailer.lag() {
            lag.insert(cursor.path.display().to_string(), behind);
        }
    }
}

/// The schema of what the load writes: the last transform's (or the
/// extract's), with the partition columns derived from the event time.
async fn output_schema(
    session: &SessionContext,
    plan: &Plan<'_>,
    input: SchemaRef,
) -> Result<SchemaRef> {
    let mut schema = input;
    let mut name = plan.extract_id;
    for (id, sql) in &plan.transforms {
        let table = MemTable::try_new(schema.clone(), vec![vec![]])?;
        let _ = session.deregister_table(name);
        session
            .register_table(name, Arc::new(table))
            .map_err(|e| Error::sql(format!("tasks.{name}"), e))?;
        let df = session
            .sql(sql)
            .await
            .map_err(|e| Error::sql(format!("tasks.{id}.transform"), e))?;
        schema = Arc::new(df.schema().as_arrow().clone());
        name = id;
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for column in &plan.load.partition_by {
        if schema.field_with_name(column).is_ok() {
            continue;
        }
        if !derives(column, &schema) {
            return Err(Error::Config(format!(
                "tasks.{}.partition_by: column \"{column}\" is not in the data, and only dt and hour are derived (from a timestamp column); columns: {}",
                plan.load_id,
                crate::schema::column_names(&schema)
            )));
        }
        fields.push(Field::new(column, DataType::Utf8, true));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Whether a stream derives partition column `name` from a timestamp
/// column of `schema` (`dt` or `date`: `YYYY-MM-DD`, `hour`: `HH`, in UTC).
pub fn derives(name: &str, schema: &Schema) -> bool {
    DerivedPart::of(name).is_some() && event_time(schema).is_some()
}

/// A partition column made from the event time.
#[derive(Clone, Copy)]
enum DerivedPart {
    /// `YYYY-MM-DD`
    Date,
    /// `HH`
    Hour,
}

impl DerivedPart {
    fn of(name: &str) -> Option<DerivedPart> {
        match name {
            "dt" | "date" => Some(DerivedPart::Date),
            "hour" => Some(DerivedPart::Hour),
            _ => None,
        }
    }
}

/// The event time: the first timestamp column.
fn event_time(schema: &Schema) -> Option<usize> {
    schema
        .fields()
        .iter()
        .position(|f| matches!(f.data_type(), DataType::Timestamp(..)))
}

/// Adds the derived partition columns `schema` has and `batch` lacks.
fn derive_partitions(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.num_columns() == schema.fields().len() {
        return Ok(batch);
    }
    let time = event_time(&batch.schema()).expect("checked by output_schema");
    let micros = arrow::compute::cast(
        batch.column(time),
        &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
    )?;
    let micros = micros
        .as_any()
        .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
        .expect("cast to microseconds");
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for field in &schema.fields()[batch.num_columns()..] {
        let part = DerivedPart::of(field.name()).expect("checked by output_schema");
        let mut out = arrow::array::StringBuilder::with_capacity(micros.len(), micros.len() * 10);
        // Lines come in time order, mostly within one hour: the text of
        // the last hour is reused.
        let mut last: Option<(i64, String)> = None;
        for i in 0..micros.len() {
            if micros.is_null(i) {
                out.append_null();
                continue;
            }
            let hour = micros.value(i).div_euclid(3_600_000_000);
            match &last {
                Some((h, text)) if *h == hour => out.append_value(text),
                _ => match chrono::DateTime::from_timestamp_micros(micros.value(i)) {
                    Some(t) => {
                        let text = match part {
                            DerivedPart::Date => t.format("%Y-%m-%d").to_string(),
                            DerivedPart::Hour => t.format("%H").to_string(),
                        };
                        out.append_value(&text);
                        last = Some((hour, text));
                    }
                    None => out.append_null(),
                },
            }
        }
        columns.push(Arc::new(out.finish()));
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
