//! The dead-letter store: bad records of a run, one JSON object a line,
//! with the file and line they came from and why they were refused. Kept
//! per (job, task, logical date) and replaced when the run is re-run.

use super::BadRecord;
use crate::error::{Error, Result};
use crate::store::Location;
use base64::Engine as _;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use tokio::io::AsyncWriteExt;

pub const FILE_NAME: &str = "bad_records.jsonl";

pub struct DeadLetter {
    location: Location,
    writer: Option<BufWriter>,
    pub written: u64,
}

impl DeadLetter {
    /// A dead-letter file in the folder `location`; any file left by an
    /// earlier attempt of the same run is removed first.
    pub async fn open(location: Location) -> Result<Self> {
        let file = location.child(FILE_NAME);
        match file.store.delete(&file.path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(Error::store(format!("clearing {}", file.url()), e)),
        }
        Ok(DeadLetter {
            location: file,
            writer: None,
            written: 0,
        })
    }

    /// A dead-letter file at `file`, replacing it when it is finished.
    pub fn create(file: Location) -> Self {
        DeadLetter {
            location: file,
            writer: None,
            written: 0,
        }
    }

    pub async fn write(&mut self, records: &[BadRecord]) -> Result<()> {
        let mut text = Vec::with_capacity(records.len() * 256);
        for r in records {
            let mut obj = serde_json::json!({
                "file": &*r.file,
                "line": r.line,
                "error": &r.error,
                "record": String::from_utf8_lossy(&r.raw),
            });
            // Bytes that are not UTF-8 are kept exactly, in base64 beside
            // the readable (lossy) text.
            if std::str::from_utf8(&r.raw).is_err() {
                obj["record_base64"] = base64::engine::general_purpose::STANDARD
                    .encode(&r.raw)
                    .into();
            }
            serde_json::to_writer(&mut text, &obj).map_err(|e| Error::Internal(e.to_string()))?;
            text.push(b'\n');
        }
        let writer = self.writer.get_or_insert_with(|| {
            BufWriter::new(self.location.store.clone(), self.location.path.clone())
        });
        writer.write_all(&text).await.map_err(|source| Error::Io {
            path: self.location.url().into(),
            source,
        })?;
        self.written += records.len() as u64;
        Ok(())
    }

    /// Completes the upload; without it nothing is visible.
    pub async fn finish(mut self) -> Result<()> {
        if let Some(mut w) = self.writer.take() {
            w.shutdown().await.map_err(|source| Error::Io {
                path: self.location.url().into(),
                source,
            })?;
        }
        Ok(())
    }
}
