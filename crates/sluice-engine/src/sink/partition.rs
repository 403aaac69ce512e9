//! Hive-style partitioning: rows are grouped by the values of the
//! `partition_by` columns into `col=value/` folders, and those columns are
//! left out of the files (readers restore them from the path).

use crate::error::{Error, Result};
use arrow::array::{Array, ArrayRef, StringArray, UInt32Array};
use arrow::compute::{cast, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use indexmap::IndexMap;

/// The folder name Hive uses for a NULL partition value.
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Splits `batch` by the values of `columns`: `(folder, rows without the
/// partition columns)`, in order of first appearance.
pub fn split(
    batch: &RecordBatch,
    columns: &[String],
    data_schema: &SchemaRef,
) -> Result<Vec<(String, RecordBatch)>> {
    let mut texts: Vec<StringArray> = Vec::with_capacity(columns.len());
    for name in columns {
        let col = batch.column_by_name(name).ok_or_else(|| {
            Error::Config(format!("partition_by column \"{name}\" is not in the data"))
        })?;
        let as_text: ArrayRef = cast(col, &DataType::Utf8)?;
        let strings = as_text
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::Internal("cast to Utf8 gave another type".into()))?
            .clone();
        texts.push(strings);
    }
    let mut groups: IndexMap<String, Vec<u32>> = IndexMap::new();
    let mut key = String::new();
    for row in 0..batch.num_rows() {
        key.clear();
        for (name, values) in columns.iter().zip(&texts) {
            if !key.is_empty() {
                key.push('/');
            }
            key.push_str(name);
            key.push('=');
            if values.is_null(row) {
                key.push_str(NULL_PARTITION);
            } else {
                escape_into(values.value(row), &mut key);
            }
        }
        match groups.get_mut(key.as_str()) {
            Some(rows) => rows.push(row as u32),
            None => {
                groups.insert(key.clone(), vec![row as u32]);
            }
        }
    }
    let keep: Vec<usize> = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| !columns.contains(f.name()))
        .map(|(i, _)| i)
        .collect();
    let data = batch.project(&keep)?;
    let data = RecordBatch::try_new(data_schema.clone(), data.columns().to_vec())?;
    let mut out = Vec::with_capacity(groups.len());
    if groups.len() == 1 {
        let (folder, _) = groups.into_iter().next().expect("one group");
        out.push((folder, data));
        return Ok(out);
    }
    for (folder, rows) in groups {
        let indices = UInt32Array::from(rows);
        out.push((folder, take_record_batch(&data, &indices)?));
    }
    Ok(out)
}

/// Percent-escapes the characters Hive escapes in partition values.
fn escape_into(value: &str, out: &mut String) {
    for c in value.chars() {
        if c.is_control() || "\"#%'*/:=?\\{[]^".contains(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn groups_rows_by_value() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("dt", DataType::Utf8, true),
            Field::new("n", DataType::Int32, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some("2024-01-01"),
                    Some("a/b"),
                    Some("2024-01-01"),
                    None,
                ])),
                Arc::new(Int32Array::from(vec![1, 2, 3, 4])),
            ],
        )
        .unwrap();
        let data_schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, false)]));
        let parts = split(&batch, &["dt".to_string()], &data_schema).unwrap();
        let folders: Vec<&str> = parts.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            folders,
            vec!["dt=2024-01-01", "dt=a%2Fb", "dt=__HIVE_DEFAULT_PARTITION__"]
        );
        assert_eq!(parts[0].1.num_rows(), 2);
        assert_eq!(parts[0].1.num_columns(), 1);
    }
}
