//! Builds typed Arrow columns from text fields, for formats whose fields
//! arrive as strings (regex). A row is converted whole before any column is
//! appended to, so a bad field never leaves a row half-written. The JSON
//! fast path appends to the same columns directly (a chunk with a bad
//! line is dropped whole there).

use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder, Int8Builder,
    Int16Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
    UInt8Builder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::DataType;
use sluice_core::config::ColumnType;
use std::sync::Arc;

/// A converted field.
pub enum Value<'a> {
    Null,
    Str(&'a str),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Micros(i64),
    Days(i32),
}

/// Converts `text` to `ty`; an empty field is NULL.
pub fn convert<'a>(
    text: Option<&'a str>,
    ty: ColumnType,
    ts_format: Option<&str>,
) -> Result<Value<'a>, String> {
    let Some(t) = text else {
        return Ok(Value::Null);
    };
    if t.is_empty() && ty != ColumnType::String {
        return Ok(Value::Null);
    }
    let bad = || format!("\"{t}\" is not a valid {ty}");
    Ok(match ty {
        ColumnType::String | ColumnType::Json => Value::Str(t),
        ColumnType::Int8 | ColumnType::Int16 | ColumnType::Int32 | ColumnType::Int64 => {
            let v: i64 = t.parse().map_err(|_| bad())?;
            let fits = match ty {
                ColumnType::Int8 => i8::try_from(v).is_ok(),
                ColumnType::Int16 => i16::try_from(v).is_ok(),
                ColumnType::Int32 => i32::try_from(v).is_ok(),
                _ => true,
            };
            if !fits {
                return Err(format!("{v} is out of range for {ty}"));
            }
            Value::Int(v)
        }
        ColumnType::UInt8 | ColumnType::UInt16 | ColumnType::UInt32 | ColumnType::UInt64 => {
            let v: u64 = t.parse().map_err(|_| bad())?;
            let fits = match ty {
                ColumnType::UInt8 => u8::try_from(v).is_ok(),
                ColumnType::UInt16 => u16::try_from(v).is_ok(),
                ColumnType::UInt32 => u32::try_from(v).is_ok(),
                _ => true,
            };
            if !fits {
                return Err(format!("{v} is out of range for {ty}"));
            }
            Value::UInt(v)
        }
        ColumnType::Float32 | ColumnType::Float64 => Value::Float(t.parse().map_err(|_| bad())?),
        ColumnType::Bool => Value::Bool(match t.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" => true,
            "false" | "f" | "0" | "no" => false,
            _ => return Err(bad()),
        }),
        ColumnType::Date => {
            let d = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d").map_err(|_| bad())?;
            Value::Days(
                d.signed_duration_since(chrono::NaiveDate::default())
                    .num_days() as i32,
            )
        }
        ColumnType::Timestamp => {
            Value::Micros(
                parse_timestamp(t, ts_format).ok_or_else(|| match ts_format {
                    Some(f) => format!("\"{t}\" does not match timestamp_format \"{f}\""),
                    None => format!("\"{t}\" is not an RFC 3339 timestamp"),
                })?,
            )
        }
    })
}

fn parse_timestamp(t: &str, format: Option<&str>) -> Option<i64> {
    let utc = match format {
        None => chrono::DateTime::parse_from_rfc3339(t).ok()?.to_utc(),
        Some(f) => match chrono::DateTime::parse_from_str(t, f) {
            Ok(dt) => dt.to_utc(),
            // A format without an offset means UTC.
            Err(_) => chrono::NaiveDateTime::parse_from_str(t, f).ok()?.and_utc(),
        },
    };
    Some(utc.timestamp_micros())
}

/// One column under construction.
pub enum Column {
    Str(StringBuilder),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
}

