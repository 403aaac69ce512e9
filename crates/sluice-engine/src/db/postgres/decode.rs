//! PostgreSQL's binary COPY format, decoded straight into Arrow builders.
//!
//! Binary COPY is the cheapest way out of PostgreSQL: the server sends each
//! value in its wire form (big-endian integers, days and microseconds since
//! 2000-01-01, base-10000 numerics) without formatting it as text, so the
//! client does one pass of byte swapping and no parsing. Each column keeps
//! its own builder and each tuple is appended column by column.

use arrow::array::NullBufferBuilder;
use arrow::array::{
    Array, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Decimal256Builder, Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder,
    ListArray, StringBuilder, StructArray, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
    UInt32Builder,
};
use arrow::buffer::{OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Field, Fields, TimeUnit, i256};
use std::sync::Arc;

/// The signature every binary COPY stream starts with.
pub const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Scale given to `numeric` columns declared without precision and scale
/// (the same default as ConnectorX); a value needing more is an error.
pub const UNCONSTRAINED_SCALE: i8 = 10;

/// A PostgreSQL type Sluice reads, with what its Arrow type needs.
#[derive(Debug, Clone, PartialEq)]
pub enum PgType {
    Bool,
    Int2,
    Int4,
    Int8,
    Oid,
    Float4,
    Float8,
    /// `exact` is false for a `numeric` without declared precision: its
    /// values are checked against the default scale instead of trusted.
    Numeric {
        precision: u8,
        scale: i8,
        exact: bool,
    },
    /// text, varchar, char(n), name, xml, citext and enum labels.
    Text,
    Bytea,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Interval,
    Json,
    Jsonb,
    Uuid,
    Array(Box<PgType>),
}

impl PgType {
    pub fn arrow_type(&self) -> DataType {
        match self {
            PgType::Bool => DataType::Boolean,
            PgType::Int2 => DataType::Int16,
            PgType::Int4 => DataType::Int32,
            PgType::Int8 => DataType::Int64,
            PgType::Oid => DataType::UInt32,
            PgType::Float4 => DataType::Float32,
            PgType::Float8 => DataType::Float64,
            PgType::Numeric {
                precision, scale, ..
            } => {
                if *precision <= 38 {
                    DataType::Decimal128(*precision, *scale)
                } else {
                    DataType::Decimal256(*precision, *scale)
                }
            }
            PgType::Text | PgType::Json | PgType::Jsonb | PgType::Uuid => DataType::Utf8,
            PgType::Bytea => DataType::Binary,
            PgType::Date => DataType::Date32,
            PgType::Time => DataType::Time64(TimeUnit::Microsecond),
            PgType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            PgType::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            PgType::Interval => DataType::Struct(interval_fields()),
            PgType::Array(item) => DataType::List(Arc::new(item_field(item))),
        }
    }
}

/// PostgreSQL keeps an interval's months, days and microseconds apart
/// (a month is not a fixed number of days), and so does this struct.
/// Arrow's month-day-nano interval would too, but Parquet cannot store it.
fn interval_fields() -> Fields {
    Fields::from(vec![
        Field::new("months", DataType::Int32, false),
        Field::new("days", DataType::Int32, false),
        Field::new("microseconds", DataType::Int64, false),
    ])
}

fn item_field(item: &PgType) -> Field {
    Field::new("item", item.arrow_type(), true)
}

/// Reads `numeric` typmods: precision in the high 16 bits, an 11-bit
/// signed scale in the low bits (negative scales since PostgreSQL 15).
pub fn numeric_type(typmod: i32) -> Result<PgType, String> {
    if typmod < 4 {
        return Ok(PgType::Numeric {
            precision: 38,
            scale: UNCONSTRAINED_SCALE,
            exact: false,
        });
    }
    let t = typmod - 4;
    let precision = (t >> 16) & 0xffff;
    let scale = ((t & 0x7ff) ^ 1024) - 1024;
    if precision > 76 {
        return Err(format!(
            "numeric({precision},{scale}) has more digits than Arrow's largest decimal (76)"
        ));
    }
    let scale = i8::try_from(scale)
        .map_err(|_| format!("numeric({precision},{scale}): scale out of Arrow's range"))?;
    Ok(PgType::Numeric {
        precision: precision as u8,
        scale,
        exact: true,
    })
}

