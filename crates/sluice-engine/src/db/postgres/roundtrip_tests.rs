//! Round trips of the PostgreSQL types Sluice reads and writes, through the
//! machine's PostgreSQL (postgres://postgres@127.0.0.1:5432/test; a server
//! that cannot be reached fails the tests):
//!
//! - [`decode`]: generated values go in with sqlx bind parameters (typed
//!   arrays, or text the server parses, unnested into a table of every
//!   type `postgres::decode` decodes), come back through the reader's own path
//!   ([`super::read::extract`]: describe, binary COPY, `decode`),
//!   and must be the values sent; a partitioned read must give the same;
//! - [`encode`]: generated Arrow columns are encoded by `postgres::encode` into a
//!   binary COPY as loads do it, and must come back the same both as the
//!   server's text and through the reader.
//!
//! Values come from proptest strategies driven by a seeded runner. The
//! seed is in every failure message; SLUICE_PG_ROUNDTRIP_SEED replays it.
//! This module holds what both share: values as compared, generators, and
//! the database.

mod decode;
mod encode;

use super::read as postgres;
use crate::db::DbTarget;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Decimal256Type, Float32Type, Float64Type, Int16Type,
    Int32Type, Int64Type, Time64MicrosecondType, TimeUnit, TimestampMicrosecondType, UInt32Type,
};
use futures::StreamExt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use sluice_core::config::SqlExtract;
use sqlx::{AssertSqlSafe, Connection, Row as _};

const URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Rows per generated table.
const ROWS: usize = 300;
/// The oldest time PostgreSQL holds, 4714-11-24 BC, in microseconds
/// since 1970.
const PG_MIN_MICROS: i64 = -210_866_803_200_000_000;
/// The oldest and the latest date PostgreSQL holds, in days since 1970.
const PG_MIN_DAYS: i64 = -2_440_588;
const PG_MAX_DAYS: i64 = 2_145_042_905;

// ---- values as compared ----

/// One value, read or expected, in a form that compares exactly.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Bool(bool),
    Int(i128),
    /// Bits; every NaN is the same NaN.
    F32(u32),
    F64(u64),
    /// The value as [`canonical_decimal`] text.
    Dec(String),
    Text(String),
    Bytes(Vec<u8>),
    Interval {
        months: i32,
        days: i32,
        micros: i64,
    },
    List(Vec<Cell>),
}

fn f32_cell(f: f32) -> Cell {
    Cell::F32(if f.is_nan() { f32::NAN } else { f }.to_bits())
}

fn f64_cell(f: f64) -> Cell {
    Cell::F64(if f.is_nan() { f64::NAN } else { f }.to_bits())
}

fn cells<T>(values: &[Option<T>], f: impl Fn(&T) -> Cell) -> Vec<Cell> {
    values
        .iter()
        .map(|v| v.as_ref().map_or(Cell::Null, &f))
        .collect()
}

fn cell(a: &dyn Array, i: usize) -> Cell {
    if a.is_null(i) {
        return Cell::Null;
    }
    match a.data_type() {
        DataType::Boolean => Cell::Bool(a.as_boolean().value(i)),
        DataType::Int16 => Cell::Int(a.as_primitive::<Int16Type>().value(i).into()),
        DataType::Int32 => Cell::Int(a.as_primitive::<Int32Type>().value(i).into()),
        DataType::Int64 => Cell::Int(a.as_primitive::<Int64Type>().value(i).into()),
        DataType::UInt32 => Cell::Int(a.as_primitive::<UInt32Type>().value(i).into()),
        DataType::Float32 => f32_cell(a.as_primitive::<Float32Type>().value(i)),
        DataType::Float64 => f64_cell(a.as_primitive::<Float64Type>().value(i)),
        DataType::Decimal128(_, s) => Cell::Dec(decimal_value(
            &a.as_primitive::<Decimal128Type>().value(i).to_string(),
            i32::from(*s),
        )),
        DataType::Decimal256(_, s) => Cell::Dec(decimal_value(
            &a.as_primitive::<Decimal256Type>().value(i).to_string(),
            i32::from(*s),
        )),
        DataType::Utf8 => Cell::Text(a.as_string::<i32>().value(i).to_string()),
        DataType::Binary => Cell::Bytes(a.as_binary::<i32>().value(i).to_vec()),
        DataType::Date32 => Cell::Int(a.as_primitive::<Date32Type>().value(i).into()),
        DataType::Time64(TimeUnit::Microsecond) => {
            Cell::Int(a.as_primitive::<Time64MicrosecondType>().value(i).into())
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Cell::Int(a.as_primitive::<TimestampMicrosecondType>().value(i).into())
        }
        DataType::Struct(_) => {
            let s = a.as_struct();
            Cell::Interval {
                months: s.column(0).as_primitive::<Int32Type>().value(i),
                days: s.column(1).as_primitive::<Int32Type>().value(i),
                micros: s.column(2).as_primitive::<Int64Type>().value(i),
            }
        }
        DataType::List(_) => {
            let items = a.as_list::<i32>().value(i);
            Cell::List((0..items.len()).map(|k| cell(items.as_ref(), k)).collect())
        }
        other => panic!("no cell for {other}; teach this test about it"),
    }
}

