//! Columns filled from values in text form, as MySQL's text protocol sends
//! them: each value is parsed into its Arrow type, and one that does not
//! parse is an error naming what it was, never a NULL or a rounded value.

use arrow::array::RecordBatch;
use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Decimal256Builder,
    Float32Builder, Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder,
    StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder, UInt8Builder,
    UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow::compute::kernels::cast_utils::parse_decimal;
use arrow::datatypes::{DataType, Decimal128Type, Decimal256Type, SchemaRef, TimeUnit};
use chrono::{NaiveDate, NaiveDateTime};
use std::sync::Arc;

/// An Arrow type a text value is parsed into.
#[derive(Debug, Clone, PartialEq)]
pub enum TextType {
    /// Integers stored as 0 or 1 (MySQL's `tinyint(1)`, `bool`).
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
    Decimal {
        precision: u8,
        scale: i8,
    },
    Utf8,
    Binary,
    /// `bit(n)`: big-endian bytes, read as an unsigned number.
    Bits,
    Date,
    /// A time of day; values outside 00:00–24:00 are errors.
    Time,
    /// `YYYY-MM-DD HH:MM:SS[.ffffff]`, with `utc` when the database stores
    /// an instant (and sends it in UTC).
    Timestamp {
        utc: bool,
    },
}

impl TextType {
    pub fn arrow_type(&self) -> DataType {
        match self {
            TextType::Bool => DataType::Boolean,
            TextType::Int8 => DataType::Int8,
            TextType::Int16 => DataType::Int16,
            TextType::Int32 => DataType::Int32,
            TextType::Int64 => DataType::Int64,
            TextType::UInt8 => DataType::UInt8,
            TextType::UInt16 => DataType::UInt16,
            TextType::UInt32 => DataType::UInt32,
            TextType::UInt64 | TextType::Bits => DataType::UInt64,
            TextType::Float32 => DataType::Float32,
            TextType::Float64 => DataType::Float64,
            TextType::Decimal { precision, scale } if *precision <= 38 => {
                DataType::Decimal128(*precision, *scale)
            }
            TextType::Decimal { precision, scale } => DataType::Decimal256(*precision, *scale),
            TextType::Utf8 => DataType::Utf8,
            TextType::Binary => DataType::Binary,
            TextType::Date => DataType::Date32,
            TextType::Time => DataType::Time64(TimeUnit::Microsecond),
            TextType::Timestamp { utc: false } => DataType::Timestamp(TimeUnit::Microsecond, None),
            TextType::Timestamp { utc: true } => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
        }
    }
}

pub enum TextColumn {
    Bool(BooleanBuilder),
    Int8(Int8Builder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    UInt8(UInt8Builder),
    UInt16(UInt16Builder),
    UInt32(UInt32Builder),
    UInt64(UInt64Builder),
    Bits(UInt64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Dec128(Decimal128Builder, u8, i8),
    Dec256(Decimal256Builder, u8, i8),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder, bool),
}

/// Rows parsed into [`TextColumn`]s and cut into batches of `batch_size`,
/// for the readers that get values as text (MySQL, SQLite).
pub struct TextBatches {
    schema: SchemaRef,
    columns: Vec<TextColumn>,
    batch_size: usize,
    in_batch: usize,
    /// Value bytes in the batch being built, and the most it may take
    /// before it ends early (see [`super::MAX_BATCH_BYTES`]).
    bytes: usize,
    max_bytes: usize,
    /// Rows ended so far; errors name the row after them.
    rows: u64,
    /// Batches made so far.
    made: usize,
}

impl TextBatches {
    pub fn new(schema: SchemaRef, types: &[TextType], batch_size: usize) -> Self {
        TextBatches {
            schema,
            columns: types
                .iter()
                .map(|t| TextColumn::new(t, batch_size))
                .collect(),
            batch_size,
            in_batch: 0,
            bytes: 0,
            max_bytes: super::MAX_BATCH_BYTES,
            rows: 0,
            made: 0,
        }
    }

    /// Ends batches once their values take `max_bytes` (for tests).
    #[cfg(test)]
    fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// An error about column `col` of the row being read.
    pub fn row_error(&self, col: usize, message: &str) -> String {
        format!(
            "row {}, column {}: {message}",
            self.rows + 1,
            self.schema.field(col).name()
        )
    }

    /// Appends the current row's value of column `col`.
    pub fn append(&mut self, col: usize, value: Option<&[u8]>) -> Result<(), String> {
        self.bytes += value.map_or(0, <[u8]>::len);
        match self.columns[col].append(value) {
            Ok(()) => Ok(()),
            Err(m) => Err(self.row_error(col, &m)),
        }
    }

