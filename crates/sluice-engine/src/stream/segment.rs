//! A segment: the Parquet files a stream writes between two checkpoints.
//!
//! Rows go to one open file per partition, each uploaded as it is encoded
//! under a hidden name (`.sluice-stream-<uuid>.inprogress`, which readers
//! and `*.parquet` globs skip). When the segment ends its files are
//! finished but still hidden; the checkpoint that commits the segment's
//! offsets also records each file's final name ([`Pending`]), and only
//! then are they renamed into place. A crash before that commit leaves
//! hidden files that the next start deletes (their lines are read again
//! from the offsets before them); a crash after it leaves renames that the
//! next start finishes. So every line is published once.
//!
//! A file's final name is derived from the input it holds (each source
//! file's fingerprint and byte range), so the same input always makes the
//! same name: a rename repeated after a crash replaces, never duplicates.

use super::tail::Fingerprint;
use crate::error::{Error, Result};
use crate::sink::encoder::FileEncoder;
use crate::sink::parquet::{ParquetOptions, plain_types, to_schema, upload_to, writer_properties};
use crate::sink::partition;
use crate::store::Location;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncWriteExt;

/// The prefix of the hidden names a stream's files are written under.
pub const TMP_PREFIX: &str = ".sluice-stream-";

/// A finished file waiting to be renamed into place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub tmp: String,
    pub to: String,
    pub rows: u64,
    pub bytes: u64,
}

struct OpenFile {
    encoder: Option<FileEncoder>,
    upload: BufWriter,
    tmp: Path,
    uploaded: u64,
    rows: u64,
}

pub struct Segment {
    dest: Location,
    props: WriterProperties,
    row_group_size: usize,
    partition_by: Vec<String>,
    schema: SchemaRef,
    data_schema: SchemaRef,
    open: BTreeMap<String, OpenFile>,
    /// The byte range each source file's lines in this segment span.
    ranges: BTreeMap<Fingerprint, (u64, u64)>,
    started: Option<Instant>,
    rows: u64,
}

impl Segment {
    /// A segment of files under `dest` for batches of `schema`.
    pub fn new(dest: Location, schema: &SchemaRef, options: &ParquetOptions) -> Result<Segment> {
        let schema = plain_types(schema);
        for name in &options.partition_by {
            if schema.field_with_name(name).is_err() {
                return Err(Error::Config(format!(
                    "partition_by column \"{name}\" is not in the data; columns: {}",
                    crate::schema::column_names(&schema)
                )));
            }
        }
        let data_schema: SchemaRef = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .filter(|f| !options.partition_by.contains(f.name()))
                .map(|f| f.as_ref().clone())
                .collect::<Vec<_>>(),
        ));
        Ok(Segment {
            dest,
            props: writer_properties(options)?,
            row_group_size: options.row_group_size,
            partition_by: options.partition_by.clone(),
            schema,
            data_schema,
            open: BTreeMap::new(),
            ranges: BTreeMap::new(),
            started: None,
            rows: 0,
        })
    }

    /// Records that the segment holds (what survived of) the lines of
    /// `file` from `start` to `end`.
    pub fn covers(&mut self, file: Fingerprint, start: u64, end: u64) {
        self.started.get_or_insert_with(Instant::now);
        let range = self.ranges.entry(file).or_insert((start, end));
        range.0 = range.0.min(start);
        range.1 = range.1.max(end);
    }

    /// Whether the segment holds any input (rows or not).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// When its first input came.
    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The size of its largest file so far (bytes written and the open
    /// row group's estimate).
    pub fn largest(&self) -> u64 {
        self.open
            .values()
            .filter_map(|f| f.encoder.as_ref().map(FileEncoder::size))
            .max()
            .unwrap_or(0)
    }

    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.started.get_or_insert_with(Instant::now);
        let batch = to_schema(batch, &self.schema)?;
        self.rows += batch.num_rows() as u64;
        if self.partition_by.is_empty() {
            let data = RecordBatch::try_new(self.data_schema.clone(), batch.columns().to_vec())?;
            return self.write_to("", data).await;
        }
        for (folder, part) in partition::split(&batch, &self.partition_by, &self.data_schema)? {
            self.write_to(&folder, part).await?;
        }
        Ok(())
    }

    async fn write_to(&mut self, folder: &str, batch: RecordBatch) -> Result<()> {
        if !self.open.contains_key(folder) {
            let tmp = self.dest.child(folder).path.join(format!(
                "{TMP_PREFIX}{}.inprogress",
                uuid::Uuid::new_v4().simple()
            ));
            let encoder = FileEncoder::new(
                self.data_schema.clone(),
                crate::sink::dictionary::tuned(&self.props, &batch),
                self.row_group_size,
            )?;
            self.open.insert(
                folder.to_string(),
                OpenFile {
                    encoder: Some(encoder),
                    upload: BufWriter::new(self.dest.store.clone(), tmp.clone()),
                    tmp,
                    uploaded: 0,
                    rows: 0,
                },
            );
        }
        let file = self.open.get_mut(folder).expect("opened above");
        file.rows += batch.num_rows() as u64;
        let mut encoder = file.encoder.take().expect("put back after each batch");
        // Encoding is CPU work: off the async threads.
        let (encoder, bytes) = tokio::task::spawn_blocking(move || {
            let result = encoder.write(&batch);
            let bytes = encoder.take_bytes();
            result.map(|()| (encoder, bytes))
        })
        .await
        .map_err(|e| Error::Internal(format!("parquet encoder panicked: {e}")))??;
        file.encoder = Some(encoder);
        upload(file, bytes).await
    }

    /// Finishes every file (still hidden) and names where each goes.
    pub async fn finish(mut self) -> Result<Vec<Pending>> {
        let id = self.id();
        let mut pending = Vec::with_capacity(self.open.len());
        let open = std::mem::take(&mut self.open);
        for (n, (folder, mut file)) in open.into_iter().enumerate() {
            let encoder = file.encoder.take().expect("encoder present");
            let rest = tokio::task::spawn_blocking(move || encoder.finish())
                .await
                .map_err(|e| Error::Internal(format!("parquet encoder panicked: {e}")))??;
            upload(&mut file, rest).await?;
            file.upload.shutdown().await.map_err(|source| Error::Io {
                path: file.tmp.to_string().into(),
                source,
            })?;
            let to = self
                .dest
                .child(&folder)
                .path
                .join(format!("part-{id}-{n:03}.parquet"));
            pending.push(Pending {
                tmp: file.tmp.to_string(),
                to: to.to_string(),
                rows: file.rows,
                bytes: file.uploaded,
            });
        }
        Ok(pending)
    }

    /// Stops writing: open uploads are aborted.
    pub async fn abort(mut self) {
        for (_, mut file) in std::mem::take(&mut self.open) {
            let _ = file.upload.abort().await;
        }
    }

    /// The segment's name: the first source file's fingerprint and start,
    /// and a hash of every range it holds.
    fn id(&self) -> String {
        let mut hash = Sha256::new();
        for (fp, (start, end)) in &self.ranges {
            hash.update(fp.0.to_be_bytes());
            hash.update(start.to_be_bytes());
            hash.update(end.to_be_bytes());
        }
        let digest = hash.finalize();
        let (fp, start) = self
            .ranges
            .iter()
            .next()
            .map_or((Fingerprint(0), 0), |(fp, (s, _))| (*fp, *s));
        let tail: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        format!("{fp}-{start:012}-{tail}")
    }
}

