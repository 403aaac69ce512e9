//! Publishing that heals: an object store that fails (or panics, as a
//! crash would stop the process) at each call of each kind in turn during
//! a write that replaces an earlier output. After the failure, a retry
//! must leave exactly the new output in the destination, once, with no
//! old file and no temporary file left beside it.

use super::{ParquetOptions, write_dataset};
use crate::fence::{Fence, Sole};
use crate::store::Location;
use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Call {
    Put,
    Multipart,
    Get,
    List,
    Rename,
    Copy,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Fail,
    Panic,
}

#[derive(Debug, Default)]
struct Faults {
    calls: HashMap<Call, usize>,
    /// The call (its kind and number, from 0) that goes wrong, and how.
    at: Option<(Call, usize, Mode)>,
}

/// A local store whose calls can be made to fail one at a time.
#[derive(Debug)]
struct FaultyStore {
    inner: LocalFileSystem,
    faults: Arc<Mutex<Faults>>,
}

impl std::fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultyStore")
    }
}

fn check(faults: &Mutex<Faults>, call: Call) -> object_store::Result<()> {
    let mut f = faults.lock().unwrap();
    let n = f.calls.entry(call).or_default();
    let this = *n;
    *n += 1;
    match f.at {
        Some((c, k, mode)) if c == call && k == this => {
            drop(f);
            if mode == Mode::Panic {
                panic!("injected crash at {call:?} #{this}");
            }
            Err(object_store::Error::Generic {
                store: "FaultyStore",
                source: format!("injected failure at {call:?} #{this}").into(),
            })
        }
        _ => Ok(()),
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        check(&self.faults, Call::Put)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        check(&self.faults, Call::Multipart)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        check(&self.faults, Call::Get)?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let faults = self.faults.clone();
        let checked = locations
            .map(move |p| {
                check(&faults, Call::Delete)?;
                p
            })
            .boxed();
        self.inner.delete_stream(checked)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if let Err(e) = check(&self.faults, Call::List) {
            return futures::stream::once(async { Err(e) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        check(&self.faults, Call::List)?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        check(&self.faults, Call::Copy)?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        check(&self.faults, Call::Rename)?;
        self.inner.rename_opts(from, to, options).await
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("dt", DataType::Utf8, false),
    ]))
}

/// Rows `ids`, each in partition `dt=<day>` by `day_of`.
fn batch(ids: std::ops::Range<i64>, day_of: impl Fn(i64) -> &'static str) -> RecordBatch {
    let days: Vec<&str> = ids.clone().map(&day_of).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(ids)),
            Arc::new(StringArray::from(days)),
        ],
    )
    .unwrap()
}

/// The earlier output: three partitions. The new one: two, one of them
/// new and one shared, with other rows (and so other files) in it.
fn old_rows() -> RecordBatch {
    batch(0..30, |i| ["a", "b", "c"][(i % 3) as usize])
}

fn new_rows() -> RecordBatch {
    batch(100..120, |i| if i % 2 == 0 { "b" } else { "d" })
}

fn options() -> ParquetOptions {
    // Small row groups and files: several files per folder.
    ParquetOptions {
        row_group_size: 4,
        max_file_size: 1,
        partition_by: vec!["dt".into()],
        ..ParquetOptions::default()
    }
}

async fn write(dest: &Location, rows: RecordBatch) -> crate::Result<()> {
    let stream = Box::pin(RecordBatchStreamAdapter::new(
        schema(),
        futures::stream::iter(vec![Ok(rows)]),
    ));
    write_dataset(stream, dest, "job-task-20261124", &options(), &Sole)
        .await
        .map(|_| ())
}

fn location(dir: &std::path::Path, faults: Arc<Mutex<Faults>>) -> Location {
    Location {
        store: Arc::new(FaultyStore {
            inner: LocalFileSystem::new(),
            faults,
        }),
        path: Path::from_absolute_path(dir.join("out")).unwrap(),
        store_url: url::Url::parse("file:///").unwrap(),
    }
}

