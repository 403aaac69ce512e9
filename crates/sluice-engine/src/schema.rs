//! Arrow types for the column types a job file declares.

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use sluice_core::config::ColumnType;
use std::sync::Arc;

/// Timestamps are microseconds in UTC everywhere in Sluice.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

pub fn arrow_type(t: ColumnType) -> DataType {
    match t {
        ColumnType::String | ColumnType::Json => DataType::Utf8,
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Int8 => DataType::Int8,
        ColumnType::Int16 => DataType::Int16,
        ColumnType::Int32 => DataType::Int32,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::UInt8 => DataType::UInt8,
        ColumnType::UInt16 => DataType::UInt16,
        ColumnType::UInt32 => DataType::UInt32,
        ColumnType::UInt64 => DataType::UInt64,
        ColumnType::Float32 => DataType::Float32,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Date => DataType::Date32,
        ColumnType::Timestamp => timestamp_type(),
    }
}

/// A schema of nullable columns from declared `(name, type)` pairs.
pub fn declared_schema(columns: &[(String, ColumnType)]) -> Arc<Schema> {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, t)| Field::new(name, arrow_type(*t), true))
            .collect::<Vec<_>>(),
    ))
}

/// The column names of `schema`, comma-separated, for error messages.
pub fn column_names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