    /// Ends the current row; returns a batch when one is full.
    pub fn end_row(&mut self) -> Result<Option<RecordBatch>, String> {
        self.rows += 1;
        self.in_batch += 1;
        if self.in_batch < self.batch_size && self.bytes < self.max_bytes {
            return Ok(None);
        }
        self.take().map(Some)
    }

    /// The rows of a batch that did not fill up, if any.
    pub fn rest(&mut self) -> Result<Option<RecordBatch>, String> {
        if self.in_batch == 0 {
            return Ok(None);
        }
        self.take().map(Some)
    }

    fn take(&mut self) -> Result<RecordBatch, String> {
        #[cfg(test)]
        crate::producers::injected_panic(&self.schema, self.made);
        self.made += 1;
        self.in_batch = 0;
        self.bytes = 0;
        let arrays = self
            .columns
            .iter_mut()
            .map(TextColumn::finish)
            .collect::<Result<Vec<_>, _>>()?;
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| e.to_string())
    }
}

fn text(v: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(v).map_err(|e| format!("invalid UTF-8: {e}"))
}

fn number<T: std::str::FromStr>(v: &[u8], what: &str) -> Result<T, String> {
    let s = text(v)?;
    s.parse()
        .map_err(|_| format!("\"{s}\" is not a valid {what}"))
}

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");

impl TextColumn {
    pub fn new(ty: &TextType, capacity: usize) -> TextColumn {
        match ty {
            TextType::Bool => TextColumn::Bool(BooleanBuilder::with_capacity(capacity)),
            TextType::Int8 => TextColumn::Int8(Int8Builder::with_capacity(capacity)),
            TextType::Int16 => TextColumn::Int16(Int16Builder::with_capacity(capacity)),
            TextType::Int32 => TextColumn::Int32(Int32Builder::with_capacity(capacity)),
            TextType::Int64 => TextColumn::Int64(Int64Builder::with_capacity(capacity)),
            TextType::UInt8 => TextColumn::UInt8(UInt8Builder::with_capacity(capacity)),
            TextType::UInt16 => TextColumn::UInt16(UInt16Builder::with_capacity(capacity)),
            TextType::UInt32 => TextColumn::UInt32(UInt32Builder::with_capacity(capacity)),
            TextType::UInt64 => TextColumn::UInt64(UInt64Builder::with_capacity(capacity)),
            TextType::Bits => TextColumn::Bits(UInt64Builder::with_capacity(capacity)),
            TextType::Float32 => TextColumn::Float32(Float32Builder::with_capacity(capacity)),
            TextType::Float64 => TextColumn::Float64(Float64Builder::with_capacity(capacity)),
            TextType::Decimal { precision, scale } if *precision <= 38 => TextColumn::Dec128(
                Decimal128Builder::with_capacity(capacity),
                *precision,
                *scale,
            ),
            TextType::Decimal { precision, scale } => TextColumn::Dec256(
                Decimal256Builder::with_capacity(capacity),
                *precision,
                *scale,
            ),
            TextType::Utf8 => {
                TextColumn::Utf8(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            TextType::Binary => {
                TextColumn::Binary(BinaryBuilder::with_capacity(capacity, capacity * 16))
            }
            TextType::Date => TextColumn::Date(Date32Builder::with_capacity(capacity)),
            TextType::Time => TextColumn::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            TextType::Timestamp { utc } => {
                TextColumn::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity), *utc)
            }
        }
    }