/// Every file under `dir`, relative to it.
fn files(dir: &std::path::Path) -> Vec<String> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The (id, dt) rows a reader of the destination sees: every
/// `*.parquet` file not hidden, its `dt` from its folder.
fn visible_rows(dir: &std::path::Path) -> Vec<(i64, String)> {
    let mut rows = Vec::new();
    for f in files(dir) {
        let name = f.rsplit('/').next().unwrap();
        if !name.ends_with(".parquet") || name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let dt = f
            .split('/')
            .next()
            .unwrap()
            .trim_start_matches("dt=")
            .to_string();
        let file = std::fs::File::open(dir.join(&f)).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            let b = b.unwrap();
            let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            rows.extend(ids.values().iter().map(|i| (*i, dt.clone())));
        }
    }
    rows.sort();
    rows
}

fn expected(rows: &RecordBatch) -> Vec<(i64, String)> {
    let ids = rows
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    let days = rows
        .column(1)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let mut v: Vec<(i64, String)> = (0..rows.num_rows())
        .map(|i| (ids.value(i), days.value(i).to_string()))
        .collect();
    v.sort();
    v
}

/// A fence that says the claim was lost.
struct Lost;

impl Fence for Lost {
    fn check(&self) -> futures::future::BoxFuture<'_, crate::Result<()>> {
        Box::pin(async { Err(crate::Error::Fenced("the claim was taken".into())) })
    }
}

#[tokio::test]
async fn an_attempt_that_lost_its_claim_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dest = location(dir.path(), Arc::new(Mutex::new(Faults::default())));
    write(&dest, old_rows()).await.unwrap();
    let before = files(dir.path());
    let stream = Box::pin(RecordBatchStreamAdapter::new(
        schema(),
        futures::stream::iter(vec![Ok(new_rows())]),
    ));
    let err = write_dataset(stream, &dest, "job-task-20261124", &options(), &Lost)
        .await
        .unwrap_err();
    assert!(matches!(err, crate::Error::Fenced(_)), "{err}");
    // The output the current attempt published stays, and this attempt's
    // temporary files are gone.
    assert_eq!(files(dir.path()), before);
    assert_eq!(visible_rows(&dir.path().join("out")), expected(&old_rows()));
}

#[tokio::test]
async fn every_failed_publish_step_is_healed_by_the_retry() {
    // A healthy replacement, to count the calls each step makes.
    let counting = Arc::new(Mutex::new(Faults::default()));
    let dir = tempfile::tempdir().unwrap();
    write(
        &location(dir.path(), Arc::new(Mutex::new(Faults::default()))),
        old_rows(),
    )
    .await
    .unwrap();
    write(&location(dir.path(), counting.clone()), new_rows())
        .await
        .unwrap();
    let calls = counting.lock().unwrap().calls.clone();
    for call in [Call::Put, Call::Rename, Call::Delete, Call::List, Call::Get] {
        assert!(
            calls.get(&call).is_some_and(|n| *n > 0),
            "no {call:?} in {calls:?}"
        );
    }
    let out = dir.path().join("out");
    assert_eq!(visible_rows(&out), expected(&new_rows()));

    let mut cases = 0;
    for (&call, &n) in &calls {
        for k in 0..n {
            for mode in [Mode::Fail, Mode::Panic] {
                let dir = tempfile::tempdir().unwrap();
                let out = dir.path().join("out");
                let healthy = || location(dir.path(), Arc::new(Mutex::new(Faults::default())));
                write(&healthy(), old_rows()).await.unwrap();
                let faults = Arc::new(Mutex::new(Faults {
                    at: Some((call, k, mode)),
                    ..Faults::default()
                }));
                let attempt =
                    std::panic::AssertUnwindSafe(write(&location(dir.path(), faults), new_rows()))
                        .catch_unwind()
                        .await;
                let failed = !matches!(attempt, Ok(Ok(())));
                assert!(failed, "{call:?} #{k} {mode:?}: the write must fail");
                // Whatever is visible now is a mix of whole old and new
                // files, never a file of neither.
                let old = expected(&old_rows());
                let new = expected(&new_rows());
                for row in visible_rows(&out) {
                    assert!(
                        old.contains(&row) || new.contains(&row),
                        "{call:?} #{k}: {row:?}"
                    );
                }
                // The retry heals it into exactly the new output, once.
                write(&healthy(), new_rows()).await.unwrap();
                assert_eq!(
                    visible_rows(&out),
                    new,
                    "{call:?} #{k} {mode:?}: {:?}",
                    files(&out)
                );
                let left: Vec<String> = files(&out)
                    .into_iter()
                    .filter(|f| f.contains(".sluice-tmp-"))
                    .collect();
                assert!(
                    left.is_empty(),
                    "{call:?} #{k} {mode:?}: temporary files left: {left:?}"
                );
                let manifest: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(out.join("_sluice/job-task-20261124.json")).unwrap(),
                )
                .unwrap();
                let mut listed: Vec<String> = manifest["files"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap().to_string())
                    .collect();
                listed.sort();
                let published: Vec<String> = files(&out)
                    .into_iter()
                    .filter(|f| f.ends_with(".parquet"))
                    .collect();
                assert_eq!(listed, published, "{call:?} #{k} {mode:?}");
                cases += 1;
            }
        }
    }
    assert!(cases >= 20, "only {cases} cases");
}