/// One column being filled. A query has a handful of these, each living
/// for a whole batch, so their size does not matter; boxing the large
/// variants would add a pointer chase to every value appended.
#[allow(clippy::large_enum_variant)]
pub enum ColumnBuilder {
    Bool(BooleanBuilder),
    Int2(Int16Builder),
    Int4(Int32Builder),
    Int8(Int64Builder),
    Oid(UInt32Builder),
    Float4(Float32Builder),
    Float8(Float64Builder),
    Dec128 {
        builder: Decimal128Builder,
        precision: u8,
        scale: i8,
    },
    Dec256 {
        builder: Decimal256Builder,
        precision: u8,
        scale: i8,
    },
    Text(StringBuilder),
    Jsonb(StringBuilder),
    Uuid(StringBuilder),
    Bytea(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder, Option<Arc<str>>),
    Interval {
        months: Int32Builder,
        days: Int32Builder,
        micros: Int64Builder,
        nulls: NullBufferBuilder,
    },
    List {
        field: Arc<Field>,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
        items: Box<ColumnBuilder>,
    },
}

impl ColumnBuilder {
    pub fn new(ty: &PgType, capacity: usize) -> ColumnBuilder {
        match ty {
            PgType::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
            PgType::Int2 => ColumnBuilder::Int2(Int16Builder::with_capacity(capacity)),
            PgType::Int4 => ColumnBuilder::Int4(Int32Builder::with_capacity(capacity)),
            PgType::Int8 => ColumnBuilder::Int8(Int64Builder::with_capacity(capacity)),
            PgType::Oid => ColumnBuilder::Oid(UInt32Builder::with_capacity(capacity)),
            PgType::Float4 => ColumnBuilder::Float4(Float32Builder::with_capacity(capacity)),
            PgType::Float8 => ColumnBuilder::Float8(Float64Builder::with_capacity(capacity)),
            PgType::Numeric {
                precision, scale, ..
            } => {
                if *precision <= 38 {
                    ColumnBuilder::Dec128 {
                        builder: Decimal128Builder::with_capacity(capacity),
                        precision: *precision,
                        scale: *scale,
                    }
                } else {
                    ColumnBuilder::Dec256 {
                        builder: Decimal256Builder::with_capacity(capacity),
                        precision: *precision,
                        scale: *scale,
                    }
                }
            }
            PgType::Text | PgType::Json => {
                ColumnBuilder::Text(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            PgType::Jsonb => {
                ColumnBuilder::Jsonb(StringBuilder::with_capacity(capacity, capacity * 16))
            }
            PgType::Uuid => {
                ColumnBuilder::Uuid(StringBuilder::with_capacity(capacity, capacity * 36))
            }
            PgType::Bytea => {
                ColumnBuilder::Bytea(BinaryBuilder::with_capacity(capacity, capacity * 16))
            }
            PgType::Date => ColumnBuilder::Date(Date32Builder::with_capacity(capacity)),
            PgType::Time => ColumnBuilder::Time(Time64MicrosecondBuilder::with_capacity(capacity)),
            PgType::Timestamp => {
                ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity), None)
            }
            PgType::Timestamptz => ColumnBuilder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity),
                Some(Arc::from("UTC")),
            ),
            PgType::Interval => ColumnBuilder::Interval {
                months: Int32Builder::with_capacity(capacity),
                days: Int32Builder::with_capacity(capacity),
                micros: Int64Builder::with_capacity(capacity),
                nulls: NullBufferBuilder::new(capacity),
            },
            PgType::Array(item) => {
                let mut offsets = Vec::with_capacity(capacity + 1);
                offsets.push(0);
                ColumnBuilder::List {
                    field: Arc::new(item_field(item)),
                    offsets,
                    nulls: NullBufferBuilder::new(capacity),
                    items: Box::new(ColumnBuilder::new(item, capacity)),
                }
            }
        }
    }

    /// Appends one value: `None` is SQL NULL, `Some` the value's bytes in
    /// binary COPY form.
    pub fn append(&mut self, value: Option<&[u8]>) -> Result<(), String> {
        let Some(v) = value else {
            self.append_null();
            return Ok(());
        };
        match self {
            ColumnBuilder::Bool(b) => b.append_value(fixed::<1>(v)?[0] != 0),
            ColumnBuilder::Int2(b) => b.append_value(i16::from_be_bytes(fixed(v)?)),
            ColumnBuilder::Int4(b) => b.append_value(i32::from_be_bytes(fixed(v)?)),
            ColumnBuilder::Int8(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            ColumnBuilder::Oid(b) => b.append_value(u32::from_be_bytes(fixed(v)?)),
            ColumnBuilder::Float4(b) => b.append_value(f32::from_be_bytes(fixed(v)?)),
            ColumnBuilder::Float8(b) => b.append_value(f64::from_be_bytes(fixed(v)?)),
            ColumnBuilder::Dec128 {
                builder,
                precision,
                scale,
            } => {
                let n = numeric::<i128>(v, *precision, *scale)?;
                builder.append_value(n);
            }
            ColumnBuilder::Dec256 {
                builder,
                precision,
                scale,
            } => {
                let n = numeric::<i256>(v, *precision, *scale)?;
                builder.append_value(n);
            }
            ColumnBuilder::Text(b) => b.append_value(utf8(v)?),
            ColumnBuilder::Jsonb(b) => match v.split_first() {
                Some((1, text)) => b.append_value(utf8(text)?),
                _ => return Err("unknown jsonb version".into()),
            },
            ColumnBuilder::Uuid(b) => {
                let bytes: [u8; 16] = fixed(v)?;
                let mut text = [0u8; 36];
                b.append_value(
                    uuid::Uuid::from_bytes(bytes)
                        .hyphenated()
                        .encode_lower(&mut text),
                );
            }
            ColumnBuilder::Bytea(b) => b.append_value(v),
            ColumnBuilder::Date(b) => {
                let days = i32::from_be_bytes(fixed(v)?);
                if days == i32::MAX || days == i32::MIN {
                    return Err("date is ±infinity, which Arrow cannot hold".into());
                }
                let d = days
                    .checked_add(PG_EPOCH_DAYS)
                    .ok_or("date out of Arrow's range")?;
                b.append_value(d);
            }
            ColumnBuilder::Time(b) => b.append_value(i64::from_be_bytes(fixed(v)?)),
            ColumnBuilder::Timestamp(b, _) => {
                let micros = i64::from_be_bytes(fixed(v)?);
                if micros == i64::MAX || micros == i64::MIN {
                    return Err("timestamp is ±infinity, which Arrow cannot hold".into());
                }
                let t = micros
                    .checked_add(PG_EPOCH_MICROS)
                    .ok_or("timestamp out of Arrow's range")?;
                b.append_value(t);
            }
            ColumnBuilder::Interval {
                months,
                days,
                micros,
                nulls,
            } => {
                let raw: [u8; 16] = fixed(v)?;
                micros.append_value(i64::from_be_bytes(raw[0..8].try_into().expect("8 bytes")));
                days.append_value(i32::from_be_bytes(raw[8..12].try_into().expect("4 bytes")));
                months.append_value(i32::from_be_bytes(raw[12..16].try_into().expect("4 bytes")));
                nulls.append_non_null();
            }
            ColumnBuilder::List {
                offsets,
                nulls,
                items,
                ..
            } => {
                let count = array(v, items)?;
                let last = *offsets.last().expect("offsets start with 0");
                let next = i32::try_from(count)
                    .ok()
                    .and_then(|c| last.checked_add(c))
                    .ok_or("array data over 2^31 elements in one batch")?;
                offsets.push(next);
                nulls.append_non_null();
            }
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::Int2(b) => b.append_null(),
            ColumnBuilder::Int4(b) => b.append_null(),
            ColumnBuilder::Int8(b) => b.append_null(),
            ColumnBuilder::Oid(b) => b.append_null(),
            ColumnBuilder::Float4(b) => b.append_null(),
            ColumnBuilder::Float8(b) => b.append_null(),
            ColumnBuilder::Dec128 { builder, .. } => builder.append_null(),
            ColumnBuilder::Dec256 { builder, .. } => builder.append_null(),
            ColumnBuilder::Text(b) | ColumnBuilder::Jsonb(b) | ColumnBuilder::Uuid(b) => {
                b.append_null()
            }
            ColumnBuilder::Bytea(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Time(b) => b.append_null(),
            ColumnBuilder::Timestamp(b, _) => b.append_null(),
            ColumnBuilder::Interval {
                months,
                days,
                micros,
                nulls,
            } => {
                months.append_value(0);
                days.append_value(0);
                micros.append_value(0);
                nulls.append_null();
            }
            ColumnBuilder::List { offsets, nulls, .. } => {
                let last = *offsets.last().expect("offsets start with 0");
                offsets.push(last);
                nulls.append_null();
            }
        }
    }

    /// The values appended so far, as an array; the column starts empty again.
    pub fn finish(&mut self) -> Result<ArrayRef, String> {
        let array: ArrayRef = match self {
            ColumnBuilder::Bool(b) => Arc::new(refill(b, BooleanBuilder::with_capacity)),
            ColumnBuilder::Int2(b) => Arc::new(refill(b, Int16Builder::with_capacity)),
            ColumnBuilder::Int4(b) => Arc::new(refill(b, Int32Builder::with_capacity)),
            ColumnBuilder::Int8(b) => Arc::new(refill(b, Int64Builder::with_capacity)),
            ColumnBuilder::Oid(b) => Arc::new(refill(b, UInt32Builder::with_capacity)),
            ColumnBuilder::Float4(b) => Arc::new(refill(b, Float32Builder::with_capacity)),
            ColumnBuilder::Float8(b) => Arc::new(refill(b, Float64Builder::with_capacity)),
            ColumnBuilder::Dec128 {
                builder,
                precision,
                scale,
            } => Arc::new(
                builder
                    .finish()
                    .with_precision_and_scale(*precision, *scale)
                    .map_err(|e| e.to_string())?,
            ),
            ColumnBuilder::Dec256 {
                builder,
                precision,
                scale,
            } => Arc::new(
                builder
                    .finish()
                    .with_precision_and_scale(*precision, *scale)
                    .map_err(|e| e.to_string())?,
            ),
            ColumnBuilder::Text(b) | ColumnBuilder::Jsonb(b) | ColumnBuilder::Uuid(b) => {
                let a = b.finish();
                let bytes = a.value_data().len();
                *b = StringBuilder::with_capacity(a.len(), bytes + bytes / 8);
                Arc::new(a)
            }
            ColumnBuilder::Bytea(b) => {
                let a = b.finish();
                let bytes = a.value_data().len();
                *b = BinaryBuilder::with_capacity(a.len(), bytes + bytes / 8);
                Arc::new(a)
            }
            ColumnBuilder::Date(b) => Arc::new(refill(b, Date32Builder::with_capacity)),
            ColumnBuilder::Time(b) => Arc::new(refill(b, Time64MicrosecondBuilder::with_capacity)),
            ColumnBuilder::Timestamp(b, tz) => Arc::new(
                refill(b, TimestampMicrosecondBuilder::with_capacity).with_timezone_opt(tz.clone()),
            ),
            ColumnBuilder::Interval {
                months,
                days,
                micros,
                nulls,
            } => Arc::new(
                StructArray::try_new(
                    interval_fields(),
                    vec![
                        Arc::new(months.finish()),
                        Arc::new(days.finish()),
                        Arc::new(micros.finish()),
                    ],
                    nulls.finish(),
                )
                .map_err(|e| e.to_string())?,
            ),
            ColumnBuilder::List {
                field,
                offsets,
                nulls,
                items,
            } => {
                let values = items.finish()?;
                let taken = std::mem::replace(offsets, vec![0]);
                let offsets = OffsetBuffer::new(ScalarBuffer::from(taken));
                Arc::new(
                    ListArray::try_new(field.clone(), offsets, values, nulls.finish())
                        .map_err(|e| e.to_string())?,
                )
            }
        };
        Ok(array)
    }
}

/// Finishes a builder and starts the next batch's at the same size:
/// `finish` leaves a builder with no capacity, and growing it again by
/// doubling would copy every batch's values several times.
fn refill<B, A>(b: &mut B, with_capacity: fn(usize) -> B) -> A
where
    B: FinishInto<A>,
    A: Array,
{
    let a = b.finish_into();
    *b = with_capacity(a.len());
    a
}

/// The concrete array a builder finishes into.
trait FinishInto<A> {
    fn finish_into(&mut self) -> A;
}

impl<T: arrow::datatypes::ArrowPrimitiveType> FinishInto<arrow::array::PrimitiveArray<T>>
    for arrow::array::PrimitiveBuilder<T>
{
    fn finish_into(&mut self) -> arrow::array::PrimitiveArray<T> {
        self.finish()
    }
}

impl FinishInto<arrow::array::BooleanArray> for BooleanBuilder {
    fn finish_into(&mut self) -> arrow::array::BooleanArray {
        self.finish()
    }
}

fn fixed<const N: usize>(v: &[u8]) -> Result<[u8; N], String> {
    v.try_into()
        .map_err(|_| format!("expected {N} bytes, got {}", v.len()))
}

fn utf8(v: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(v).map_err(|e| format!("invalid UTF-8 in text: {e}"))
}

/// Reads a one-dimensional array's elements into `items`; returns how many.
fn array(v: &[u8], items: &mut ColumnBuilder) -> Result<usize, String> {
    let mut r = ByteCursor { buf: v, at: 0 };
    let ndim = r.i32()?;
    let _has_nulls = r.i32()?;
    let _elem_oid = r.i32()?;
    match ndim {
        0 => return Ok(0),
        1 => {}
        n => {
            return Err(format!(
                "a {n}-dimensional array; only one-dimensional arrays map to an Arrow list"
            ));
        }
    }
    let len = r.i32()?;
    let _lower_bound = r.i32()?;
    let len = usize::try_from(len).map_err(|_| "negative array length".to_string())?;
    for _ in 0..len {
        let n = r.i32()?;
        if n < 0 {
            items.append(None)?;
        } else {
            let bytes = r.take(n as usize)?;
            items.append(Some(bytes))?;
        }
    }
    Ok(len)
}

struct ByteCursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> ByteCursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or("value shorter than its header says")?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(fixed(self.take(4)?)?))
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(fixed(self.take(2)?)?))
    }
}