    pub fn append(&mut self, value: Option<&[u8]>) -> Result<(), String> {
        let Some(v) = value else {
            self.append_null();
            return Ok(());
        };
        match self {
            TextColumn::Bool(b) => match v {
                b"0" => b.append_value(false),
                b"1" => b.append_value(true),
                other => {
                    return Err(format!(
                        "{} is not 0 or 1, so the column is not a boolean; cast it in the query, e.g. CAST(x AS SIGNED)",
                        String::from_utf8_lossy(other)
                    ));
                }
            },
            TextColumn::Int8(b) => b.append_value(number(v, "tinyint")?),
            TextColumn::Int16(b) => b.append_value(number(v, "smallint")?),
            TextColumn::Int32(b) => b.append_value(number(v, "integer")?),
            TextColumn::Int64(b) => b.append_value(number(v, "bigint")?),
            TextColumn::UInt8(b) => b.append_value(number(v, "unsigned tinyint")?),
            TextColumn::UInt16(b) => b.append_value(number(v, "unsigned smallint")?),
            TextColumn::UInt32(b) => b.append_value(number(v, "unsigned integer")?),
            TextColumn::UInt64(b) => b.append_value(number(v, "unsigned bigint")?),
            TextColumn::Bits(b) => {
                if v.len() > 8 {
                    return Err(format!("bit value of {} bytes", v.len()));
                }
                b.append_value(v.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)));
            }
            TextColumn::Float32(b) => b.append_value(number(v, "float")?),
            TextColumn::Float64(b) => b.append_value(number(v, "double")?),
            TextColumn::Dec128(b, p, s) => {
                let (precision, scale) = (*p, *s);
                let n = decimal_text(text(v)?, precision, scale, |t| {
                    parse_decimal::<Decimal128Type>(t, precision, scale)
                })?;
                b.append_value(n);
            }
            TextColumn::Dec256(b, p, s) => {
                let (precision, scale) = (*p, *s);
                let n = decimal_text(text(v)?, precision, scale, |t| {
                    parse_decimal::<Decimal256Type>(t, precision, scale)
                })?;
                b.append_value(n);
            }
            TextColumn::Utf8(b) => b.append_value(text(v)?),
            TextColumn::Binary(b) => b.append_value(v),
            TextColumn::Date(b) => {
                let s = text(v)?;
                let d = NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .map_err(|_| format!("\"{s}\" is not a date Arrow can hold"))?;
                b.append_value((d - EPOCH).num_days() as i32);
            }
            TextColumn::Time(b) => b.append_value(time_of_day(text(v)?)?),
            TextColumn::Timestamp(b, _) => {
                let s = text(v)?;
                // `2026-01-01 10:00:00`, or ISO 8601's `T` and a `Z` (UTC).
                let plain = s.strip_suffix('Z').unwrap_or(s).replacen('T', " ", 1);
                let t = NaiveDateTime::parse_from_str(&plain, "%Y-%m-%d %H:%M:%S%.f")
                    .map_err(|_| format!("\"{s}\" is not a timestamp Arrow can hold"))?;
                b.append_value(t.and_utc().timestamp_micros());
            }
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            TextColumn::Bool(b) => b.append_null(),
            TextColumn::Int8(b) => b.append_null(),
            TextColumn::Int16(b) => b.append_null(),
            TextColumn::Int32(b) => b.append_null(),
            TextColumn::Int64(b) => b.append_null(),
            TextColumn::UInt8(b) => b.append_null(),
            TextColumn::UInt16(b) => b.append_null(),
            TextColumn::UInt32(b) => b.append_null(),
            TextColumn::UInt64(b) | TextColumn::Bits(b) => b.append_null(),
            TextColumn::Float32(b) => b.append_null(),
            TextColumn::Float64(b) => b.append_null(),
            TextColumn::Dec128(b, ..) => b.append_null(),
            TextColumn::Dec256(b, ..) => b.append_null(),
            TextColumn::Utf8(b) => b.append_null(),
            TextColumn::Binary(b) => b.append_null(),
            TextColumn::Date(b) => b.append_null(),
            TextColumn::Time(b) => b.append_null(),
            TextColumn::Timestamp(b, _) => b.append_null(),
        }
    }

    pub fn finish(&mut self) -> Result<ArrayRef, String> {
        let err = |e: arrow::error::ArrowError| e.to_string();
        Ok(match self {
            TextColumn::Bool(b) => Arc::new(b.finish()),
            TextColumn::Int8(b) => Arc::new(b.finish()),
            TextColumn::Int16(b) => Arc::new(b.finish()),
            TextColumn::Int32(b) => Arc::new(b.finish()),
            TextColumn::Int64(b) => Arc::new(b.finish()),
            TextColumn::UInt8(b) => Arc::new(b.finish()),
            TextColumn::UInt16(b) => Arc::new(b.finish()),
            TextColumn::UInt32(b) => Arc::new(b.finish()),
            TextColumn::UInt64(b) | TextColumn::Bits(b) => Arc::new(b.finish()),
            TextColumn::Float32(b) => Arc::new(b.finish()),
            TextColumn::Float64(b) => Arc::new(b.finish()),
            TextColumn::Dec128(b, p, s) => {
                Arc::new(b.finish().with_precision_and_scale(*p, *s).map_err(err)?)
            }
            TextColumn::Dec256(b, p, s) => {
                Arc::new(b.finish().with_precision_and_scale(*p, *s).map_err(err)?)
            }
            TextColumn::Utf8(b) => Arc::new(b.finish()),
            TextColumn::Binary(b) => Arc::new(b.finish()),
            TextColumn::Date(b) => Arc::new(b.finish()),
            TextColumn::Time(b) => Arc::new(b.finish()),
            TextColumn::Timestamp(b, utc) => {
                let a = b.finish();
                Arc::new(if *utc { a.with_timezone("UTC") } else { a })
            }
        })
    }
}

