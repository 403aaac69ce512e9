//! A stream job end to end in one process: files followed, transformed,
//! rolled into partitions, each line published once across stops, and a
//! failing object store only delays it.

use super::{Checkpoint, Checkpoints, StreamStats};
use crate::error::Result;
use crate::runner::Engine;
use arrow::array::{Array, Int64Array};
use futures::future::BoxFuture;
use sluice_core::config::{DaemonConfig, Job, parse_job};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The state store's part, in memory: one checkpoint, replaced whole.
#[derive(Default)]
struct Memory(Mutex<Option<Checkpoint>>);

impl Checkpoints for Memory {
    fn load(&self) -> BoxFuture<'_, Result<Option<Checkpoint>>> {
        Box::pin(async { Ok(self.0.lock().unwrap().clone()) })
    }
    fn commit<'a>(&'a self, cp: &'a Checkpoint) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            *self.0.lock().unwrap() = Some(cp.clone());
            Ok(())
        })
    }
}

fn engine(dir: &Path) -> Engine {
    let d = dir.display();
    let config = DaemonConfig::parse(
        &format!("staging = \"file://{d}/staging\"\ndead_letter = \"file://{d}/dead\"\n"),
        Path::new("sluice.toml"),
        &|_| None,
    )
    .unwrap();
    Engine::new(config).unwrap()
}

fn job(dir: &Path, extra_load: &str) -> Job {
    let d = dir.display();
    let text = format!(
        r#"
mode = "stream"
[tasks.lines]
extract = "logs"
path = "{d}/in/app.log*"
format = "jsonl"
schema = {{ n = "int64", ts = "timestamp", msg = "string" }}
on_error = "skip"
[tasks.kept]
transform = "SELECT n, ts, upper(msg) AS msg FROM lines WHERE n % 10 <> 7"
[tasks.lake]
load = "parquet"
input = "kept"
url = "file://{d}/out/"
partition_by = ["dt", "hour"]
{extra_load}
"#
    );
    parse_job(&text, &dir.join("tail.toml"), &|_| None).unwrap()
}

fn append(path: &Path, lines: std::ops::Range<i64>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for n in lines {
        // Ten minutes a line from 2026-12-03T00:00Z: a new hour every
        // six lines.
        let secs = 1_796_256_000 + n * 600;
        let ts = chrono::DateTime::from_timestamp(secs, 0)
            .unwrap()
            .to_rfc3339();
        writeln!(f, r#"{{"n":{n},"ts":"{ts}","msg":"m{n}"}}"#).unwrap();
    }
}

/// Every `n` in the published Parquet files under `out`, and the paths.
fn published(out: &Path) -> (Vec<i64>, Vec<String>) {
    let mut numbers = Vec::new();
    let mut files = Vec::new();
    for entry in walk(out) {
        let name = entry.file_name().unwrap().to_str().unwrap().to_string();
        if !name.ends_with(".parquet") {
            continue;
        }
        files.push(entry.strip_prefix(out).unwrap().display().to_string());
        let file = std::fs::File::open(&entry).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024).unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let n = batch
                .column_by_name("n")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            numbers.extend(n.iter().map(|v| v.unwrap()));
        }
    }
    numbers.sort_unstable();
    (numbers, files)
}

