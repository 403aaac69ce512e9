//! Writes a record batch stream as Parquet files under a destination
//! folder, idempotently per run key (job, task, logical date).
//!
//! Every file is first written under a hidden name
//! (`.sluice-tmp-<run>-<attempt>-<n>.inprogress`, which Spark, Hive,
//! pyarrow, DataFusion and `*.parquet` globs all skip). Only when the
//! whole stream has been written is it published, in steps ordered so
//! that a failure or crash at any of them is healed by the next attempt
//! into exactly the new output, once (see [`commit`]):
//!
//! 1. the run's manifest, `_sluice/<run>.json` under the destination,
//!    is rewritten to list the files of the old output and of the new
//!    one: everything that may be visible until the publish ends;
//! 2. old files the new output does not replace are deleted;
//! 3. the new files are renamed into place (`part-<run>-<n>.parquet`,
//!    replacing an old file of the same name);
//! 4. the manifest is rewritten to list the new files alone.
//!
//! A retry reads the manifest, so it finds whatever an interrupted
//! publish left, and lists only the folders of its files (for hidden
//! files a killed attempt left), never the whole destination.

use super::encoder::FileEncoder;
use super::partition;
use crate::error::{Error, Result};
use crate::fence::Fence;
use crate::store::Location;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sluice_core::config::Compression;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// How files are written.
#[derive(Debug, Clone)]
pub struct ParquetOptions {
    pub compression: Compression,
    pub row_group_size: usize,
    pub max_file_size: u64,
    pub partition_by: Vec<String>,
}

impl Default for ParquetOptions {
    fn default() -> Self {
        ParquetOptions {
            compression: Compression::Zstd(3),
            row_group_size: sluice_core::config::DEFAULT_ROW_GROUP_SIZE,
            max_file_size: 512 << 20,
            partition_by: Vec::new(),
        }
    }
}

/// What a write produced.
#[derive(Debug, Clone, Default)]
pub struct WriteSummary {
    pub rows: u64,
    pub bytes: u64,
    /// Final paths of the files written.
    pub files: Vec<String>,
    /// The most files that were open at once (the tests check its bound;
    /// the debug log shows it).
    #[cfg(test)]
    pub peak_open: usize,
}

/// Files a write keeps open at once. Each open file holds a row group's
/// worth of encoded columns and an upload buffer, so a `partition_by`
/// column with thousands of values must not open thousands: past this
/// many, the file written to least recently is closed (its partition gets
/// a new file if more of its rows come). Data ordered by the partition
/// columns, as time-partitioned logs are, rarely reaches the bound.
pub const MAX_OPEN_FILES: usize = 64;

struct OpenFile {
    /// Taken out while a batch is encoded on the blocking pool.
    encoder: Option<FileEncoder>,
    upload: BufWriter,
    uploaded: u64,
    tmp: Path,
    final_path: Path,
    /// When it was last written to, in writes of this dataset.
    last_write: u64,
}

/// A file written but not yet committed.
struct Written {
    tmp: Path,
    final_path: Path,
    bytes: u64,
}

const TMP_PREFIX: &str = ".sluice-tmp-";

/// Bytes at which a data page is closed. zstd picks its parameters from
/// the size of what it compresses, and for inputs of at most 128 KiB it
/// uses hash tables a quarter the size of those for inputs over 256 KiB
/// (see `ZSTD_defaultCParameters` in zstd's `clevels.h`): they stay in the
/// L2 cache, so a page compresses about 20% faster at level 3 and, on the
/// benchmark's text, no worse. Between 128 and 256 KiB zstd's level 3
/// matches shorter strings, which is both slower and worse on random-looking
/// text, so pages must stay under 128 KiB: the writer checks the size after
/// each slice of values and sizes a slice to at most this many bytes, so a
/// page holds at most twice this plus its levels.
pub const DATA_PAGE_SIZE: usize = 60 << 10;

