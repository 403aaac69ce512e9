//! `format = "regex"`: each named group of the pattern is a column, typed
//! by the job's `schema` (string when not listed). A line the pattern does
//! not match, or a field that does not convert, is a bad record.

use super::lines::{bad, lines, precheck};
use super::typed::{Column, Value, convert};
use super::{Chunk, Parsed, Parser};
use crate::schema::arrow_type;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use sluice_core::config::ColumnType;
use std::sync::Arc;

pub struct RegexParser {
    regex: regex::Regex,
    /// (capture group index, type) per output column.
    columns: Vec<(usize, ColumnType)>,
    schema: SchemaRef,
    max_line_bytes: usize,
    timestamp_format: Option<String>,
}

impl RegexParser {
    pub fn new(
        pattern: &str,
        types: &[(String, ColumnType)],
        max_line_bytes: usize,
        timestamp_format: Option<String>,
    ) -> crate::Result<Self> {
        let regex = regex::Regex::new(pattern)
            .map_err(|e| crate::Error::Config(format!("invalid regex: {e}")))?;
        let mut columns = Vec::new();
        let mut fields = Vec::new();
        for (i, name) in regex.capture_names().enumerate() {
            let Some(name) = name else { continue };
            let ty = types
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| *t)
                .unwrap_or(ColumnType::String);
            columns.push((i, ty));
            fields.push(Field::new(name, arrow_type(ty), true));
        }
        for (name, _) in types {
            if !fields.iter().any(|f| f.name() == name) {
                return Err(crate::Error::Config(format!(
                    "schema names column \"{name}\" but the pattern has no group (?P<{name}>…)"
                )));
            }
        }
        Ok(RegexParser {
            regex,
            columns,
            schema: Arc::new(Schema::new(fields)),
            max_line_bytes,
            timestamp_format,
        })
    }
}

impl Parser for RegexParser {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn parse(&self, chunk: &Chunk) -> crate::Result<Parsed> {
        let all = lines(chunk);
        let mut builders: Vec<Column> = self
            .columns
            .iter()
            .map(|(_, t)| Column::new(*t, all.len()))
            .collect();
        let mut out = Parsed::default();
        let mut locs = self.regex.capture_locations();
        let mut row: Vec<Value<'_>> = Vec::with_capacity(self.columns.len());
        for line in &all {
            let bytes = &chunk.data[line.range.clone()];
            if bytes.is_empty() {
                continue;
            }
            out.records += 1;
            if let Some(problem) = precheck(bytes, self.max_line_bytes) {
                out.bad.push(bad(chunk, line, problem));
                continue;
            }
            let text = std::str::from_utf8(bytes).unwrap_or_default();
            if self.regex.captures_read(&mut locs, text).is_none() {
                out.bad
                    .push(bad(chunk, line, "line does not match the pattern"));
                continue;
            }
            row.clear();
            let mut problem = None;
            for (group, ty) in &self.columns {
                let field = locs.get(*group).map(|(s, e)| &text[s..e]);
                match convert(field, *ty, self.timestamp_format.as_deref()) {
                    Ok(v) => row.push(v),
                    Err(e) => {
                        let name = self.schema.field(row.len()).name();
                        problem = Some(format!("column {name}: {e}"));
                        break;
                    }
                }
            }
            match problem {
                Some(p) => out.bad.push(bad(chunk, line, p)),
                None => {
                    for (b, v) in builders.iter_mut().zip(&row) {
                        b.push(v);
                    }
                }
            }
        }
        let arrays = builders.iter_mut().map(Column::finish).collect();
        out.batches
            .push(RecordBatch::try_new(self.schema.clone(), arrays)?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::Int32Type;
    use bytes::Bytes;

    #[test]
    fn typed_groups_and_bad_lines() {
        let p = RegexParser::new(
            r"^(?P<level>\w+) (?P<code>\d+|x) (?P<at>\S+)$",
            &[
                ("code".into(), ColumnType::Int32),
                ("at".into(), ColumnType::Timestamp),
            ],
            1024,
            None,
        )
        .unwrap();
        let chunk = Chunk {
            file: Arc::from("a.log"),
            first_line: 10,
            data: Bytes::from_static(b"INFO 200 2024-01-01T00:00:00Z\nnope\nWARN x 2024-01-01T00:00:00Z\nERROR 500 2024-01-02T00:00:00+01:00\n"),
        };
        let out = p.parse(&chunk).unwrap();
        let b = &out.batches[0];
        assert_eq!(b.num_rows(), 2);
        assert_eq!(
            b.column(1).as_primitive::<Int32Type>().values().to_vec(),
            vec![200, 500]
        );
        assert_eq!(
            out.bad.iter().map(|b| b.line).collect::<Vec<_>>(),
            vec![11, 12]
        );
        assert!(
            out.bad[1].error.starts_with("column code:"),
            "{}",
            out.bad[1].error
        );
    }
}
