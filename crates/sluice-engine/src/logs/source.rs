//! The log source: finds the files, picks the parser, and runs the
//! read → parse (all cores) → route-bad-records pipeline as one record
//! batch stream. Memory is bounded by the number of chunks in flight.

use super::chunks::{Boundary, InputFile, read_chunks};
use super::combined::CombinedParser;
use super::csv::CsvParser;
use super::jsonl::JsonlParser;
use super::regex::RegexParser;
use super::{DeadLetter, Parser};
use crate::error::{Error, Result};
use crate::producers::Producers;
use crate::schema::declared_schema;
use crate::store::{Location, Stores};
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use sluice_core::config::{LogFormat, LogsExtract, OnError};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters a running extract updates, read by the runner and metrics.
#[derive(Debug, Default)]
pub struct ExtractStats {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    /// Records read, good and bad.
    pub records: AtomicU64,
    /// Rows produced.
    pub rows: AtomicU64,
    pub bad: AtomicU64,
}

impl ExtractStats {
    pub fn get(&self, c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

pub struct LogsSource {
    parser: Arc<dyn Parser>,
    files: Vec<InputFile>,
    boundary: Boundary,
    on_error: OnError,
    dead_letter: Option<DeadLetter>,
    stats: Arc<ExtractStats>,
}

impl LogsSource {
    /// Lists the files `path` (already rendered) matches and prepares the
    /// parser. `dead_letter` is the folder bad records go to when the
    /// task's `on_error` is `dead_letter`.
    pub async fn open(
        spec: &LogsExtract,
        path: &str,
        stores: &Stores,
        dead_letter: Option<Location>,
    ) -> Result<Self> {
        let files = list_files(path, spec.connection.as_deref(), stores).await?;
        if files.is_empty() {
            return Err(Error::NoInput(format!("no files match \"{path}\"")));
        }
        let sample = || async {
            let first = files[0].clone();
            tokio::task::spawn_blocking(move || super::chunks::read_sample(&first, 1 << 20))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
        };
        let inferred = match (&spec.format, &spec.schema) {
            (LogFormat::Jsonl, None) => Some(super::jsonl::infer_schema(&sample().await?)?),
            (LogFormat::Csv { delimiter, header }, None) => Some(super::csv::infer_schema(
                &sample().await?,
                *delimiter,
                *header,
            )?),
            _ => None,
        };
        let (parser, boundary) = parser_for(spec, inferred)?;
        let dead_letter = match (spec.on_error, dead_letter) {
            (OnError::DeadLetter, Some(loc)) => Some(DeadLetter::open(loc).await?),
            (OnError::DeadLetter, None) => {
                return Err(Error::Internal("dead_letter without a location".into()));
            }
            _ => None,
        };
        Ok(LogsSource {
            parser,
            files,
            boundary,
            on_error: spec.on_error,
            dead_letter,
            stats: Arc::new(ExtractStats::default()),
        })
    }

    pub fn stats(&self) -> Arc<ExtractStats> {
        self.stats.clone()
    }

    /// The parsed records, in file and line order. Dropping the stream
    /// stops the reader and the parsers.
    pub fn into_stream(self) -> SendableRecordBatchStream {
        let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut producers = Producers::new(self.parser.schema(), parallelism);
        let tx = producers.sender();
        let LogsSource {
            parser,
            files,
            boundary,
            on_error,
            mut dead_letter,
            stats,
        } = self;
        stats.files.store(files.len() as u64, Ordering::Relaxed);
        let (chunk_tx, mut rx) = tokio::sync::mpsc::channel(parallelism * 2);
        let handle = tokio::runtime::Handle::current();
        producers.spawn_blocking("the log reader", move || {
            read_chunks(files, boundary, chunk_tx, handle)
        });
        producers.spawn("the log parser", async move {
            let chunks = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
            let mut parsed = chunks
                .map(|chunk| {
                    let parser = parser.clone();
                    async move {
                        let chunk = chunk?;
                        let bytes = chunk.data.len() as u64;
                        let parsed = tokio::task::spawn_blocking(move || parser.parse(&chunk))
                            .await
                            .map_err(|e| crate::producers::join_error("a log parser", e))??;
                        Ok::<_, Error>((parsed, bytes))
                    }
                })
                .buffered(parallelism);
            while let Some(next) = parsed.next().await {
                let (p, bytes) = next?;
                stats.bytes.fetch_add(bytes, Ordering::Relaxed);
                stats.records.fetch_add(p.records, Ordering::Relaxed);
                if let Some(first) = p.bad.first() {
                    match on_error {
                        OnError::Fail => {
                            return Err(Error::BadRecord {
                                file: first.file.to_string(),
                                line: first.line,
                                message: first.error.clone(),
                            });
                        }
                        OnError::Skip => {}
                        OnError::DeadLetter => {
                            if let Some(dl) = dead_letter.as_mut() {
                                dl.write(&p.bad).await?;
                            }
                        }
                    }
                    stats.bad.fetch_add(p.bad.len() as u64, Ordering::Relaxed);
                }
                for batch in p.batches {
                    if batch.num_rows() == 0 {
                        continue;
                    }
                    stats
                        .rows
                        .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    if tx.send(Ok(batch)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            if let Some(dl) = dead_letter {
                dl.finish().await?;
            }
            Ok(())
        });
        producers.into_stream()
    }
}

/// Splits a path at its first glob character: the folder before it and
/// the pattern.
pub(crate) fn split_glob(path: &str) -> (&str, Option<&str>) {
    match path.find(['*', '?', '[', '{']) {
        None => (path, None),
        Some(i) => {
            let slash = path[..i].rfind('/').map_or(0, |s| s + 1);
            (&path[..slash], Some(&path[slash..]))
        }
    }
}

/// The parser of `spec`'s format, with `inferred` as the schema when the
/// format infers one and none is declared.
fn parser_for(
    spec: &LogsExtract,
    inferred: Option<SchemaRef>,
) -> Result<(Arc<dyn Parser>, Boundary)> {
    let max = spec.max_line_bytes;
    let schema = || match (&spec.schema, &inferred) {
        (Some(cols), _) => Ok(declared_schema(cols)),
        (None, Some(s)) => Ok(s.clone()),
        (None, None) => Err(Error::Config(
            "this format needs a schema: declare one (schema = { … })".into(),
        )),
    };
    Ok(match &spec.format {
        LogFormat::Jsonl => (
            Arc::new(JsonlParser::new(schema()?, max)),
            Boundary::Newline,
        ),
        LogFormat::Csv { delimiter, header } => (
            Arc::new(CsvParser::new(schema()?, *delimiter, *header, max)),
            Boundary::QuotedNewline,
        ),
        LogFormat::NginxCombined | LogFormat::ApacheCombined => {
            (Arc::new(CombinedParser::new(max)), Boundary::Newline)
        }
        LogFormat::Regex { pattern } => {
            let types = spec.schema.clone().unwrap_or_default();
            (
                Arc::new(RegexParser::new(
                    pattern,
                    &types,
                    max,
                    spec.timestamp_format.clone(),
                )?),
                Boundary::Newline,
            )
        }
    })
}

/// The parser a stream of `spec` uses: its schema is declared or fixed
/// by the format, never inferred. A stream reads whole lines, so a CSV
/// field may not hold a newline.
pub fn stream_parser(spec: &LogsExtract) -> Result<Arc<dyn Parser>> {
    Ok(parser_for(spec, None)?.0)
}

/// The files a (rendered) path matches, sorted by name.
pub async fn list_files(
    path: &str,
    connection: Option<&str>,
    stores: &Stores,
) -> Result<Vec<InputFile>> {
    let (prefix, pattern) = split_glob(path);
    let base = stores.resolve(prefix, connection)?;
    let is_local = base.store_url.scheme() == "file";
    let full_pattern = pattern.map(|p| format!("{}/{}", base.path, p));
    let mut files = Vec::new();
    let options = glob::MatchOptions {
        require_literal_separator: true,
        ..Default::default()
    };
    let to_file =
        |display: String, store: Arc<dyn ObjectStore>, p: object_store::path::Path| InputFile {
            display: Arc::from(display.as_str()),
            local: is_local.then(|| std::path::PathBuf::from(format!("/{p}"))),
            store,
            path: p,
        };
    match full_pattern {
        None => {
            let meta = base.store.head(&base.path).await.map_err(|e| {
                Error::store(
                    format!(
                        "reading {}",
                        if is_local {
                            format!("/{}", base.path)
                        } else {
                            base.url()
                        }
                    ),
                    e,
                )
            })?;
            let display = if is_local {
                format!("/{}", meta.location)
            } else {
                base.url()
            };
            files.push(to_file(display, base.store.clone(), meta.location));
        }
        Some(full) => {
            let pattern = glob::Pattern::new(&full)
                .map_err(|e| Error::Config(format!("invalid glob \"{path}\": {e}")))?;
            let mut listing = base.store.list(Some(&base.path));
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(|e| Error::store(format!("listing {}", base.url()), e))?;
                if pattern.matches_with(meta.location.as_ref(), options) {
                    let child = Location {
                        store: base.store.clone(),
                        path: meta.location.clone(),
                        store_url: base.store_url.clone(),
                    };
                    let display = if is_local {
                        format!("/{}", meta.location)
                    } else {
                        child.url()
                    };
                    files.push(to_file(display, base.store.clone(), meta.location));
                }
            }
        }
    }
    files.sort_by(|a, b| a.path.as_ref().cmp(b.path.as_ref()));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain, gzip and zstd files matched by one glob are all read, in
    /// name order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_plain_gzip_and_zstd() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let lines = |from: i64| -> String {
            (from..from + 100)
                .map(|i| format!("{{\"n\":{i}}}\n"))
                .collect()
        };
        std::fs::write(dir.path().join("a.jsonl"), lines(0)).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(lines(100).as_bytes()).unwrap();
        std::fs::write(dir.path().join("b.jsonl.gz"), gz.finish().unwrap()).unwrap();
        std::fs::write(
            dir.path().join("c.jsonl.zst"),
            zstd::encode_all(lines(200).as_bytes(), 3).unwrap(),
        )
        .unwrap();
        let spec = LogsExtract {
            path: String::new(),
            connection: None,
            format: LogFormat::Jsonl,
            on_error: OnError::Fail,
            schema: Some(vec![("n".into(), sluice_core::config::ColumnType::Int64)]),
            max_line_bytes: 1024,
            max_buffer_bytes: None,
            timestamp_format: None,
        };
        let stores = Stores::new(Default::default());
        let glob = format!("{}/*.jsonl*", dir.path().display());
        let source = LogsSource::open(&spec, &glob, &stores, None).await.unwrap();
        let stats = source.stats();
        let batches: Vec<_> = source.into_stream().collect::<Vec<_>>().await;
        let mut values = Vec::new();
        for b in batches {
            let b = b.unwrap();
            let col = b
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap();
            values.extend(col.values().iter().copied());
        }
        assert_eq!(values, (0..300).collect::<Vec<i64>>());
        assert_eq!(stats.get(&stats.files), 3);
    }

    #[test]
    fn glob_split() {
        assert_eq!(
            split_glob("data/nginx/access-*.log*"),
            ("data/nginx/", Some("access-*.log*"))
        );
        assert_eq!(
            split_glob("s3://b/x/**/y.gz"),
            ("s3://b/x/", Some("**/y.gz"))
        );
        assert_eq!(split_glob("a.log"), ("a.log", None));
    }
}