/// Writes `stream` under `dest` as the output of `run_key` (a name unique
/// per job, task and logical date), committing only on success and only
/// while `fence` says the attempt still holds its claim.
pub async fn write_dataset(
    mut stream: SendableRecordBatchStream,
    dest: &Location,
    run_key: &str,
    options: &ParquetOptions,
    fence: &dyn Fence,
) -> Result<WriteSummary> {
    let attempt = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let schema = plain_types(&stream.schema());
    let data_schema: SchemaRef = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .filter(|f| !options.partition_by.contains(f.name()))
            .map(|f| f.as_ref().clone())
            .collect::<Vec<_>>(),
    ));
    for name in &options.partition_by {
        if schema.field_with_name(name).is_err() {
            return Err(Error::Config(format!(
                "partition_by column \"{name}\" is not in the data; columns: {}",
                crate::schema::column_names(&schema)
            )));
        }
    }
    let props = writer_properties(options)?;
    let mut state = WriteState {
        dest,
        run_key,
        attempt: &attempt,
        props,
        data_schema: data_schema.clone(),
        open: HashMap::new(),
        peak_open: 0,
        writes: 0,
        written: Vec::new(),
        seq: 0,
        rows: 0,
        max_file_size: options.max_file_size,
        row_group_size: options.row_group_size,
    };
    let result: Result<()> = async {
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            let batch = to_schema(batch, &schema)?;
            state.rows += batch.num_rows() as u64;
            if options.partition_by.is_empty() {
                state.write("", &batch).await?;
            } else {
                for (folder, part) in partition::split(&batch, &options.partition_by, &data_schema)?
                {
                    state.write(&folder, &part).await?;
                }
            }
        }
        if state.rows == 0 && options.partition_by.is_empty() {
            // An empty result still gets a file, so readers see its schema.
            let empty = RecordBatch::new_empty(data_schema.clone());
            state.open_file("", &empty).await?;
        }
        state.close_all().await
    }
    .await;
    if let Err(e) = result {
        state.abort().await;
        return Err(e);
    }
    if let Err(e) = fence.check().await {
        // The attempt that took over publishes; this one's files go.
        state.abort().await;
        return Err(e);
    }
    commit(dest, run_key, &state.written).await?;
    tracing::debug!(
        files = state.written.len(),
        peak_open = state.peak_open,
        "dataset written"
    );
    Ok(WriteSummary {
        rows: state.rows,
        bytes: state.written.iter().map(|w| w.bytes).sum(),
        files: state
            .written
            .iter()
            .map(|w| w.final_path.to_string())
            .collect(),
        #[cfg(test)]
        peak_open: state.peak_open,
    })
}

/// The schema with string and binary views as plain strings and binaries:
/// views are an in-memory layout, and not every Parquet reader (pyarrow
/// among them) maps them back to strings.
pub(crate) fn plain_types(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8View => f.as_ref().clone().with_data_type(DataType::Utf8),
            DataType::BinaryView => f.as_ref().clone().with_data_type(DataType::Binary),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

pub(crate) fn to_schema(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

pub(crate) fn writer_properties(options: &ParquetOptions) -> Result<WriterProperties> {
    let compression = match options.compression {
        Compression::Zstd(level) => PqCompression::ZSTD(ZstdLevel::try_new(level)?),
        Compression::Snappy => PqCompression::SNAPPY,
        Compression::None => PqCompression::UNCOMPRESSED,
    };
    Ok(WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(options.row_group_size))
        .set_data_page_size_limit(DATA_PAGE_SIZE)
        .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")))
        .build())
}

struct WriteState<'a> {
    dest: &'a Location,
    run_key: &'a str,
    attempt: &'a str,
    props: WriterProperties,
    data_schema: SchemaRef,
    open: HashMap<String, OpenFile>,
    peak_open: usize,
    /// Writes so far, the clock of `OpenFile::last_write`.
    writes: u64,
    written: Vec<Written>,
    seq: u32,
    rows: u64,
    max_file_size: u64,
    row_group_size: usize,
}