/// Once a stream has stopped, every file it wrote is in place.
fn no_hidden_files(out: &Path) {
    for p in walk(out) {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(
            !name.starts_with(".sluice-stream-"),
            "hidden file left: {name}"
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn expected(range: std::ops::Range<i64>) -> Vec<i64> {
    range.filter(|n| n % 10 != 7).collect()
}

/// Runs the stream until `until` holds of what is published, then stops it.
async fn run_until(
    dir: &Path,
    job: &Job,
    checkpoints: Arc<dyn Checkpoints>,
    until: impl Fn(&[i64]) -> bool,
) -> Arc<StreamStats> {
    let engine = engine(dir);
    let stats = Arc::new(StreamStats::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let run = super::run(&engine, job, checkpoints, stats.clone(), stop);
    let stats = &stats;
    let watch = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if until(&published(&dir.join("out")).0) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stream made no progress: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop_tx.send(true).unwrap();
    };
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => panic!("the stream ended before it was stopped: {result:?}"),
        () = watch => {}
    }
    run.await.unwrap();
    no_hidden_files(&dir.join("out"));
    stats.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_are_published_once_across_stops_and_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("in")).unwrap();
    let log = d.join("in/app.log");
    append(&log, 0..500);
    let job = job(d, "max_file_age = \"200ms\"");
    let store: Arc<dyn Checkpoints> = Arc::new(Memory::default());
    let stats = run_until(d, &job, store.clone(), |n| {
        n.len() >= expected(0..500).len()
    })
    .await;
    // Files roll by age: none waits much longer than max_file_age (200
    // ms) after its first line was read (the slack is for a slow day).
    let latencies = stats.latencies.lock().unwrap().clone();
    assert!(!latencies.is_empty());
    assert!(latencies.iter().all(|s| *s < 5.2), "{latencies:?}");
    let (n, files) = published(&d.join("out"));
    assert_eq!(n, expected(0..500));
    assert!(
        files.iter().all(|f| f.starts_with("dt=2026-12-0")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.starts_with("dt=2026-12-06/")),
        "{files:?}"
    );
    assert!(files.iter().any(|f| f.contains("/hour=23/")), "{files:?}");

    // Rotated while stopped, then written on: read on from the checkpoint.
    std::fs::rename(&log, d.join("in/app.log.1")).unwrap();
    append(&d.join("in/app.log.1"), 500..520);
    append(&log, 520..600);
    // A torn line the writer has not finished is held back.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(br#"{"n":600,"ts":"2026-12-03T"#)
        .unwrap();
    run_until(d, &job, store.clone(), |n| {
        n.len() >= expected(0..600).len()
    })
    .await;
    assert_eq!(published(&d.join("out")).0, expected(0..600));
    let cp = store.load().await.unwrap().unwrap();
    assert!(cp.pending.iter().all(|p| p.rows > 0));
    assert_eq!(cp.cursors.len(), 2, "two files followed: {:?}", cp.cursors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_roll_at_the_target_size() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("in")).unwrap();
    let text = format!(
        r#"
mode = "stream"
[tasks.lines]
extract = "logs"
path = "{}/in/*.log"
format = "jsonl"
schema = {{ n = "int64", pad = "string" }}
[tasks.lake]
load = "parquet"
input = "lines"
url = "file://{}/out/"
compression = "none"
row_group_size = 1000
target_file_size = "256KiB"
max_file_age = "1h"
"#,
        d.display(),
        d.display()
    );
    let job = parse_job(&text, &d.join("sized.toml"), &|_| None).unwrap();
    let mut f = std::fs::File::create(d.join("in/a.log")).unwrap();
    for n in 0..20_000 {
        // Incompressible enough that a file's size follows its rows.
        writeln!(
            f,
            r#"{{"n":{n},"pad":"{:016x}{:016x}"}}"#,
            n * 7919,
            n * 104_729
        )
        .unwrap();
    }
    drop(f);
    let store: Arc<dyn Checkpoints> = Arc::new(Memory::default());
    // Three files roll by size; the stop rolls the rest (the age limit
    // is an hour away).
    run_until(d, &job, store, |n| n.len() >= 15_000).await;
    let out = d.join("out");
    let (n, _) = published(&out);
    assert_eq!(n, (0..20_000).collect::<Vec<_>>());
    let mut sizes: Vec<u64> = walk(&out)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    sizes.sort_unstable();
    assert!(sizes.len() >= 3, "{sizes:?}");
    // All but the last file (the one the stop rolled) within 10% of the
    // target.
    let target = 256 << 10;
    for s in &sizes[1..] {
        assert!(
            (*s as f64 - target as f64).abs() <= target as f64 * 0.1,
            "{s} is not within 10% of {target}: {sizes:?}"
        );
    }
}

/// A local store whose uploads (puts and multipart uploads) fail every
/// third time until `until`.
#[derive(Debug)]
struct Flaky {
    inner: object_store::local::LocalFileSystem,
    uploads: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
    until: std::time::Instant,
}

impl std::fmt::Display for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Flaky")
    }
}

