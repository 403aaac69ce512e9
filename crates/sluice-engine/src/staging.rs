//! The staging store: datasets passed between the tasks of one run, as
//! Parquet under `<staging>/<job>/<logical date>/<task>/`. A run's folder
//! is removed when the run succeeds.

use crate::error::{Error, Result};
use crate::sink::{ParquetOptions, write_dataset};
use crate::store::Location;
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use object_store::ObjectStoreExt;

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
    ) -> Result<StagedDataset> {
        let schema = stream.schema();
        let location = self.run_dir(job, date_key).child(task);
        let options = ParquetOptions {
            compression: sluice_core::config::Compression::Zstd(1),
            ..ParquetOptions::default()
        };
        let summary = write_dataset(stream, &location, "data", &options).await?;
        Ok(StagedDataset {
            location,
            schema,
            rows: summary.rows,
        })
    }

    /// Deletes everything a run staged.
    pub async fn remove_run(&self, job: &str, date_key: &str) -> Result<()> {
        let dir = self.run_dir(job, date_key);
        let paths: Vec<_> = dir
            .store
            .list(Some(&dir.path))
            .filter_map(|m| async move { m.ok().map(|m| m.location) })
            .collect()
            .await;
        for p in paths {
            match dir.store.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::store(format!("removing staged {p}"), e)),
            }
        }
        if dir.store_url.scheme() == "file" {
            // Local stores leave empty folders behind.
            let _ = std::fs::remove_dir_all(format!("/{}", dir.path));
        }
        Ok(())
    }
}