impl WriteState<'_> {
    fn folder(&self, folder: &str) -> Path {
        self.dest.child(folder).path
    }

    async fn open_file(&mut self, folder: &str, first: &RecordBatch) -> Result<()> {
        if self.open.len() >= MAX_OPEN_FILES {
            let stalest = self
                .open
                .iter()
                .min_by_key(|(_, f)| f.last_write)
                .map(|(k, _)| k.clone())
                .expect("files are open");
            let file = self.open.remove(&stalest).expect("present");
            self.close(file).await?;
        }
        let dir = self.folder(folder);
        let n = self.seq;
        self.seq += 1;
        let tmp = dir.clone().join(format!(
            "{TMP_PREFIX}{}-{}-{n:05}.inprogress",
            self.run_key, self.attempt
        ));
        let final_path = dir.join(format!("part-{}-{n:05}.parquet", self.run_key));
        let upload = BufWriter::new(self.dest.store.clone(), tmp.clone());
        let encoder = FileEncoder::new(
            self.data_schema.clone(),
            crate::sink::dictionary::tuned(&self.props, first),
            self.row_group_size,
        )?;
        self.open.insert(
            folder.to_string(),
            OpenFile {
                encoder: Some(encoder),
                upload,
                uploaded: 0,
                tmp,
                final_path,
                last_write: self.writes,
            },
        );
        self.peak_open = self.peak_open.max(self.open.len());
        Ok(())
    }

    /// Writes in slices of a row group, so that files roll at their size
    /// limit even inside one large batch.
    async fn write(&mut self, folder: &str, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = self.row_group_size.min(batch.num_rows() - offset);
            if !self.open.contains_key(folder) {
                self.open_file(folder, &batch.slice(offset, len)).await?;
            }
            self.writes += 1;
            let file = self.open.get_mut(folder).expect("opened above");
            file.last_write = self.writes;
            let mut encoder = file
                .encoder
                .take()
                .expect("encoder is put back after each batch");
            let slice = batch.slice(offset, len);
            // Encoding is CPU work: off the async threads.
            let (encoder, bytes) = tokio::task::spawn_blocking(move || {
                let result = encoder.write(&slice);
                let bytes = encoder.take_bytes();
                result.map(|()| (encoder, bytes))
            })
            .await
            .map_err(|e| Error::Internal(format!("parquet encoder panicked: {e}")))??;
            let size = encoder.size();
            file.encoder = Some(encoder);
            upload(file, bytes).await?;
            offset += len;
            if size >= self.max_file_size {
                let file = self.open.remove(folder).expect("present");
                self.close(file).await?;
            }
        }
        Ok(())
    }

    async fn close(&mut self, mut file: OpenFile) -> Result<()> {
        let encoder = file.encoder.take().expect("encoder present");
        let rest = tokio::task::spawn_blocking(move || encoder.finish())
            .await
            .map_err(|e| Error::Internal(format!("parquet encoder panicked: {e}")))??;
        upload(&mut file, rest).await?;
        file.upload.shutdown().await.map_err(|source| Error::Io {
            path: file.tmp.to_string().into(),
            source,
        })?;
        self.written.push(Written {
            tmp: file.tmp,
            final_path: file.final_path,
            bytes: file.uploaded,
        });
        Ok(())
    }

    async fn close_all(&mut self) -> Result<()> {
        let mut folders: Vec<String> = self.open.keys().cloned().collect();
        folders.sort();
        for folder in folders {
            let file = self.open.remove(&folder).expect("present");
            self.close(file).await?;
        }
        Ok(())
    }

    /// Removes what this attempt wrote. Open multipart uploads are aborted
    /// by dropping their writers.
    async fn abort(&mut self) {
        self.open.clear();
        for w in &self.written {
            let _ = self.dest.store.delete(&w.tmp).await;
        }
    }
}

async fn upload(file: &mut OpenFile, bytes: Vec<u8>) -> Result<()> {
    upload_to(&mut file.upload, &file.tmp, &mut file.uploaded, bytes).await
}

/// Sends encoded bytes of the file at `tmp` to its upload, counting them
/// into `uploaded`.
pub(crate) async fn upload_to(
    upload: &mut BufWriter,
    tmp: &Path,
    uploaded: &mut u64,
    bytes: Vec<u8>,
) -> Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    *uploaded += bytes.len() as u64;
    upload.write_all(&bytes).await.map_err(|source| Error::Io {
        path: tmp.to_string().into(),
        source,
    })
}