/// Integer types a decimal's unscaled value is built in.
trait Unscaled: Copy + PartialOrd {
    const ZERO: Self;
    fn from_u16(v: u16) -> Self;
    fn pow10(n: u32) -> Option<Self>;
    fn mul(self, o: Self) -> Option<Self>;
    fn add(self, o: Self) -> Option<Self>;
    fn neg(self) -> Self;
}

impl Unscaled for i128 {
    const ZERO: Self = 0;
    fn from_u16(v: u16) -> Self {
        v as i128
    }
    fn pow10(n: u32) -> Option<Self> {
        10i128.checked_pow(n)
    }
    fn mul(self, o: Self) -> Option<Self> {
        self.checked_mul(o)
    }
    fn add(self, o: Self) -> Option<Self> {
        self.checked_add(o)
    }
    fn neg(self) -> Self {
        -self
    }
}

impl Unscaled for i256 {
    const ZERO: Self = i256::ZERO;
    fn from_u16(v: u16) -> Self {
        i256::from_i128(v as i128)
    }
    fn pow10(n: u32) -> Option<Self> {
        i256::from_i128(10).checked_pow(n)
    }
    fn mul(self, o: Self) -> Option<Self> {
        self.checked_mul(o)
    }
    fn add(self, o: Self) -> Option<Self> {
        self.checked_add(o)
    }
    fn neg(self) -> Self {
        self.wrapping_neg()
    }
}