impl Column {
    pub fn new(ty: ColumnType, rows: usize) -> Column {
        match ty {
            ColumnType::String | ColumnType::Json => {
                Column::Str(StringBuilder::with_capacity(rows, rows * 16))
            }
            ColumnType::Int8 => Column::I8(Int8Builder::with_capacity(rows)),
            ColumnType::Int16 => Column::I16(Int16Builder::with_capacity(rows)),
            ColumnType::Int32 => Column::I32(Int32Builder::with_capacity(rows)),
            ColumnType::Int64 => Column::I64(Int64Builder::with_capacity(rows)),
            ColumnType::UInt8 => Column::U8(UInt8Builder::with_capacity(rows)),
            ColumnType::UInt16 => Column::U16(UInt16Builder::with_capacity(rows)),
            ColumnType::UInt32 => Column::U32(UInt32Builder::with_capacity(rows)),
            ColumnType::UInt64 => Column::U64(UInt64Builder::with_capacity(rows)),
            ColumnType::Float32 => Column::F32(Float32Builder::with_capacity(rows)),
            ColumnType::Float64 => Column::F64(Float64Builder::with_capacity(rows)),
            ColumnType::Bool => Column::Bool(BooleanBuilder::with_capacity(rows)),
            ColumnType::Date => Column::Date(Date32Builder::with_capacity(rows)),
            ColumnType::Timestamp => {
                Column::Ts(TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"))
            }
        }
    }

    /// A column for an Arrow type that a declared column type gives, with
    /// room for `rows` values and `bytes` of text; `None` for other types.
    pub fn for_arrow(t: &DataType, rows: usize, bytes: usize) -> Option<Column> {
        Some(match t {
            DataType::Utf8 => Column::Str(StringBuilder::with_capacity(rows, bytes)),
            DataType::Int8 => Column::I8(Int8Builder::with_capacity(rows)),
            DataType::Int16 => Column::I16(Int16Builder::with_capacity(rows)),
            DataType::Int32 => Column::I32(Int32Builder::with_capacity(rows)),
            DataType::Int64 => Column::I64(Int64Builder::with_capacity(rows)),
            DataType::UInt8 => Column::U8(UInt8Builder::with_capacity(rows)),
            DataType::UInt16 => Column::U16(UInt16Builder::with_capacity(rows)),
            DataType::UInt32 => Column::U32(UInt32Builder::with_capacity(rows)),
            DataType::UInt64 => Column::U64(UInt64Builder::with_capacity(rows)),
            DataType::Float32 => Column::F32(Float32Builder::with_capacity(rows)),
            DataType::Float64 => Column::F64(Float64Builder::with_capacity(rows)),
            DataType::Boolean => Column::Bool(BooleanBuilder::with_capacity(rows)),
            DataType::Date32 => Column::Date(Date32Builder::with_capacity(rows)),
            t if *t == crate::schema::timestamp_type() => {
                Column::Ts(TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"))
            }
            _ => return None,
        })
    }

    /// Appends a value converted for this column's type.
    pub fn push(&mut self, v: &Value<'_>) {
        macro_rules! opt {
            ($b:expr, $val:expr) => {
                match $val {
                    Some(x) => $b.append_value(x),
                    None => $b.append_null(),
                }
            };
        }
        let int = match v {
            Value::Int(i) => Some(*i),
            Value::UInt(u) => Some(*u as i64),
            _ => None,
        };
        let uint = match v {
            Value::UInt(u) => Some(*u),
            _ => None,
        };
        match self {
            Column::Str(b) => opt!(
                b,
                if let Value::Str(s) = v {
                    Some(*s)
                } else {
                    None
                }
            ),
            Column::I8(b) => opt!(b, int.map(|i| i as i8)),
            Column::I16(b) => opt!(b, int.map(|i| i as i16)),
            Column::I32(b) => opt!(b, int.map(|i| i as i32)),
            Column::I64(b) => opt!(b, int),
            Column::U8(b) => opt!(b, uint.map(|i| i as u8)),
            Column::U16(b) => opt!(b, uint.map(|i| i as u16)),
            Column::U32(b) => opt!(b, uint.map(|i| i as u32)),
            Column::U64(b) => opt!(b, uint),
            Column::F32(b) => opt!(
                b,
                if let Value::Float(f) = v {
                    Some(*f as f32)
                } else {
                    None
                }
            ),
            Column::F64(b) => opt!(
                b,
                if let Value::Float(f) = v {
                    Some(*f)
                } else {
                    None
                }
            ),
            Column::Bool(b) => opt!(
                b,
                if let Value::Bool(x) = v {
                    Some(*x)
                } else {
                    None
                }
            ),
            Column::Date(b) => opt!(
                b,
                if let Value::Days(d) = v {
                    Some(*d)
                } else {
                    None
                }
            ),
            Column::Ts(b) => opt!(
                b,
                if let Value::Micros(m) = v {
                    Some(*m)
                } else {
                    None
                }
            ),
        }
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Str(b) => Arc::new(b.finish()),
            Column::I8(b) => Arc::new(b.finish()),
            Column::I16(b) => Arc::new(b.finish()),
            Column::I32(b) => Arc::new(b.finish()),
            Column::I64(b) => Arc::new(b.finish()),
            Column::U8(b) => Arc::new(b.finish()),
            Column::U16(b) => Arc::new(b.finish()),
            Column::U32(b) => Arc::new(b.finish()),
            Column::U64(b) => Arc::new(b.finish()),
            Column::F32(b) => Arc::new(b.finish()),
            Column::F64(b) => Arc::new(b.finish()),
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Date(b) => Arc::new(b.finish()),
            Column::Ts(b) => Arc::new(b.finish()),
        }
    }
}