/// Deletes files under `dir` (not below) whose name starts with `prefix`
/// and holds a `#` (partial local uploads).
fn remove_local_partials(dir: &std::path::Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && name.starts_with(prefix)
            && name.contains('#')
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Where the destination keeps, per run key, the files its output is
/// made of. A leading `_` hides it from Spark, Hive and pyarrow; it is
/// no `.parquet`, so globs and DataFusion skip it too.
const MANIFEST_DIR: &str = "_sluice";

fn manifest_path(dest: &Location, run_key: &str) -> Path {
    dest.path
        .clone()
        .join(MANIFEST_DIR)
        .join(format!("{run_key}.json"))
}

/// The files the manifest lists, relative to the destination; `None`
/// when there is no manifest (the run key's first publish).
async fn read_manifest(dest: &Location, run_key: &str) -> Result<Option<Vec<Path>>> {
    let path = manifest_path(dest, run_key);
    let bytes = match dest.store.get(&path).await {
        Ok(got) => got
            .bytes()
            .await
            .map_err(|e| Error::store(format!("reading {path}"), e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(Error::store(format!("reading {path}"), e)),
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Internal(format!("{path} is not a Sluice manifest: {e}")))?;
    let files = value
        .get("files")
        .and_then(|f| f.as_array())
        .ok_or_else(|| Error::Internal(format!("{path} lists no files")))?;
    // Stored as written (already encoded), so parsed, not re-encoded.
    let base = dest.path.as_ref();
    files
        .iter()
        .filter_map(|f| f.as_str())
        .map(|f| {
            let full = if base.is_empty() {
                f.to_string()
            } else {
                format!("{base}/{f}")
            };
            Path::parse(&full)
                .map_err(|e| Error::Internal(format!("{path} lists a bad path {f}: {e}")))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

async fn write_manifest(dest: &Location, run_key: &str, files: &[Path]) -> Result<()> {
    let prefix = dest.path.as_ref();
    let relative: Vec<&str> = files
        .iter()
        .map(|f| {
            f.as_ref()
                .strip_prefix(prefix)
                .unwrap_or(f.as_ref())
                .trim_start_matches('/')
        })
        .collect();
    let text = serde_json::json!({ "run": run_key, "files": relative }).to_string();
    let path = manifest_path(dest, run_key);
    dest.store
        .put(&path, text.into())
        .await
        .map_err(|e| Error::store(format!("writing {path}"), e))?;
    Ok(())
}

/// The folder a file is in.
fn folder_of(path: &Path) -> Path {
    let mut parts: Vec<_> = path.parts().collect();
    parts.pop();
    Path::from_iter(parts)
}

/// Publishes `written` as the output of `run_key`, replacing what an
/// earlier attempt or run published (see the module's documentation for
/// the order of the steps and why each failure heals).
async fn commit(dest: &Location, run_key: &str, written: &[Written]) -> Result<()> {
    let new: Vec<Path> = written.iter().map(|w| w.final_path.clone()).collect();
    let listed = read_manifest(dest, run_key).await?;
    let mut folders: Vec<Path> = new
        .iter()
        .chain(listed.iter().flatten())
        .map(folder_of)
        .collect();
    folders.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
    folders.dedup();
    // What earlier attempts left in those folders: their published files
    // (the first publish has no manifest to say) and hidden leftovers.
    let old_prefix = format!("part-{run_key}-");
    let stale_tmp = format!("{TMP_PREFIX}{run_key}-");
    let mut old: Vec<Path> = listed.unwrap_or_default();
    let mut stale = Vec::new();
    for folder in &folders {
        let found = dest
            .store
            .list_with_delimiter(Some(folder))
            .await
            .map_err(|e| Error::store(format!("listing {folder}"), e))?;
        for meta in found.objects {
            let name = meta.location.filename().unwrap_or_default();
            if name.starts_with(&old_prefix) {
                if !old.contains(&meta.location) {
                    old.push(meta.location);
                }
            } else if name.starts_with(&stale_tmp)
                && !written.iter().any(|w| w.tmp == meta.location)
            {
                stale.push(meta.location);
            }
        }
        if dest.store_url.scheme() == "file" {
            // A killed upload to a local store leaves its partial file
            // under a name the store's listing hides (`<name>#<n>`).
            let dir = std::path::PathBuf::from(format!("/{folder}"));
            let prefix = stale_tmp.clone();
            tokio::task::spawn_blocking(move || remove_local_partials(&dir, &prefix))
                .await
                .map_err(|e| crate::producers::join_error("removing partial uploads", e))?;
        }
    }
    for path in &stale {
        delete_if_there(dest, path, "removing a leftover temporary file").await?;
    }
    // 1. Everything that may be visible until this publish ends.
    let mut visible = old.clone();
    visible.extend(new.iter().filter(|p| !old.contains(p)).cloned());
    write_manifest(dest, run_key, &visible).await?;
    // 2. Old files that no new file replaces.
    for path in old.iter().filter(|p| !new.contains(p)) {
        delete_if_there(dest, path, "removing earlier output").await?;
    }
    // 3. The new files, each replacing an old one of the same name.
    for w in written {
        dest.store
            .rename(&w.tmp, &w.final_path)
            .await
            .map_err(|e| Error::store(format!("publishing {}", w.final_path), e))?;
    }
    // 4. The output is the new files alone.
    write_manifest(dest, run_key, &new).await
}

async fn delete_if_there(dest: &Location, path: &Path, what: &str) -> Result<()> {
    match dest.store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(Error::store(format!("{what} {path}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use bytes::Bytes;
    use parquet::column::page::Page;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// Every data page is compressed from at most 128 KiB, where zstd uses
    /// its small, fast tables (see `DATA_PAGE_SIZE`), whatever the width of
    /// the column's values.
    #[test]
    fn pages_stay_under_zstds_small_input_size() {
        let rows = 200_000;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("maybe", DataType::Int64, true),
            Field::new("text", DataType::Utf8, false),
            Field::new("long", DataType::Utf8, true),
        ]));
        // Distinct text of 30 to 200 bytes, like the benchmark's payload,
        // and 3,000-byte values that overshoot any slice of the page.
        let text: Vec<String> = (0..rows)
            .map(|i| format!("{i:x}").repeat(1 + (i * 7919) % 40))
            .collect();
        let long: Vec<Option<String>> = (0..rows)
            .map(|i| (i % 3 != 0).then(|| format!("{i:08}").repeat(375)))
            .collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows as i64)),
                Arc::new(Int64Array::from_iter(
                    (0..rows as i64).map(|i| (i % 5 != 0).then_some(i)),
                )),
                Arc::new(StringArray::from_iter_values(&text)),
                Arc::new(StringArray::from(long)),
            ],
        )
        .unwrap();
        let options = ParquetOptions::default();
        let props = crate::sink::dictionary::tuned(&writer_properties(&options).unwrap(), &batch);
        let mut encoder = FileEncoder::new(schema, props, options.row_group_size).unwrap();
        for offset in (0..rows).step_by(16_384) {
            encoder
                .write(&batch.slice(offset, 16_384.min(rows - offset)))
                .unwrap();
        }
        let mut file = encoder.take_bytes();
        file.extend(encoder.finish().unwrap());
        let reader = SerializedFileReader::new(Bytes::from(file)).unwrap();
        for g in 0..reader.num_row_groups() {
            let group = reader.get_row_group(g).unwrap();
            for c in 0..group.num_columns() {
                let mut pages = group.get_column_page_reader(c).unwrap();
                let (mut count, mut largest) = (0, 0);
                while let Some(page) = pages.get_next_page().unwrap() {
                    if let Page::DataPage { buf, .. } = &page {
                        count += 1;
                        largest = largest.max(buf.len());
                    }
                }
                assert!(count > 1, "column {c} of group {g} is one page");
                assert!(
                    largest <= 128 << 10,
                    "column {c} of group {g} has a {largest}-byte page"
                );
            }
        }
    }
}