/// A binary `numeric` as the unscaled integer of a decimal with `scale`.
/// PostgreSQL sends base-10000 digits with the weight of the first; each
/// digit is placed at its power of ten. A value with more fractional
/// digits than `scale`, or more digits than `precision`, is an error: it
/// would otherwise be rounded or wrapped without a word.
fn numeric<T: Unscaled>(v: &[u8], precision: u8, scale: i8) -> Result<T, String> {
    let mut r = ByteCursor { buf: v, at: 0 };
    let ndigits = r.u16()? as i16;
    let weight = r.u16()? as i16;
    let sign = r.u16()?;
    let _dscale = r.u16()?;
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Err("numeric NaN, which a decimal cannot hold".into()),
        0xD000 | 0xF000 => return Err("numeric ±infinity, which a decimal cannot hold".into()),
        other => return Err(format!("unknown numeric sign {other:#x}")),
    }
    let too_big = || format!("numeric value does not fit decimal({precision},{scale})");
    let too_fine = || {
        format!(
            "numeric value has more than {scale} fractional digits; cast it in the query, e.g. ::numeric(38,{})",
            scale.max(0) + 4
        )
    };
    let mut acc = T::ZERO;
    // The power of ten the last placed digit stands at; None before the first.
    let mut at: Option<u32> = None;
    for i in 0..ndigits.max(0) {
        let d = r.u16()?;
        let e = 4 * (i32::from(weight) - i32::from(i)) + i32::from(scale);
        if e >= 0 {
            acc = match at {
                None => T::from_u16(d),
                Some(prev) => acc
                    .mul(T::pow10(prev - e as u32).ok_or_else(too_big)?)
                    .and_then(|a| a.add(T::from_u16(d)))
                    .ok_or_else(too_big)?,
            };
            at = Some(e as u32);
        } else if e <= -4 {
            if d != 0 {
                return Err(too_fine());
            }
        } else {
            let q = 10u16.pow((-e) as u32);
            if d % q != 0 {
                return Err(too_fine());
            }
            let part = T::from_u16(d / q);
            acc = match at {
                None => part,
                Some(prev) => acc
                    .mul(T::pow10(prev).ok_or_else(too_big)?)
                    .and_then(|a| a.add(part))
                    .ok_or_else(too_big)?,
            };
            at = Some(0);
        }
    }
    if let Some(prev) = at
        && prev > 0
    {
        acc = acc
            .mul(T::pow10(prev).ok_or_else(too_big)?)
            .ok_or_else(too_big)?;
    }
    if acc >= T::pow10(u32::from(precision)).ok_or_else(too_big)? {
        return Err(too_big());
    }
    Ok(if sign == 0x4000 { acc.neg() } else { acc })
}