/// Column `col` of `batches`, all rows.
fn column_cells(batches: &[RecordBatch], col: usize) -> Vec<Cell> {
    batches
        .iter()
        .flat_map(|b| {
            let a = b.column(col);
            (0..a.len()).map(move |i| cell(a.as_ref(), i))
        })
        .collect()
}

/// Decimal text without a plus sign, leading zeros, trailing fractional
/// zeros or a bare point; zero is `0`.
fn canonical_decimal(text: &str) -> String {
    let (neg, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = rest.split_once('.').unwrap_or((rest, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let body = match (int.is_empty(), frac.is_empty()) {
        (true, true) => return "0".into(),
        (_, true) => int.to_string(),
        (true, false) => format!("0.{frac}"),
        (false, false) => format!("{int}.{frac}"),
    };
    if neg { format!("-{body}") } else { body }
}

/// The value of an unscaled integer (`-123`) at `scale`, canonical.
fn decimal_value(unscaled: &str, scale: i32) -> String {
    let (sign, digits) = match unscaled.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", unscaled),
    };
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return "0".into();
    }
    let text = if scale <= 0 {
        format!("{digits}{}", "0".repeat(scale.unsigned_abs() as usize))
    } else {
        let s = scale as usize;
        let padded = format!("{digits:0>w$}", w = s + 1);
        let (int, frac) = padded.split_at(padded.len() - s);
        format!("{int}.{frac}")
    };
    canonical_decimal(&format!("{sign}{text}"))
}

fn json_eq(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

// ---- generators ----

fn seeded_runner() -> (TestRunner, u64) {
    let seed = std::env::var("SLUICE_PG_ROUNDTRIP_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &key);
    (TestRunner::new_with_rng(Config::default(), rng), seed)
}

fn draw<S: Strategy>(runner: &mut TestRunner, strategy: S) -> S::Value {
    strategy
        .new_tree(runner)
        .expect("the strategy makes a value")
        .current()
}

/// A column's worth of values, about one in ten NULL.
fn values<S: Strategy>(runner: &mut TestRunner, strategy: S) -> Vec<Option<S::Value>> {
    draw(
        runner,
        prop::collection::vec(prop::option::weighted(0.9, strategy), ROWS),
    )
}

fn re(pattern: &str) -> BoxedStrategy<String> {
    proptest::string::string_regex(pattern)
        .expect("a valid generator pattern")
        .boxed()
}

/// Text PostgreSQL holds: anything but NUL, some of it long.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        6 => re("[^\\x00]{0,24}"),
        3 => re("[a-zA-Z0-9 ,\"'\\\\{}()\\t\\r\\n]{0,16}"),
        1 => Just(String::new()),
        1 => Just("NULL".to_string()),
        1 => re("[^\\x00]{2000,3000}"),
    ]
    .boxed()
}

fn digits(len: impl Into<prop::collection::SizeRange>) -> BoxedStrategy<String> {
    prop::collection::vec(0u8..10, len)
        .prop_map(|d| d.iter().map(|x| char::from(b'0' + x)).collect())
        .boxed()
}

/// A decimal's unscaled value: a sign and up to so many digits.
#[derive(Debug, Clone)]
struct Dec {
    neg: bool,
    digits: String,
}

impl Dec {
    fn unscaled(&self) -> String {
        let d = self.digits.trim_start_matches('0');
        match (d.is_empty(), self.neg) {
            (true, _) => "0".into(),
            (false, true) => format!("-{d}"),
            (false, false) => d.to_string(),
        }
    }

    /// The value at `scale`, canonical: also the text the server is sent.
    fn at(&self, scale: i32) -> String {
        decimal_value(&self.unscaled(), scale)
    }
}

fn decimal(max_digits: usize) -> BoxedStrategy<Dec> {
    prop_oneof![
        6 => (any::<bool>(), digits(0..=max_digits)),
        1 => (any::<bool>(), Just("9".repeat(max_digits))),
        1 => (any::<bool>(), (1..=max_digits).prop_map(|n| format!("1{}", "0".repeat(n - 1)))),
    ]
    .prop_map(|(neg, digits)| Dec { neg, digits })
    .boxed()
}

fn json_text() -> BoxedStrategy<String> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        // Few significant digits, so any float parser reads them exactly.
        (any::<i32>(), 0i32..6).prop_map(|(m, k)| Value::from(f64::from(m) / 10f64.powi(k))),
        re("[^\\x00]{0,8}").prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((re("[a-z\"\\\\é]{0,4}"), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    });
    (value, any::<bool>())
        .prop_map(|(v, pretty)| {
            if pretty {
                serde_json::to_string_pretty(&v).expect("JSON")
            } else {
                serde_json::to_string(&v).expect("JSON")
            }
        })
        .boxed()
}

