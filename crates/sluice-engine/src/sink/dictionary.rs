//! Dictionary encoding pays off for columns with few distinct values
//! (levels, hosts, countries) and costs time on the rest: arrow-rs builds
//! a dictionary for every column and falls back to plain encoding only
//! once the dictionary page is full, in every row group again. So each
//! file's first batch is sampled, and a column whose sample is mostly
//! distinct values (ids, timestamps, messages) is written plain from the
//! start.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use std::collections::HashSet;

/// Rows sampled per column.
const SAMPLE_ROWS: usize = 4096;

/// A column with more distinct values than this share of its sample is
/// written without a dictionary.
const MOSTLY_DISTINCT: f64 = 0.5;

/// `props` with dictionaries turned off for the mostly-distinct columns
/// of `sample`.
pub fn tuned(props: &WriterProperties, sample: &RecordBatch) -> WriterProperties {
    let mut builder = props.clone().into_builder();
    for (field, column) in sample.schema().fields().iter().zip(sample.columns()) {
        if let Some(ratio) = distinct_ratio(column.as_ref())
            && ratio > MOSTLY_DISTINCT
        {
            builder = builder
                .set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
        }
    }
    builder.build()
}

/// The share of distinct values among the first non-null values of a flat
/// column; `None` for a type this does not judge (they keep the default).
fn distinct_ratio(column: &dyn Array) -> Option<f64> {
    let n = column.len().min(SAMPLE_ROWS);
    if n < 64 {
        return None;
    }
    let mut seen: HashSet<u64> = HashSet::with_capacity(n);
    let mut values = 0usize;
    // One hasher state for the whole sample, so equal values hash equal.
    let state = std::collections::hash_map::RandomState::new();
    let hash_with = |bytes: &[u8]| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = state.build_hasher();
        h.write(bytes);
        h.finish()
    };
    match column.data_type() {
        DataType::Utf8 => {
            let a = column.as_string::<i32>();
            for i in (0..n).filter(|i| a.is_valid(*i)) {
                seen.insert(hash_with(a.value(i).as_bytes()));
                values += 1;
            }
        }
        DataType::LargeUtf8 => {
            let a = column.as_string::<i64>();
            for i in (0..n).filter(|i| a.is_valid(*i)) {
                seen.insert(hash_with(a.value(i).as_bytes()));
                values += 1;
            }
        }
        DataType::Utf8View => {
            let a = column.as_string_view();
            for i in (0..n).filter(|i| a.is_valid(*i)) {
                seen.insert(hash_with(a.value(i).as_bytes()));
                values += 1;
            }
        }
        DataType::Binary => {
            let a = column.as_binary::<i32>();
            for i in (0..n).filter(|i| a.is_valid(*i)) {
                seen.insert(hash_with(a.value(i)));
                values += 1;
            }
        }
        dt if dt.is_primitive() => {
            // Fixed-width values: their bytes are the value.
            let data = column.to_data();
            let width = dt.primitive_width()?;
            let buffer = data.buffers().first()?;
            let bytes = &buffer.as_slice()[data.offset() * width..];
            for i in (0..n).filter(|i| column.is_valid(*i)) {
                seen.insert(hash_with(&bytes[i * width..(i + 1) * width]));
                values += 1;
            }
        }
        _ => return None,
    }
    (values >= 64).then(|| seen.len() as f64 / values as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use parquet::file::properties::EnabledStatistics;
    use std::sync::Arc;

    #[test]
    fn distinct_columns_lose_their_dictionary() {
        let ids = Int64Array::from_iter_values(0..1000);
        let levels = StringArray::from_iter_values((0..1000).map(|i| ["info", "warn"][i % 2]));
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("level", DataType::Utf8, false),
        ]);
        let batch =
            RecordBatch::try_new(Arc::new(schema), vec![Arc::new(ids), Arc::new(levels)]).unwrap();
        let props = WriterProperties::builder()
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .build();
        let tuned = tuned(&props, &batch);
        assert!(!tuned.dictionary_enabled(&ColumnPath::from("id")));
        assert!(tuned.dictionary_enabled(&ColumnPath::from("level")));
        // The rest of the properties are kept.
        assert_eq!(
            tuned.statistics_enabled(&ColumnPath::from("level")),
            EnabledStatistics::Chunk
        );
    }
}