/// Parses a decimal's text, refusing a value with more fractional digits
/// than the scale (arrow's parser would round it).
fn decimal_text<T>(
    s: &str,
    precision: u8,
    scale: i8,
    parse: impl Fn(&str) -> Result<T, arrow::error::ArrowError>,
) -> Result<T, String> {
    let fraction = s.split_once('.').map_or(0, |(_, f)| f.len());
    if fraction > scale.max(0) as usize {
        return Err(format!(
            "\"{s}\" has more than {scale} fractional digits for decimal({precision},{scale})"
        ));
    }
    parse(s).map_err(|_| format!("\"{s}\" does not fit decimal({precision},{scale})"))
}

/// `HH:MM:SS[.ffffff]` as microseconds since midnight. MySQL's TIME is a
/// duration that may be negative or past 24 hours; such a value is not a
/// time of day.
fn time_of_day(s: &str) -> Result<i64, String> {
    let bad = || format!("\"{s}\" is not a time of day between 00:00:00 and 23:59:59.999999");
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut parts = hms.split(':');
    let mut next = || -> Result<i64, String> {
        parts
            .next()
            .and_then(|p| p.parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(bad)
    };
    let (h, m, sec) = (next()?, next()?, next()?);
    if h > 23 || m > 59 || sec > 59 || frac.len() > 6 || s.starts_with('-') {
        return Err(bad());
    }
    let micros = if frac.is_empty() {
        0
    } else {
        let digits: i64 = frac.parse().map_err(|_| bad())?;
        digits * 10i64.pow(6 - frac.len() as u32)
    };
    Ok(((h * 60 + m) * 60 + sec) * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    #[test]
    fn batches_end_early_when_their_text_grows_large() {
        // A few long strings fill a batch long before batch_size rows: the
        // batch must end there, or a column could outgrow one Arrow array.
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("s", arrow::datatypes::DataType::Utf8, true),
        ]));
        let mut batches = TextBatches::new(schema, &[TextType::Utf8], 1000).with_max_bytes(100);
        let value = [b'x'; 30];
        let mut sizes = Vec::new();
        for _ in 0..10 {
            batches.append(0, Some(&value)).unwrap();
            if let Some(b) = batches.end_row().unwrap() {
                sizes.push(b.num_rows());
            }
        }
        if let Some(b) = batches.rest().unwrap() {
            sizes.push(b.num_rows());
        }
        assert_eq!(sizes, vec![4, 4, 2]);
    }

    #[test]
    fn values_parse_or_say_why_not() {
        let mut c = TextColumn::new(
            &TextType::Decimal {
                precision: 5,
                scale: 2,
            },
            4,
        );
        c.append(Some(b"-123.45")).unwrap();
        c.append(None).unwrap();
        assert!(c.append(Some(b"1.234")).unwrap_err().contains("fractional"));
        assert!(
            c.append(Some(b"12345.6"))
                .unwrap_err()
                .contains("does not fit")
        );
        let a = c.finish().unwrap();
        assert_eq!(a.as_primitive::<Decimal128Type>().value(0), -12345);
        assert!(a.is_null(1));

        assert_eq!(time_of_day("23:59:59.999999"), Ok(86_399_999_999));
        assert_eq!(time_of_day("01:02:03.5"), Ok(3_723_500_000));
        assert!(time_of_day("-01:00:00").is_err());
        assert!(time_of_day("838:59:59").is_err());

        let mut b = TextColumn::new(&TextType::Bool, 2);
        b.append(Some(b"1")).unwrap();
        assert!(b.append(Some(b"2")).unwrap_err().contains("not 0 or 1"));

        let mut d = TextColumn::new(&TextType::Date, 2);
        assert!(d.append(Some(b"0000-00-00")).is_err());
        d.append(Some(b"9999-12-31")).unwrap();
        assert_eq!(
            d.finish()
                .unwrap()
                .as_primitive::<arrow::datatypes::Date32Type>()
                .value(0),
            2_932_896
        );

        let mut bits = TextColumn::new(&TextType::Bits, 1);
        bits.append(Some(&[0x01, 0x02])).unwrap();
        assert_eq!(
            bits.finish()
                .unwrap()
                .as_primitive::<arrow::datatypes::UInt64Type>()
                .value(0),
            258
        );
    }
}
