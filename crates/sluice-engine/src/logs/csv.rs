//! CSV with a header row, decoded by arrow-csv. Quoted fields may hold
//! newlines; records are cut at newlines outside quotes.

use super::lines::{Line, decode_all, decode_records};
use super::{Chunk, Parsed, Parser};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

pub struct CsvParser {
    schema: SchemaRef,
    delimiter: u8,
    header: bool,
    max_line_bytes: usize,
}

impl CsvParser {
    pub fn new(schema: SchemaRef, delimiter: u8, header: bool, max_line_bytes: usize) -> Self {
        CsvParser {
            schema,
            delimiter,
            header,
            max_line_bytes,
        }
    }

    fn decode(&self, data: &[u8], rows: usize) -> Result<Option<RecordBatch>, String> {
        let decoder = arrow::csv::ReaderBuilder::new(self.schema.clone())
            .with_header(false)
            .with_delimiter(self.delimiter)
            .with_batch_size(rows.max(1))
            .build_decoder();
        decode_all(decoder, data, &self.schema)
    }
}

/// Records of a chunk: cut at newlines outside double quotes.
fn records(chunk: &Chunk) -> Vec<Line> {
    let data = &chunk.data[..];
    let mut out = Vec::new();
    let mut in_quotes = false;
    let mut start = 0;
    let mut number = chunk.first_line;
    let mut start_number = number;
    for i in memchr::memchr2_iter(b'"', b'\n', data) {
        if data[i] == b'"' {
            in_quotes = !in_quotes;
            continue;
        }
        number += 1;
        if in_quotes {
            continue;
        }
        let end = if i > start && data[i - 1] == b'\r' {
            i - 1
        } else {
            i
        };
        out.push(Line {
            number: start_number,
            range: start..end,
        });
        start = i + 1;
        start_number = number;
    }
    if start < data.len() {
        out.push(Line {
            number: start_number,
            range: start..data.len(),
        });
    }
    out
}

impl Parser for CsvParser {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn parse(&self, chunk: &Chunk) -> crate::Result<Parsed> {
        let mut all = records(chunk);
        if self.header && chunk.first_line == 1 && !all.is_empty() {
            let header = all.remove(0);
            let names: Vec<String> = String::from_utf8_lossy(&chunk.data[header.range.clone()])
                .split(self.delimiter as char)
                .map(|s| s.trim().trim_matches('"').to_string())
                .collect();
            let expected: Vec<&String> = self.schema.fields().iter().map(|f| f.name()).collect();
            if names.iter().collect::<Vec<_>>() != expected {
                return Err(crate::Error::BadRecord {
                    file: chunk.file.to_string(),
                    line: 1,
                    message: format!(
                        "header has columns {} but the schema has {}",
                        names.join(","),
                        expected
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                });
            }
        }
        Ok(decode_records(chunk, all, self.max_line_bytes, &|d, n| {
            self.decode(d, n)
        }))
    }
}

/// Infers column names (from the header) and types (from a sample).
pub fn infer_schema(sample: &[u8], delimiter: u8, header: bool) -> crate::Result<SchemaRef> {
    let format = arrow::csv::reader::Format::default()
        .with_header(header)
        .with_delimiter(delimiter);
    let (schema, _) = format.infer_schema(std::io::Cursor::new(sample), Some(1000))?;
    Ok(Arc::new(schema))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use bytes::Bytes;

    #[test]
    fn quoted_newlines_and_bad_rows() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("note", DataType::Utf8, true),
        ]));
        let p = CsvParser::new(schema, b',', true, 1 << 20);
        let chunk = Chunk {
            file: Arc::from("x.csv"),
            first_line: 1,
            data: Bytes::from_static(b"id,note\n1,\"two\nlines\"\nx,bad\n3,ok\n"),
        };
        let out = p.parse(&chunk).unwrap();
        let ids: Vec<i64> = out
            .batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(ids, vec![1, 3]);
        assert_eq!(out.bad.len(), 1);
        assert_eq!(out.bad[0].line, 4);
        assert_eq!(out.records, 3);
    }
}
