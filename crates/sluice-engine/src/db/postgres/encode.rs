//! Arrow columns encoded as PostgreSQL's binary COPY values. Binary COPY
//! has the server parse nothing, but it must be sent exactly the wire
//! form of each target column's type: an `int8` column takes 8 bytes even
//! when the dataset's column is `Int32`. So each column is encoded for the
//! type the table declares, and a pair that does not convert exactly (a
//! value out of range, a string into an integer column) is an error
//! naming the column.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Decimal256Type, Float32Type, Float64Type, Int8Type,
    Int16Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};

const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A target column's type, as binary COPY needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Json,
    Jsonb,
    Bool,
    Date,
    Timestamp,
    Bytea,
    Uuid,
}

impl Target {
    /// From the target column's type OID; `None` for a type this load
    /// cannot write.
    pub fn from_oid(oid: u32) -> Option<Target> {
        Some(match oid {
            21 => Target::Int2,
            23 => Target::Int4,
            20 => Target::Int8,
            700 => Target::Float4,
            701 => Target::Float8,
            1700 => Target::Numeric,
            25 | 1043 | 1042 | 19 => Target::Text,
            114 => Target::Json,
            3802 => Target::Jsonb,
            16 => Target::Bool,
            1082 => Target::Date,
            1114 | 1184 => Target::Timestamp,
            17 => Target::Bytea,
            2950 => Target::Uuid,
            _ => return None,
        })
    }
}

