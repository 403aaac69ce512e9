//! JSON lines: one object per line, decoded by arrow-json straight into
//! columns. The schema is declared in the job or inferred from a sample.

use super::flat_json::FlatJson;
use super::lines::{Line, decode_all, decode_records, lines};
use super::{Chunk, Parsed, Parser};
use arrow::datatypes::SchemaRef;
use arrow::json::ReaderBuilder;
use arrow::json::reader::Decoder;
use arrow::record_batch::RecordBatch;
use std::sync::{Arc, Mutex};

pub struct JsonlParser {
    schema: SchemaRef,
    max_line_bytes: usize,
    /// The fast path for flat objects of scalar columns, when the schema
    /// has only such columns.
    flat: Option<FlatJson>,
    /// Decoders that parsed a chunk cleanly, for the next chunks: a
    /// decoder keeps its tape buffers, which a new one would grow again
    /// (and copy) from empty for every chunk.
    decoders: Mutex<Vec<Decoder>>,
}

/// Rows a pooled decoder takes before it flushes: more than a chunk holds,
/// so a clean chunk is one batch.
const POOLED_BATCH_ROWS: usize = 1 << 17;

impl JsonlParser {
    pub fn new(schema: SchemaRef, max_line_bytes: usize) -> Self {
        JsonlParser {
            flat: FlatJson::new(schema.clone()),
            schema,
            max_line_bytes,
            decoders: Mutex::new(Vec::new()),
        }
    }

    /// Decodes a chunk expected to be clean with a pooled decoder. A
    /// decoder that met an error is dropped, not pooled.
    fn decode_pooled(&self, data: &[u8]) -> Result<Option<RecordBatch>, String> {
        let pooled = self.decoders.lock().ok().and_then(|mut v| v.pop());
        let mut decoder = match pooled {
            Some(d) => d,
            None => ReaderBuilder::new(self.schema.clone())
                .with_batch_size(POOLED_BATCH_ROWS)
                .build_decoder()
                .map_err(|e| e.to_string())?,
        };
        let result = decode_all(&mut decoder, data, &self.schema);
        if result.is_ok()
            && let Ok(mut v) = self.decoders.lock()
        {
            v.push(decoder);
        }
        result
    }

    fn decode(&self, data: &[u8], rows: usize) -> Result<Option<RecordBatch>, String> {
        let decoder = ReaderBuilder::new(self.schema.clone())
            .with_batch_size(rows.max(1))
            .build_decoder()
            .map_err(|e| e.to_string())?;
        decode_all(decoder, data, &self.schema)
    }
}

impl Parser for JsonlParser {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn parse(&self, chunk: &Chunk) -> crate::Result<Parsed> {
        let all = lines(chunk);
        let data = &chunk.data[..];
        let records: Vec<&Line> = all.iter().filter(|l| !l.range.is_empty()).collect();
        let text = std::str::from_utf8(data).ok();
        let clean = text.is_some() && records.iter().all(|l| l.range.len() <= self.max_line_bytes);
        if clean
            && let (Some(flat), Some(text)) = (&self.flat, text)
            && let Some(batch) = flat.decode(text, &records)
        {
            return Ok(Parsed {
                records: batch.num_rows() as u64,
                batches: vec![batch],
                bad: Vec::new(),
            });
        }
        if clean && let Ok(batch) = self.decode_pooled(data) {
            let rows = batch.as_ref().map_or(0, RecordBatch::num_rows);
            if rows == records.len() {
                return Ok(Parsed {
                    batches: batch.into_iter().collect(),
                    bad: Vec::new(),
                    records: rows as u64,
                });
            }
        }
        // Some record is bad: find it without losing the others.
        Ok(decode_records(chunk, all, self.max_line_bytes, &|d, n| {
            self.decode(d, n)
        }))
    }
}

/// Infers a schema from the good lines of a sample; bad lines are ignored
/// here and reported when the data is parsed.
pub fn infer_schema(sample: &[u8]) -> crate::Result<SchemaRef> {
    let values: Vec<serde_json::Value> = sample
        .split(|b| *b == b'\n')
        .take(1000)
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .filter(serde_json::Value::is_object)
        .collect();
    let schema = arrow::json::reader::infer_json_schema_from_iterator(values.iter().map(Ok))?;
    Ok(Arc::new(schema))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use bytes::Bytes;

    fn chunk(text: &[u8]) -> Chunk {
        Chunk {
            file: Arc::from("app.jsonl"),
            first_line: 1,
            data: Bytes::copy_from_slice(text),
        }
    }

    fn parser() -> JsonlParser {
        let schema = Schema::new(vec![
            Field::new("ts", crate::schema::timestamp_type(), true),
            Field::new("n", DataType::Int64, true),
        ]);
        JsonlParser::new(Arc::new(schema), 64)
    }

    #[test]
    fn clean_chunk_is_one_batch() {
        let p = parser()
            .parse(&chunk(
                b"{\"ts\":\"2024-01-01T00:00:00Z\",\"n\":1}\n\n{\"n\":2}\n",
            ))
            .unwrap();
        assert_eq!(p.batches.len(), 1);
        assert_eq!(p.records, 2);
        assert!(p.bad.is_empty());
        assert_eq!(
            p.batches[0].column(1).as_primitive::<Int64Type>().value(1),
            2
        );
        assert!(p.batches[0].column(0).is_null(1));
    }

    #[test]
    fn bad_lines_are_isolated() {
        let mut text = b"{\"n\":1}\n{\"n\":2\n{\"ts\":\"yesterday\",\"n\":3}\n{\"n\":4}\n".to_vec();
        text.extend_from_slice(b"{\"n\":\xff}\n");
        text.extend_from_slice(format!("{{\"n\":5,\"pad\":\"{}\"}}\n", "x".repeat(80)).as_bytes());
        text.extend_from_slice(b"{\"n\":6}\n");
        let p = parser().parse(&chunk(&text)).unwrap();
        let good: Vec<i64> = p
            .batches
            .iter()
            .flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(good, vec![1, 4, 6]);
        let bad: Vec<u64> = p.bad.iter().map(|b| b.line).collect();
        assert_eq!(bad, vec![2, 3, 5, 6]);
        assert!(
            p.bad[2].error.contains("invalid UTF-8"),
            "{}",
            p.bad[2].error
        );
        assert!(
            p.bad[3].error.contains("max_line_bytes"),
            "{}",
            p.bad[3].error
        );
        assert_eq!(p.records, 7);
    }
}