/// What one tuple of the stream turned out to be.
pub enum Tuple {
    /// A row of this many bytes was appended to the columns.
    Row(usize),
    /// The stream's trailer: no more rows.
    End,
    /// The buffer ends inside a tuple; more bytes are needed.
    Partial,
}

/// Appends the tuple at the start of `buf` to `columns`. A tuple is checked
/// whole before any column is touched, so a partial one leaves them as
/// they were. `Err` carries the column index with the message.
pub fn read_tuple(
    buf: &[u8],
    columns: &mut [ColumnBuilder],
) -> Result<Tuple, (Option<usize>, String)> {
    if buf.len() < 2 {
        return Ok(Tuple::Partial);
    }
    let count = i16::from_be_bytes([buf[0], buf[1]]);
    if count == -1 {
        return Ok(Tuple::End);
    }
    if count as usize != columns.len() {
        return Err((
            None,
            format!(
                "a row has {count} fields where the query has {} columns",
                columns.len()
            ),
        ));
    }
    // First find the end, so that nothing is appended from a partial tuple.
    let mut at = 2;
    for _ in 0..count {
        let Some(len) = buf.get(at..at + 4) else {
            return Ok(Tuple::Partial);
        };
        let len = i32::from_be_bytes(len.try_into().expect("4 bytes"));
        at += 4 + len.max(0) as usize;
        if at > buf.len() {
            return Ok(Tuple::Partial);
        }
    }
    let mut at = 2;
    for (i, col) in columns.iter_mut().enumerate() {
        let len = i32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
        at += 4;
        let value = if len < 0 {
            None
        } else {
            let v = &buf[at..at + len as usize];
            at += len as usize;
            Some(v)
        };
        col.append(value).map_err(|m| (Some(i), m))?;
    }
    Ok(Tuple::Row(at))
}