impl Flaky {
    fn upload(&self) -> object_store::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.uploads.fetch_add(1, SeqCst);
        if std::time::Instant::now() < self.until && n % 3 == 2 {
            self.failed.fetch_add(1, SeqCst);
            return Err(object_store::Error::Generic {
                store: "Flaky",
                source: format!("upload #{n} refused").into(),
            });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for Flaky {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.upload()?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.upload()?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// The process's resident memory, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// The object store refuses every third upload for a minute while lines
/// keep coming: the stream backs off and reads again from its checkpoint,
/// nothing is lost or written twice, and memory stays bounded by
/// `max_buffer_bytes` and a fixed overhead however far behind it falls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failing_every_third_upload_loses_and_repeats_nothing() {
    const MB_WRITTEN: i64 = 128;
    const LINES_PER_MB: i64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("in")).unwrap();
    let text = format!(
        r#"
mode = "stream"
[tasks.lines]
extract = "logs"
path = "{0}/in/*.log"
format = "jsonl"
schema = {{ n = "int64", pad = "string" }}
on_error = "fail"
max_buffer_bytes = "4MiB"
[tasks.lake]
load = "parquet"
input = "lines"
url = "file://{0}/out/"
target_file_size = "1MiB"
max_file_age = "500ms"
"#,
        d.display()
    );
    let job = parse_job(&text, &d.join("flaky.toml"), &|_| None).unwrap();
    let engine = engine(d);
    let mut dest = engine
        .stores
        .resolve(&format!("file://{}/out/", d.display()), None)
        .unwrap();
    let flaky = Arc::new(Flaky {
        inner: object_store::local::LocalFileSystem::new(),
        uploads: Default::default(),
        failed: Default::default(),
        until: std::time::Instant::now() + Duration::from_secs(60),
    });
    dest.store = flaky.clone();
    let stats = Arc::new(StreamStats::default());
    let store: Arc<dyn Checkpoints> = Arc::new(Memory::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let baseline = rss();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let run = super::run_at(&engine, &job, dest, store, stats.clone(), stop);
    let out = d.join("out");
    let drive = async {
        // About 100-byte lines, a megabyte at a time, for 40 s.
        let log = d.join("in/app.log");
        for mb in 0..MB_WRITTEN {
            let mut text = String::with_capacity(1 << 20);
            for i in 0..LINES_PER_MB {
                let n = mb * LINES_PER_MB + i;
                text.push_str(&format!(
                    "{{\"n\":{n},\"pad\":\"{:016x}{:016x}{:016x}{:016x}\"}}\n",
                    n * 7919,
                    n * 104_729,
                    n * 1_299_709,
                    n * 15_485_863
                ));
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while published(&out).0.len() < (MB_WRITTEN * LINES_PER_MB) as usize {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not all published: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        stop_tx.send(true).unwrap();
    };
    let sample = async {
        loop {
            peak.fetch_max(rss(), std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => panic!("the stream ended before it was stopped: {result:?}"),
        () = drive => {}
        () = sample => unreachable!(),
    }
    run.await.unwrap();
    let (n, _) = published(&out);
    assert_eq!(n, (0..MB_WRITTEN * LINES_PER_MB).collect::<Vec<_>>());
    no_hidden_files(&out);
    let failed = flaky.failed.load(std::sync::atomic::Ordering::SeqCst);
    let retries = stats.retries.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        failed >= 10 && retries >= 10,
        "failed uploads {failed}, retries {retries}"
    );
    let grew = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(baseline);
    eprintln!(
        "{failed} uploads refused, {retries} retries; memory grew by {} MiB over {MB_WRITTEN} MiB of input",
        grew >> 20
    );
    // max_buffer_bytes, and a fixed overhead: the parser's and the
    // encoder's working space, DataFusion, the allocator's arenas.
    assert!(
        grew < (4 << 20) + (60 << 20),
        "memory grew by {} MiB",
        grew >> 20
    );
}