/// The PostgreSQL type a new table's column gets for an Arrow type.
pub fn column_type(dt: &DataType) -> Option<String> {
    Some(match dt {
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::UInt64 => "numeric(20,0)".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("numeric({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        _ => return None,
    })
}

/// Brings a column to the few Arrow types the encoder reads: strings to
/// Utf8, binaries to Binary, timestamps to microseconds, dictionaries to
/// their values.
pub fn canonical(array: &ArrayRef) -> Result<ArrayRef, String> {
    let to = match array.data_type() {
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        DataType::Timestamp(unit, tz) if *unit != TimeUnit::Microsecond => {
            DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
        }
        DataType::Dictionary(_, value) => value.as_ref().clone(),
        _ => return Ok(array.clone()),
    };
    arrow::compute::cast(array, &to).map_err(|e| e.to_string())
}

/// Appends one row's value of `array` at `row` to `out`, as `target`
/// (length prefix included; -1 for NULL).
pub fn encode(
    array: &dyn Array,
    row: usize,
    target: Target,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    if array.is_null(row) {
        out.extend_from_slice(&(-1i32).to_be_bytes());
        return Ok(());
    }
    let int = integer(array, row);
    match (target, array.data_type()) {
        (Target::Int2 | Target::Int4 | Target::Int8, _) if int.is_some() => {
            let v = int.expect("checked");
            match target {
                Target::Int2 => field(
                    out,
                    &i16::try_from(v)
                        .map_err(|_| range(v, "smallint"))?
                        .to_be_bytes(),
                ),
                Target::Int4 => field(
                    out,
                    &i32::try_from(v)
                        .map_err(|_| range(v, "integer"))?
                        .to_be_bytes(),
                ),
                _ => field(
                    out,
                    &i64::try_from(v)
                        .map_err(|_| range(v, "bigint"))?
                        .to_be_bytes(),
                ),
            }
        }
        (Target::Float4, DataType::Float32) => field(
            out,
            &array.as_primitive::<Float32Type>().value(row).to_be_bytes(),
        ),
        (Target::Float8, DataType::Float64) => field(
            out,
            &array.as_primitive::<Float64Type>().value(row).to_be_bytes(),
        ),
        (Target::Float8, DataType::Float32) => field(
            out,
            &f64::from(array.as_primitive::<Float32Type>().value(row)).to_be_bytes(),
        ),
        (Target::Numeric, DataType::Decimal128(_, scale)) => {
            let v = array.as_primitive::<Decimal128Type>().value(row);
            numeric(out, v, *scale);
        }
        (Target::Numeric, DataType::Decimal256(_, scale)) => {
            let text = array
                .as_primitive::<Decimal256Type>()
                .value(row)
                .to_string();
            match text.strip_prefix('-') {
                Some(digits) => numeric_digits(out, true, digits, *scale),
                None => numeric_digits(out, false, &text, *scale),
            }
        }
        (Target::Numeric, _) if int.is_some() => numeric(out, int.expect("checked"), 0),
        (Target::Text | Target::Json, DataType::Utf8) => {
            field(out, array.as_string::<i32>().value(row).as_bytes())
        }
        (Target::Jsonb, DataType::Utf8) => {
            let text = array.as_string::<i32>().value(row).as_bytes();
            let len = i32::try_from(text.len() + 1).map_err(|_| "value over 2 GiB".to_string())?;
            out.extend_from_slice(&len.to_be_bytes());
            out.push(1);
            out.extend_from_slice(text);
        }
        (Target::Uuid, DataType::Utf8) => {
            let text = array.as_string::<i32>().value(row);
            let id =
                uuid::Uuid::parse_str(text).map_err(|_| format!("\"{text}\" is not a UUID"))?;
            field(out, id.as_bytes());
        }
        (Target::Bool, DataType::Boolean) => field(out, &[u8::from(array.as_boolean().value(row))]),
        (Target::Date, DataType::Date32) => {
            let days = array.as_primitive::<Date32Type>().value(row) - PG_EPOCH_DAYS;
            field(out, &days.to_be_bytes())
        }
        (Target::Timestamp, DataType::Timestamp(TimeUnit::Microsecond, _)) => {
            let micros = array.as_primitive::<TimestampMicrosecondType>().value(row);
            let pg = micros
                .checked_sub(PG_EPOCH_MICROS)
                .ok_or("timestamp out of PostgreSQL's range")?;
            field(out, &pg.to_be_bytes())
        }
        (Target::Bytea, DataType::Binary) => field(out, array.as_binary::<i32>().value(row)),
        (target, dt) => {
            return Err(format!("cannot write {dt} into a {target:?} column"));
        }
    }
    Ok(())
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn range(v: i128, ty: &str) -> String {
    format!("{v} is out of range for {ty}")
}

/// An integer column's value, widened.
fn integer(array: &dyn Array, row: usize) -> Option<i128> {
    Some(match array.data_type() {
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).into(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).into(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).into(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).into(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).into(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).into(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).into(),
        _ => return None,
    })
}

/// An unscaled decimal as a binary `numeric`: base-10000 digits around the
/// decimal point, the weight of the first, the sign and the display scale.
fn numeric(out: &mut Vec<u8>, unscaled: i128, scale: i8) {
    let negative = unscaled < 0;
    let mut magnitude = unscaled.unsigned_abs();
    let dscale = scale.max(0) as u32;
    // Shift so the decimal point sits on a base-10000 boundary.
    let (pad, point_groups) = point(scale);
    // Digits of a u128 shifted left by up to 3 places fit in a u128 only
    // below 10^35; larger values use the slower path through strings.
    let Some(shifted) = 10u128
        .checked_pow(pad)
        .and_then(|p| magnitude.checked_mul(p))
    else {
        return numeric_digits(out, negative, &magnitude.to_string(), scale);
    };
    magnitude = shifted;
    let mut groups: Vec<u16> = Vec::new();
    while magnitude > 0 {
        groups.push((magnitude % 10_000) as u16);
        magnitude /= 10_000;
    }
    write_numeric(out, negative, &groups, point_groups, dscale);
}

/// The decimal point's place in base-10000 groups for `scale`: the zeros
/// to append to the digits (the fraction padded to a multiple of four
/// digits, or a negative scale applied), and the groups after the point.
fn point(scale: i8) -> (u32, u32) {
    let dscale = scale.max(0) as u32;
    if scale >= 0 {
        let pad = (4 - dscale % 4) % 4;
        (pad, (dscale + pad) / 4)
    } else {
        ((-scale) as u32, 0)
    }
}

/// A numeric from the decimal digits of its unscaled magnitude (wider
/// than an i128 holds once shifted, or a 256-bit decimal).
fn numeric_digits(out: &mut Vec<u8>, negative: bool, digits: &str, scale: i8) {
    let (pad, point_groups) = point(scale);
    let mut digits = digits.to_string();
    digits.extend(std::iter::repeat_n('0', pad as usize));
    let bytes = digits.as_bytes();
    let mut groups: Vec<u16> = Vec::new();
    let mut end = bytes.len();
    while end > 0 {
        let start = end.saturating_sub(4);
        let g = bytes[start..end]
            .iter()
            .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
        groups.push(g);
        end = start;
    }
    // "0" shifted is all zero groups: none are kept.
    while groups.last() == Some(&0) {
        groups.pop();
    }
    write_numeric(out, negative, &groups, point_groups, scale.max(0) as u32);
}

/// Writes a numeric from its base-10000 groups, least significant first,
/// `point_groups` of them after the decimal point.
fn write_numeric(
    out: &mut Vec<u8>,
    negative: bool,
    groups: &[u16],
    point_groups: u32,
    dscale: u32,
) {
    // groups are least significant first; the point is `point_groups` in.
    let ndigits_all = groups.len() as i32;
    let weight = ndigits_all - 1 - point_groups as i32;
    // Trailing zero groups are left out, as PostgreSQL does.
    let skip = groups.iter().take_while(|g| **g == 0).count();
    let digits: Vec<u16> = groups[skip..].iter().rev().copied().collect();
    let len = 8 + 2 * digits.len();
    out.extend_from_slice(&(len as i32).to_be_bytes());
    out.extend_from_slice(&(digits.len() as u16).to_be_bytes());
    out.extend_from_slice(&(if digits.is_empty() { 0 } else { weight as i16 }).to_be_bytes());
    out.extend_from_slice(&(if negative { 0x4000u16 } else { 0 }).to_be_bytes());
    out.extend_from_slice(&(dscale as u16).to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (ndigits, weight, sign, dscale, digits) of an encoded numeric.
    fn parts(unscaled: i128, scale: i8) -> (u16, i16, u16, u16, Vec<u16>) {
        let mut out = Vec::new();
        numeric(&mut out, unscaled, scale);
        let b = &out[4..];
        let u = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let n = u(0);
        let digits = (0..n as usize).map(|k| u(8 + 2 * k)).collect();
        (n, u(2) as i16, u(4), u(6), digits)
    }

    #[test]
    fn numerics_encode_as_postgres_writes_them() {
        // 12345.678 (scale 3) = 1|2345|6780, weight 1.
        assert_eq!(parts(12_345_678, 3), (3, 1, 0, 3, vec![1, 2345, 6780]));
        // -0.05 = 500 at weight -1.
        assert_eq!(parts(-5, 2), (1, -1, 0x4000, 2, vec![500]));
        // 1e12 = 1 at weight 3, trailing zero groups dropped.
        assert_eq!(parts(1_000_000_000_000, 0), (1, 3, 0, 0, vec![1]));
        assert_eq!(parts(0, 2), (0, 0, 0, 2, vec![]));
        // 38 nines with scale 10 take the string path.
        let big: i128 = "9".repeat(38).parse().unwrap();
        let (_, weight, _, dscale, digits) = parts(big, 10);
        assert_eq!((weight, dscale), (6, 10));
        assert_eq!((digits.len(), digits[0], digits[9]), (10, 9999, 9900));
    }

    /// The digits path (256-bit decimals) writes what the i128 path does.
    #[test]
    fn digit_strings_encode_like_integers() {
        for (v, scale) in [
            (12_345_678i128, 3i8),
            (-5, 2),
            (1_000_000_000_000, 0),
            (0, 2),
            (-987_654_321, -2),
            (i128::MAX / 7, 10),
        ] {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            numeric(&mut a, v, scale);
            numeric_digits(&mut b, v < 0, &v.unsigned_abs().to_string(), scale);
            assert_eq!(a, b, "{v} scale {scale}");
        }
        // Wider than an i128: 50 digits, scale 5.
        let mut out = Vec::new();
        numeric_digits(&mut out, true, &"12345".repeat(10), 5);
        let b = &out[4..];
        let u = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        // 1234512345…12345.12345 = 1|2345|1234|…|1234|5000, weight 11.
        assert_eq!((u(0), u(2) as i16, u(4), u(6)), (14, 11, 0x4000, 5));
        assert_eq!((u(8), u(10), u(12), u(8 + 2 * 13)), (1, 2345, 1234, 5000));
    }
}
