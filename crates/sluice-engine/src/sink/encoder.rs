//! A Parquet file encoder that encodes the columns of each batch on
//! several threads at once. Encoding (dictionaries, zstd) is most of the
//! cost of writing Parquet, and arrow-rs's `ArrowWriter` does it on one
//! thread; here every column has its own writer and threads take columns
//! from a shared counter, so a heavy string column does not hold up the
//! rest. Encoded bytes collect in memory and are taken by the caller after
//! each row group, for upload.

use crate::error::{Error, Result};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::arrow::{ArrowSchemaConverter, add_encoded_arrow_schema_to_metadata};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct FileEncoder {
    schema: SchemaRef,
    writer: SerializedFileWriter<Vec<u8>>,
    factory: ArrowRowGroupWriterFactory,
    columns: Vec<Mutex<ArrowColumnWriter>>,
    rows_in_group: usize,
    row_group_size: usize,
    groups: usize,
    threads: usize,
}

impl FileEncoder {
    pub fn new(schema: SchemaRef, props: WriterProperties, row_group_size: usize) -> Result<Self> {
        let mut props = props;
        // Readers restore Arrow types (time zones, large types) from this.
        add_encoded_arrow_schema_to_metadata(&schema, &mut props);
        let parquet_schema = ArrowSchemaConverter::new()
            .with_coerce_types(props.coerce_types())
            .convert(&schema)?;
        let writer = SerializedFileWriter::new(
            Vec::new(),
            parquet_schema.root_schema_ptr(),
            Arc::new(props),
        )?;
        let factory = ArrowRowGroupWriterFactory::new(&writer, schema.clone());
        let columns = factory
            .create_column_writers(0)?
            .into_iter()
            .map(Mutex::new)
            .collect();
        Ok(FileEncoder {
            schema,
            writer,
            factory,
            columns,
            rows_in_group: 0,
            row_group_size: row_group_size.max(1),
            groups: 0,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        })
    }

    /// Encodes `batch`, closing row groups at `row_group_size` rows.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = (self.row_group_size - self.rows_in_group).min(batch.num_rows() - offset);
            self.encode(&batch.slice(offset, len))?;
            offset += len;
            self.rows_in_group += len;
            if self.rows_in_group >= self.row_group_size {
                self.close_group()?;
            }
        }
        Ok(())
    }

    fn encode(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut leaves = Vec::with_capacity(self.columns.len());
        for (field, array) in self.schema.fields().iter().zip(batch.columns()) {
            leaves.extend(compute_leaves(field, array)?);
        }
        if leaves.len() != self.columns.len() {
            return Err(Error::Internal(format!(
                "{} leaves for {} column writers",
                leaves.len(),
                self.columns.len()
            )));
        }
        let columns = &self.columns;
        run_parallel(self.threads, columns.len(), |i| {
            let mut w = columns[i]
                .lock()
                .map_err(|_| Error::Internal("column writer poisoned".into()))?;
            w.write(&leaves[i]).map_err(Error::from)
        })
    }

    fn close_group(&mut self) -> Result<()> {
        if self.rows_in_group == 0 {
            return Ok(());
        }
        self.groups += 1;
        let next: Vec<Mutex<ArrowColumnWriter>> = self
            .factory
            .create_column_writers(self.groups)?
            .into_iter()
            .map(Mutex::new)
            .collect();
        let writers: Vec<Mutex<Option<ArrowColumnWriter>>> =
            std::mem::replace(&mut self.columns, next)
                .into_iter()
                .map(|m| Mutex::new(Some(m.into_inner().expect("unpoisoned"))))
                .collect();
        // Closing a column flushes its last page: parallel too.
        let chunks: Vec<Mutex<Option<ArrowColumnChunk>>> =
            (0..writers.len()).map(|_| Mutex::new(None)).collect();
        run_parallel(self.threads, writers.len(), |i| {
            let w = writers[i]
                .lock()
                .expect("own slot")
                .take()
                .expect("writer present");
            *chunks[i].lock().expect("own slot") = Some(w.close()?);
            Ok(())
        })?;
        let mut group = self.writer.next_row_group()?;
        for chunk in chunks {
            chunk
                .into_inner()
                .expect("unpoisoned")
                .expect("closed above")
                .append_to_row_group(&mut group)?;
        }
        group.close()?;
        self.rows_in_group = 0;
        Ok(())
    }

    /// Encoded bytes not yet taken.
    pub fn take_bytes(&mut self) -> Vec<u8> {
        std::mem::take(self.writer.inner_mut())
    }

    /// Bytes encoded so far, including those of the open row group.
    pub fn size(&self) -> u64 {
        let open: usize = self
            .columns
            .iter()
            .map(|c| c.lock().map_or(0, |w| w.get_estimated_total_bytes()))
            .sum();
        (self.writer.bytes_written() + open) as u64
    }

    /// Closes the last row group and writes the footer; returns the rest of
    /// the bytes.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        self.close_group()?;
        self.writer.finish()?;
        Ok(self.take_bytes())
    }
}

/// Runs `work(0..n)` on up to `threads` threads, each taking the next index.
fn run_parallel(threads: usize, n: usize, work: impl Fn(usize) -> Result<()> + Sync) -> Result<()> {
    let next = AtomicUsize::new(0);
    let worker = || -> Result<()> {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return Ok(());
            }
            work(i)?;
        }
    };
    if threads <= 1 || n <= 1 {
        return worker();
    }
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads.min(n)).map(|_| s.spawn(worker)).collect();
        let mut result = worker();
        for h in helpers {
            let r = h
                .join()
                .map_err(|_| Error::Internal("encoder thread panicked".into()))
                .and_then(|r| r);
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[test]
    fn round_trips_through_several_row_groups() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let mut enc = FileEncoder::new(schema.clone(), WriterProperties::default(), 1000).unwrap();
        let mut out = Vec::new();
        for part in 0..5 {
            let ids: Vec<i64> = (part * 700..(part + 1) * 700).collect();
            let names: Vec<Option<String>> = ids
                .iter()
                .map(|i| (i % 7 != 0).then(|| format!("n{i}")))
                .collect();
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(StringArray::from(names)),
                ],
            )
            .unwrap();
            enc.write(&batch).unwrap();
            out.extend(enc.take_bytes());
        }
        out.extend(enc.finish().unwrap());
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(out)).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 4);
        let batches: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
        let all = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        assert_eq!(all.num_rows(), 3500);
        let ids = all.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert!(ids.values().iter().copied().eq(0..3500));
        assert_eq!(all.column(1).null_count(), 500);
    }
}
