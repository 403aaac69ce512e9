//! JSON lines: one object per line, decoded by arrow-json straight into
//! columns. The schema is declared in the job or inferred from a sample.

use super::lines::{Line, decode_all, decode_records, lines};
use super::{Chunk, Parsed, Parser};
use arrow::datatypes::SchemaRef;
use arrow::json::ReaderBuilder;
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

pub struct JsonlParser {
    schema: SchemaRef,
    max_line_bytes: usize,
}

impl JsonlParser {
    pub fn new(schema: SchemaRef, max_line_bytes: usize) -> Self {
        JsonlParser {
            schema,
            max_line_bytes,
        }
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
        let clean = std::str::from_utf8(data).is_ok()
            && records.iter().all(|l| l.range.len() <= self.max_line_bytes);
        if clean && let Ok(batch) = self.decode(data, records.len()) {
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