#[tokio::test]
async fn a_publish_lists_only_its_own_folders() {
    // Another run's partitions beside ours are never listed: a destination
    // with years of dates costs a publish nothing.
    let faults = Arc::new(Mutex::new(Faults::default()));
    let dir = tempfile::tempdir().unwrap();
    for day in ["x1", "x2", "x3", "x4"] {
        std::fs::create_dir_all(dir.path().join("out").join(format!("dt={day}"))).unwrap();
    }
    write(&location(dir.path(), faults.clone()), new_rows())
        .await
        .unwrap();
    let lists = faults
        .lock()
        .unwrap()
        .calls
        .get(&Call::List)
        .copied()
        .unwrap_or(0);
    assert_eq!(lists, 2, "one listing per folder written (dt=b, dt=d)");
}

#[tokio::test]
async fn partitions_past_the_bound_do_not_stay_open() {
    // 1,000 partitions in one stream, in order of their values, as
    // time-partitioned data comes: at most MAX_OPEN_FILES are open at
    // once, every row is written once, and each partition gets one file.
    let dir = tempfile::tempdir().unwrap();
    let dest = Location {
        store: Arc::new(LocalFileSystem::new()),
        path: Path::from_absolute_path(dir.path().join("out")).unwrap(),
        store_url: url::Url::parse("file:///").unwrap(),
    };
    let days: Vec<&'static str> = (0..1000)
        .map(|i| &*Box::leak(format!("p{i:04}").into_boxed_str()))
        .collect();
    let batches: Vec<_> = (0..10)
        .map(|b| {
            Ok(batch(b * 10_000..(b + 1) * 10_000, |i| {
                days[(i / 100) as usize]
            }))
        })
        .collect();
    let stream = Box::pin(RecordBatchStreamAdapter::new(
        schema(),
        futures::stream::iter(batches),
    ));
    let options = ParquetOptions {
        partition_by: vec!["dt".into()],
        ..ParquetOptions::default()
    };
    let summary = write_dataset(stream, &dest, "job-task-20261124", &options, &Sole)
        .await
        .unwrap();
    assert_eq!(summary.rows, 100_000);
    assert!(
        summary.peak_open <= super::parquet::MAX_OPEN_FILES,
        "{} files open at once",
        summary.peak_open
    );
    let written = files(&dir.path().join("out"));
    let parquet = written.iter().filter(|f| f.ends_with(".parquet")).count();
    assert_eq!(parquet, 1000, "one file per partition");
}