/// Days since 1970 that both PostgreSQL and chrono hold.
fn days() -> BoxedStrategy<i64> {
    prop_oneof![
        4 => PG_MIN_DAYS..=95_000_000i64,
        4 => -40_000i64..=40_000,
        1 => prop::sample::select(vec![PG_MIN_DAYS, -1, 0, 1, 10_957, 11_016, 95_000_000]),
    ]
    .boxed()
}

/// Microseconds since 1970 that both PostgreSQL and chrono hold.
fn micros() -> BoxedStrategy<i64> {
    prop_oneof![
        4 => PG_MIN_MICROS..=8_000_000_000_000_000_000i64,
        4 => -3_000_000_000_000_000i64..=5_000_000_000_000_000,
        1 => prop::sample::select(vec![
            PG_MIN_MICROS,
            -1,
            0,
            1,
            946_684_799_999_999,
            946_684_800_000_000,
            8_000_000_000_000_000_000,
        ]),
    ]
    .boxed()
}

// ---- shared renderings ----

/// A UUID in one of the spellings PostgreSQL and the uuid crate take;
/// style 0 is the canonical one.
fn uuid_text(bytes: &[u8; 16], style: u8) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hyphenated = format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    match style {
        0 => hyphenated,
        1 => hyphenated.to_uppercase(),
        2 => format!("{{{hyphenated}}}"),
        _ => hex,
    }
}

/// `s` padded with spaces to `chars` characters, as `char(n)` holds it.
fn pad(s: &str, chars: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(chars.saturating_sub(n)))
}

/// A column's values as text, NULL kept.
fn texts<T>(values: &[Option<T>], f: impl Fn(&T) -> String) -> Vec<Option<String>> {
    values.iter().map(|v| v.as_ref().map(&f)).collect()
}

// ---- the database ----

async fn connect() -> sqlx::PgConnection {
    sqlx::PgConnection::connect(URL)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 (the tests need it)")
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

async fn exec(conn: &mut sqlx::PgConnection, sql: String) {
    if let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql.clone()))
        .execute(&mut *conn)
        .await
    {
        panic!("{sql}: {e}");
    }
}

/// Every column of every row of `sql`'s result, as text.
async fn text_rows(conn: &mut sqlx::PgConnection, sql: String) -> Vec<Vec<Option<String>>> {
    let rows = match sqlx::query::<sqlx::Postgres>(AssertSqlSafe(sql.clone()))
        .fetch_all(&mut *conn)
        .await
    {
        Ok(rows) => rows,
        Err(e) => panic!("{sql}: {e}"),
    };
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| r.try_get::<Option<String>, _>(i).expect("a text column"))
                .collect()
        })
        .collect()
}

/// `query` read by Sluice's PostgreSQL reader: every batch, or the error.
async fn read(
    query: &str,
    batch_size: usize,
    partitions: usize,
) -> std::result::Result<Vec<RecordBatch>, String> {
    let target = DbTarget {
        name: "roundtrip".into(),
        url: URL.into(),
        password: None,
    };
    let spec = SqlExtract {
        connection: URL.into(),
        query: query.into(),
        batch_size,
        partition_on: (partitions > 1).then(|| "id".to_string()),
        partitions,
        incremental: None,
    };
    let mut stream = postgres::extract(&target, query, &spec)
        .await
        .map_err(|e| e.to_string())?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.next().await {
        batches.push(batch.map_err(|e| e.to_string())?);
    }
    Ok(batches)
}
