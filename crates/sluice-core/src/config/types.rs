//! Column types a job file may declare for log formats (`schema`, `types`).
//! They are named like SQL users expect and mapped to Arrow by the engine.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    String,
    Bool,
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float32,
    Float64,
    Date,
    /// Microseconds since the epoch, UTC.
    Timestamp,
    /// An arbitrary JSON value kept as its text.
    Json,
}

pub const TYPE_NAMES: &[&str] = &[
    "string",
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float32",
    "float64",
    "date",
    "timestamp",
    "json",
];

impl FromStr for ColumnType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "string" | "text" | "varchar" | "utf8" => ColumnType::String,
            "bool" | "boolean" => ColumnType::Bool,
            "int8" | "tinyint" => ColumnType::Int8,
            "int16" | "smallint" => ColumnType::Int16,
            "int32" | "int" | "integer" => ColumnType::Int32,
            "int64" | "bigint" | "long" => ColumnType::Int64,
            "uint8" => ColumnType::UInt8,
            "uint16" => ColumnType::UInt16,
            "uint32" => ColumnType::UInt32,
            "uint64" => ColumnType::UInt64,
            "float32" | "float" | "real" => ColumnType::Float32,
            "float64" | "double" => ColumnType::Float64,
            "date" => ColumnType::Date,
            "timestamp" | "timestamptz" | "datetime" => ColumnType::Timestamp,
            "json" => ColumnType::Json,
            other => {
                return Err(format!(
                    "unknown type \"{other}\"; expected one of {}",
                    TYPE_NAMES.join(", ")
                ));
            }
        })
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ColumnType::String => "string",
            ColumnType::Bool => "bool",
            ColumnType::Int8 => "int8",
            ColumnType::Int16 => "int16",
            ColumnType::Int32 => "int32",
            ColumnType::Int64 => "int64",
            ColumnType::UInt8 => "uint8",
            ColumnType::UInt16 => "uint16",
            ColumnType::UInt32 => "uint32",
            ColumnType::UInt64 => "uint64",
            ColumnType::Float32 => "float32",
            ColumnType::Float64 => "float64",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Json => "json",
        };
        f.write_str(name)
    }
}
