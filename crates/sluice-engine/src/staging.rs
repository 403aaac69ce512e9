//! The staging store: datasets passed between the tasks of one run, as
//! Parquet under `<staging>/<job>/<logical date>/<task>/`. A run's folder
//! is removed when the run succeeds.

use crate::error::{Error, Result};
use crate::sink::{ParquetOptions, write_dataset};
use crate::store::Location;
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use std::sync::Arc;

/// A task's output, staged for the tasks after it.
#[derive(Debug, Clone)]
pub struct StagedDataset {
    pub location: Location,
    pub schema: SchemaRef,
    pub rows: u64,
}

impl StagedDataset {
    /// The folder URL, with the trailing slash DataFusion wants for folders.
    pub fn url(&self) -> String {
        format!("{}/", self.location.url())
    }
}

/// The metadata of one Parquet file, read from its end: a guess of 64 KiB
/// first, then exactly what the footer says it needs.
async fn read_footer(
    location: &Location,
    meta: &object_store::ObjectMeta,
) -> Result<parquet::file::metadata::ParquetMetaData> {
    use parquet::errors::ParquetError;
    use parquet::file::metadata::ParquetMetaDataReader;
    let mut want = meta.size.min(64 << 10);
    loop {
        let bytes = location
            .store
            .get_range(&meta.location, meta.size - want..meta.size)
            .await
            .map_err(|e| Error::store(format!("reading {}", meta.location), e))?;
        let mut reader = ParquetMetaDataReader::new();
        match reader.try_parse_sized(&bytes, meta.size) {
            Ok(()) => return Ok(reader.finish()?),
            Err(ParquetError::NeedMoreData(n)) if (n as u64) > want => want = n as u64,
            Err(e) => return Err(e.into()),
        }
    }
}

pub struct Staging {
    root: Location,
}

impl Staging {
    pub fn new(root: Location) -> Self {
        Staging { root }
    }

    pub fn run_dir(&self, job: &str, date_key: &str) -> Location {
        self.root.child(job).child(date_key)
    }

    /// Writes `stream` as `task`'s staged output, replacing an earlier one.
    pub async fn stage(
        &self,
        stream: SendableRecordBatchStream,
        job: &str,
        date_key: &str,
        task: &str,
        fence: &dyn crate::fence::Fence,
    ) -> Result<StagedDataset> {
        let schema = stream.schema();
        let location = self.run_dir(job, date_key).child(task);
        let options = ParquetOptions {
            compression: sluice_core::config::Compression::Zstd(1),
            ..ParquetOptions::default()
        };
        let summary = write_dataset(stream, &location, "data", &options, fence).await?;
        Ok(StagedDataset {
            location,
            schema,
            rows: summary.rows,
        })
    }

    /// Reopens what `task` staged for this run, perhaps in an earlier
    /// process: the schema comes from the first file's footer, the row
    /// count from all of them.
    pub async fn open(&self, job: &str, date_key: &str, task: &str) -> Result<StagedDataset> {
        let location = self.run_dir(job, date_key).child(task);
        // A listing that fails is an error, never fewer files.
        let mut files: Vec<object_store::ObjectMeta> = location
            .store
            .list(Some(&location.path))
            .try_filter(|m| {
                let name = m.location.filename().unwrap_or("");
                std::future::ready(name.ends_with(".parquet") && !name.starts_with('.'))
            })
            .try_collect()
            .await
            .map_err(|e| Error::store(format!("listing {}", location.url()), e))?;
        files.sort_by(|a, b| a.location.cmp(&b.location));
        if files.is_empty() {
            return Err(Error::StagedInputMissing {
                task: task.to_string(),
                location: location.url(),
            });
        }
        let mut schema = None;
        let mut rows = 0u64;
        for meta in files {
            let footer = read_footer(&location, &meta).await?;
            rows += footer.file_metadata().num_rows() as u64;
            if schema.is_none() {
                let file = footer.file_metadata();
                schema = Some(Arc::new(parquet::arrow::parquet_to_arrow_schema(
                    file.schema_descr(),
                    file.key_value_metadata(),
                )?));
            }
        }
        Ok(StagedDataset {
            location,
            schema: schema.expect("one file at least"),
            rows,
        })
    }

    /// Deletes everything a run staged.
    pub async fn remove_run(&self, job: &str, date_key: &str) -> Result<()> {
        let dir = self.run_dir(job, date_key);
        let paths: Vec<_> = dir
            .store
            .list(Some(&dir.path))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|e| Error::store(format!("listing {}", dir.url()), e))?;
        for p in paths {
            match dir.store.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store(format!("removing staged {p}"), e)),
            }
        }
        if dir.store_url.scheme() == "file" {
            // Local stores leave empty folders behind: the run's, and the
            // job's once its last run is gone (remove_dir keeps a folder
            // that still holds something).
            let run = std::path::PathBuf::from(format!("/{}", dir.path));
            let _ = std::fs::remove_dir_all(&run);
            if let Some(job_dir) = run.parent() {
                let _ = std::fs::remove_dir(job_dir);
            }
        }
        Ok(())
    }
}