async fn upload(file: &mut OpenFile, bytes: Vec<u8>) -> Result<()> {
    upload_to(&mut file.upload, &file.tmp, &mut file.uploaded, bytes).await
}

/// Renames finished files into place. A file whose hidden copy is gone
/// was renamed already (by this process before a crash, or by the owner
/// before this one).
pub async fn publish(dest: &Location, pending: &[Pending]) -> Result<()> {
    for p in pending {
        let tmp = Path::from(p.tmp.as_str());
        let to = Path::from(p.to.as_str());
        match dest.store.rename(&tmp, &to).await {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => {
                if dest.store.head(&to).await.is_err() {
                    return Err(Error::Internal(format!(
                        "{} is committed but neither it nor its hidden copy {} is in the store",
                        p.to, p.tmp
                    )));
                }
            }
            Err(e) => return Err(Error::store(format!("publishing {}", p.to), e)),
        }
    }
    Ok(())
}

/// Deletes the hidden files under `dest` that no commit names: what a
/// segment left when the process stopped before its commit. Their lines
/// are read again from the checkpoint before them.
pub async fn remove_orphans(dest: &Location, pending: &[Pending]) -> Result<usize> {
    let keep: std::collections::HashSet<&str> = pending.iter().map(|p| p.tmp.as_str()).collect();
    let listed: Vec<_> = dest
        .store
        .list(Some(&dest.path))
        .try_collect()
        .await
        .map_err(|e| Error::store(format!("listing {}", dest.url()), e))?;
    let mut removed = 0;
    for meta in listed {
        let name = meta.location.filename().unwrap_or_default();
        if name.starts_with(TMP_PREFIX) && !keep.contains(meta.location.as_ref()) {
            match dest.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                Err(e) => {
                    return Err(Error::store(format!("removing {}", meta.location), e));
                }
            }
        }
    }
    if let Some(dir) = local_dir(dest) {
        removed += remove_local_partials(&dir);
    }
    Ok(removed)
}

/// The folder of a local destination, where object_store keeps a
/// multipart upload in progress as `<name>#<n>` files.
fn local_dir(dest: &Location) -> Option<std::path::PathBuf> {
    (dest.store_url.scheme() == "file").then(|| std::path::PathBuf::from(format!("/{}", dest.path)))
}

fn remove_local_partials(dir: &std::path::Path) -> usize {
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            removed += remove_local_partials(&path);
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(TMP_PREFIX) && n.contains('#'))
            && std::fs::remove_file(&path).is_ok()
        {
            removed += 1;
        }
    }
    removed
}