/// The length of the stream header at the start of `buf`, once it is all
/// there.
pub fn header_len(buf: &[u8]) -> Result<Option<usize>, String> {
    if buf.len() < SIGNATURE.len() + 8 {
        return Ok(None);
    }
    if &buf[..SIGNATURE.len()] != SIGNATURE {
        return Err("not a binary COPY stream".into());
    }
    let ext_at = SIGNATURE.len() + 4;
    let ext = u32::from_be_bytes(buf[ext_at..ext_at + 4].try_into().expect("4 bytes")) as usize;
    let end = ext_at + 4 + ext;
    Ok((buf.len() >= end).then_some(end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    /// A binary numeric: digits in base 10000.
    fn num(neg: bool, weight: i16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((digits.len() as u16).to_be_bytes());
        v.extend(weight.to_be_bytes());
        v.extend((if neg { 0x4000u16 } else { 0 }).to_be_bytes());
        v.extend(dscale.to_be_bytes());
        for d in digits {
            v.extend(d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_land_on_their_scale() {
        // 12345.678 as numeric(10,3): digits 1|2345|6780, weight 1.
        let v = num(false, 1, 3, &[1, 2345, 6780]);
        assert_eq!(numeric::<i128>(&v, 10, 3), Ok(12_345_678));
        // -0.05 as numeric(4,2): digits 500, weight -1.
        let v = num(true, -1, 2, &[500]);
        assert_eq!(numeric::<i128>(&v, 4, 2), Ok(-5));
        // 1e12 as numeric(20,0): digits 1, weight 3.
        let v = num(false, 3, 0, &[1]);
        assert_eq!(numeric::<i128>(&v, 20, 0), Ok(1_000_000_000_000));
        // Zero has no digits.
        assert_eq!(numeric::<i128>(&num(false, 0, 2, &[]), 5, 2), Ok(0));
        // 0.0001 into scale 2 loses a digit: refused.
        let v = num(false, -1, 4, &[1]);
        assert!(
            numeric::<i128>(&v, 10, 2)
                .unwrap_err()
                .contains("fractional")
        );
        // 12345 does not fit numeric(4,0).
        let v = num(false, 1, 0, &[1, 2345]);
        assert!(
            numeric::<i128>(&v, 4, 0)
                .unwrap_err()
                .contains("does not fit")
        );
        // 10^75 - 1 fits decimal(76,0) in i256 (19 base-10000 digits).
        let mut digits = vec![999u16];
        digits.extend(std::iter::repeat_n(9999u16, 18));
        let v = num(false, 18, 0, &digits);
        let n = numeric::<i256>(&v, 76, 0).unwrap();
        assert_eq!(n.to_string(), "9".repeat(75));
    }

    #[test]
    fn typmods_give_precision_and_scale() {
        let tm = |p: i32, s: i32| ((p << 16) | (s & 0x7ff)) + 4;
        assert_eq!(
            numeric_type(tm(12, 2)),
            Ok(PgType::Numeric {
                precision: 12,
                scale: 2,
                exact: true
            })
        );
        assert_eq!(
            numeric_type(tm(5, -2)),
            Ok(PgType::Numeric {
                precision: 5,
                scale: -2,
                exact: true
            })
        );
        assert!(numeric_type(tm(100, 2)).is_err());
        assert!(matches!(
            numeric_type(-1),
            Ok(PgType::Numeric { exact: false, .. })
        ));
    }

    #[test]
    fn tuples_fill_columns_and_partial_ones_do_not() {
        let mut cols = vec![
            ColumnBuilder::new(&PgType::Int4, 4),
            ColumnBuilder::new(&PgType::Text, 4),
            ColumnBuilder::new(&PgType::Array(Box::new(PgType::Int8)), 4),
            ColumnBuilder::new(
                &PgType::Numeric {
                    precision: 60,
                    scale: 2,
                    exact: true,
                },
                4,
            ),
        ];
        let mut row = Vec::new();
        row.extend(4i16.to_be_bytes());
        row.extend(4i32.to_be_bytes());
        row.extend(7i32.to_be_bytes());
        row.extend(("héj".len() as i32).to_be_bytes());
        row.extend("héj".as_bytes());
        // int8[] {5, NULL}
        let mut arr = Vec::new();
        for x in [1i32, 1, 20, 2, 1] {
            arr.extend(x.to_be_bytes());
        }
        arr.extend(8i32.to_be_bytes());
        arr.extend(5i64.to_be_bytes());
        arr.extend((-1i32).to_be_bytes());
        row.extend((arr.len() as i32).to_be_bytes());
        row.extend(&arr);
        row.extend((-1i32).to_be_bytes());
        assert!(matches!(
            read_tuple(&row[..row.len() - 1], &mut cols),
            Ok(Tuple::Partial)
        ));
        assert!(matches!(read_tuple(&row, &mut cols), Ok(Tuple::Row(n)) if n == row.len()));
        assert!(matches!(
            read_tuple(&[0xff, 0xff], &mut cols),
            Ok(Tuple::End)
        ));
        let arrays: Vec<ArrayRef> = cols.iter_mut().map(|c| c.finish().unwrap()).collect();
        assert_eq!(arrays[0].len(), 1);
        assert_eq!(
            arrays[0]
                .as_primitive::<arrow::datatypes::Int32Type>()
                .value(0),
            7
        );
        assert_eq!(arrays[1].as_string::<i32>().value(0), "héj");
        let list = arrays[2].as_list::<i32>();
        assert_eq!(list.value(0).len(), 2);
        assert!(list.value(0).is_null(1));
        assert!(arrays[3].is_null(0));
        assert_eq!(arrays[3].data_type(), &DataType::Decimal256(60, 2));
    }
}
