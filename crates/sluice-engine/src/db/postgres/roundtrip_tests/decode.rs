//! PostgreSQL to Arrow: values sent by sqlx, read back by Sluice's reader.

use super::{
    Cell, Dec, PG_MIN_MICROS, ROWS, canonical_decimal, cells, column_cells, connect, days, decimal,
    digits, exec, f32_cell, f64_cell, json_eq, json_text, micros, pad, re, read, seeded_runner,
    text, text_rows, texts, unique, uuid_text, values,
};
use arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use chrono::{Datelike, Timelike};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use sqlx::AssertSqlSafe;
use std::sync::Arc;

const ENUM_LABELS: [&str; 4] = ["sad", "ok", "très \"happy\" 😀", "with, comma {}"];

// ---- values as the server reads them ----

/// PostgreSQL writes years before 1 as `… BC`: year 0 is 1 BC.
fn era(year: i32) -> (i32, &'static str) {
    if year <= 0 {
        (1 - year, " BC")
    } else {
        (year, "")
    }
}

fn date_text(days: i64) -> String {
    let date = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)
        .and_then(|e| e.checked_add_signed(chrono::TimeDelta::try_days(days)?))
        .expect("a date chrono holds");
    let (year, era) = era(date.year());
    format!("{year:04}-{:02}-{:02}{era}", date.month(), date.day())
}

/// `micros` since 1970 (UTC) as the server's input, written in the zone
/// `offset_minutes` east of UTC, which is shown when given.
fn timestamp_text(micros: i64, offset_minutes: Option<i64>) -> String {
    let local = micros + offset_minutes.unwrap_or(0) * 60_000_000;
    let t = chrono::DateTime::from_timestamp_micros(local)
        .expect("a time chrono holds")
        .naive_utc();
    let (year, era) = era(t.year());
    let zone = match offset_minutes {
        None => String::new(),
        Some(m) => format!(
            "{}{:02}:{:02}",
            if m < 0 { '-' } else { '+' },
            m.abs() / 60,
            m.abs() % 60
        ),
    };
    format!(
        "{year:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}{zone}{era}",
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond() / 1000
    )
}

fn time_text(micros: i64) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        micros / 3_600_000_000,
        micros / 60_000_000 % 60,
        micros / 1_000_000 % 60,
        micros % 1_000_000
    )
}

fn interval_text((months, days, micros): (i32, i32, i64)) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let a = micros.unsigned_abs();
    format!(
        "{months} mons {days} days {sign}{}:{:02}:{:02}.{:06}",
        a / 3_600_000_000,
        a / 60_000_000 % 60,
        a / 1_000_000 % 60,
        a % 1_000_000
    )
}

/// A one-dimensional array as the server reads it.
fn array_literal<T>(items: &[Option<T>], show: impl Fn(&T) -> String) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|i| i.as_ref().map_or_else(|| "NULL".to_string(), &show))
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn quote_element(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

// ---- the table ----

/// A parameter: a whole column as one array the server unnests.
enum Param {
    Bool(Vec<Option<bool>>),
    I16(Vec<Option<i16>>),
    I32(Vec<Option<i32>>),
    I64(Vec<Option<i64>>),
    F32(Vec<Option<f32>>),
    F64(Vec<Option<f64>>),
    Bytes(Vec<Option<Vec<u8>>>),
    Text(Vec<Option<String>>),
}

impl Param {
    fn array_type(&self) -> &'static str {
        match self {
            Param::Bool(_) => "bool[]",
            Param::I16(_) => "int2[]",
            Param::I32(_) => "int4[]",
            Param::I64(_) => "int8[]",
            Param::F32(_) => "float4[]",
            Param::F64(_) => "float8[]",
            Param::Bytes(_) => "bytea[]",
            Param::Text(_) => "text[]",
        }
    }

    /// Row `i`'s value as sent, for messages.
    fn shown(&self, i: usize) -> String {
        match self {
            Param::Bool(v) => format!("{:?}", v[i]),
            Param::I16(v) => format!("{:?}", v[i]),
            Param::I32(v) => format!("{:?}", v[i]),
            Param::I64(v) => format!("{:?}", v[i]),
            Param::F32(v) => format!("{:?}", v[i]),
            Param::F64(v) => format!("{:?}", v[i]),
            Param::Bytes(v) => format!("{:?}", v[i]),
            Param::Text(v) => format!("{:?}", v[i]),
        }
    }
}

/// One column of the table: its type, what is sent, and what the reader
/// must give.
struct Case {
    name: &'static str,
    sql_type: String,
    arrow: DataType,
    param: Param,
    expected: Vec<Cell>,
}

/// A column sent as a typed array.
fn typed<S: Strategy>(
    r: &mut TestRunner,
    (name, sql_type, arrow): (&'static str, &str, DataType),
    strategy: S,
    expect: impl Fn(&S::Value) -> Cell,
    param: impl FnOnce(Vec<Option<S::Value>>) -> Param,
) -> Case {
    let v = values(r, strategy);
    Case {
        name,
        sql_type: sql_type.to_string(),
        arrow,
        expected: cells(&v, expect),
        param: param(v),
    }
}

/// A column sent as text for the server to parse.
fn parsed<S: Strategy>(
    r: &mut TestRunner,
    (name, sql_type, arrow): (&'static str, &str, DataType),
    strategy: S,
    expect: impl Fn(&S::Value) -> Cell,
    text: impl Fn(&S::Value) -> String,
) -> Case {
    let v = values(r, strategy);
    Case {
        name,
        sql_type: sql_type.to_string(),
        arrow,
        expected: cells(&v, expect),
        param: Param::Text(texts(&v, text)),
    }
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, true)))
}

fn int<T: Copy + Into<i128>>(x: &T) -> Cell {
    Cell::Int((*x).into())
}

fn same_text<T: ToString>(s: &T) -> Cell {
    Cell::Text(s.to_string())
}

fn floats32() -> BoxedStrategy<f32> {
    prop_oneof![
        6 => prop::num::f32::ANY,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(-0.0f32),
        1 => Just(f32::MIN_POSITIVE / 8.0),
        1 => Just(f32::MAX),
    ]
    .boxed()
}

fn floats64() -> BoxedStrategy<f64> {
    prop_oneof![
        6 => prop::num::f64::ANY,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-0.0f64),
        1 => Just(5e-324),
        1 => Just(f64::MAX),
    ]
    .boxed()
}

/// An unconstrained numeric as text: at most 28 integer digits (it is
/// read at scale 10), and maybe more fractional zeros than 10.
fn unconstrained_numeric() -> BoxedStrategy<String> {
    (
        any::<bool>(),
        digits(0..=28usize),
        digits(0..=10usize),
        0usize..=5,
    )
        .prop_map(|(neg, int, frac, zeros)| {
            let frac = format!("{frac}{}", "0".repeat(zeros));
            let int = if int.is_empty() { "0".to_string() } else { int };
            let point = if frac.is_empty() { "" } else { "." };
            format!("{}{int}{point}{frac}", if neg { "-" } else { "" })
        })
        .boxed()
}

fn list<S: Strategy>(
    item: S,
    len: std::ops::Range<usize>,
) -> impl Strategy<Value = Vec<Option<S::Value>>> {
    prop::collection::vec(prop::option::weighted(0.8, item), len)
}

/// A column of every type and shape the reader decodes. jsonb's expected
/// values are the server's normal form, filled in after the insert.
fn cases(r: &mut TestRunner, schema: &str) -> Vec<Case> {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
    let tstz = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let interval = DataType::Struct(Fields::from(vec![
        Field::new("months", DataType::Int32, false),
        Field::new("days", DataType::Int32, false),
        Field::new("microseconds", DataType::Int64, false),
    ]));
    let mood = format!("{schema}.mood");
    let moods = format!("{schema}.mood[]");
    let posint = format!("{schema}.posint");
    let money2 = format!("{schema}.money2");
    let labels = || prop::sample::select(ENUM_LABELS.to_vec());
    let mut cases = vec![
        typed(
            r,
            ("c_bool", "bool", DataType::Boolean),
            any::<bool>(),
            |x| Cell::Bool(*x),
            Param::Bool,
        ),
        typed(
            r,
            ("c_int2", "int2", DataType::Int16),
            prop_oneof![any::<i16>(), Just(i16::MIN), Just(i16::MAX), Just(0i16)],
            int,
            Param::I16,
        ),
        typed(
            r,
            ("c_int4", "int4", DataType::Int32),
            prop_oneof![any::<i32>(), Just(i32::MIN), Just(i32::MAX), Just(0i32)],
            int,
            Param::I32,
        ),
        typed(
            r,
            ("c_int8", "int8", DataType::Int64),
            prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), Just(0i64)],
            int,
            Param::I64,
        ),
        typed(
            r,
            ("c_oid", "oid", DataType::UInt32),
            prop_oneof![any::<u32>(), Just(u32::MAX), Just(0u32)],
            int,
            |v| Param::I64(v.iter().map(|o| o.map(i64::from)).collect()),
        ),
        typed(
            r,
            ("c_float4", "float4", DataType::Float32),
            floats32(),
            |x| f32_cell(*x),
            Param::F32,
        ),
        typed(
            r,
            ("c_float8", "float8", DataType::Float64),
            floats64(),
            |x| f64_cell(*x),
            Param::F64,
        ),
    ];
    for (name, precision, scale, arrow) in [
        ("c_numeric_10_3", 10usize, 3i32, DataType::Decimal128(10, 3)),
        ("c_numeric_38_0", 38, 0, DataType::Decimal128(38, 0)),
        ("c_numeric_5_m2", 5, -2, DataType::Decimal128(5, -2)),
        ("c_numeric_20_20", 20, 20, DataType::Decimal128(20, 20)),
        ("c_numeric_76_20", 76, 20, DataType::Decimal256(76, 20)),
    ] {
        let sql_type = format!("numeric({precision},{scale})");
        cases.push(parsed(
            r,
            (name, &sql_type, arrow),
            decimal(precision),
            |d| Cell::Dec(d.at(scale)),
            |d| d.at(scale),
        ));
    }
    cases.extend([
        parsed(
            r,
            ("c_numeric", "numeric", DataType::Decimal128(38, 10)),
            unconstrained_numeric(),
            |t| Cell::Dec(canonical_decimal(t)),
            String::clone,
        ),
        parsed(
            r,
            ("c_text", "text", DataType::Utf8),
            text(),
            same_text,
            String::clone,
        ),
        parsed(
            r,
            ("c_varchar", "varchar(16)", DataType::Utf8),
            re("[^\\x00]{0,16}"),
            same_text,
            String::clone,
        ),
        // char(n) is padded to n characters.
        parsed(
            r,
            ("c_bpchar", "char(6)", DataType::Utf8),
            re("[^\\x00]{0,6}"),
            |s| Cell::Text(pad(s, 6)),
            String::clone,
        ),
        parsed(
            r,
            ("c_name", "name", DataType::Utf8),
            re("[^\\x00]{0,15}"),
            same_text,
            String::clone,
        ),
        parsed(
            r,
            ("c_char", "\"char\"", DataType::Utf8),
            re("[\\x01-\\x7f]"),
            same_text,
            String::clone,
        ),
        parsed(
            r,
            ("c_xml", "xml", DataType::Utf8),
            re("[a-zA-Z0-9 àé日&<>\"']{0,12}").prop_map(|s| {
                let s = s
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;");
                format!("<r>{s}</r>")
            }),
            same_text,
            String::clone,
        ),
        typed(
            r,
            ("c_bytea", "bytea", DataType::Binary),
            prop::collection::vec(any::<u8>(), 0..40),
            |b| Cell::Bytes(b.clone()),
            Param::Bytes,
        ),
        parsed(r, ("c_date", "date", DataType::Date32), days(), int, |d| {
            date_text(*d)
        }),
        parsed(
            r,
            ("c_time", "time", DataType::Time64(TimeUnit::Microsecond)),
            prop_oneof![8 => 0i64..=86_400_000_000, 1 => Just(0i64), 1 => Just(86_400_000_000i64)],
            int,
            |m| time_text(*m),
        ),
        parsed(r, ("c_timestamp", "timestamp", ts), micros(), int, |m| {
            timestamp_text(*m, None)
        }),
        // A day clear of the oldest time, so that any zone can write it.
        parsed(
            r,
            ("c_timestamptz", "timestamptz", tstz),
            (
                micros().prop_map(|m| m.max(PG_MIN_MICROS + 86_400_000_000)),
                -840i64..=840,
            ),
            |(m, _)| Cell::Int((*m).into()),
            |(m, zone)| timestamp_text(*m, Some(*zone)),
        ),
        parsed(
            r,
            ("c_interval", "interval", interval),
            (
                -120_000i32..=120_000,
                -3_000_000i32..=3_000_000,
                prop_oneof![
                    -1_000_000_000_000_000i64..=1_000_000_000_000_000,
                    -100_000_000i64..=100_000_000
                ],
            ),
            |&(months, days, micros)| Cell::Interval {
                months,
                days,
                micros,
            },
            |v| interval_text(*v),
        ),
        parsed(
            r,
            ("c_uuid", "uuid", DataType::Utf8),
            (any::<[u8; 16]>(), 0u8..4),
            |(b, _)| Cell::Text(uuid_text(b, 0)),
            |(b, style)| uuid_text(b, *style),
        ),
        parsed(
            r,
            ("c_json", "json", DataType::Utf8),
            json_text(),
            same_text,
            String::clone,
        ),
        parsed(
            r,
            ("c_jsonb", "jsonb", DataType::Utf8),
            json_text(),
            same_text,
            String::clone,
        ),
        parsed(
            r,
            ("c_int4_array", "int4[]", list_of(DataType::Int32)),
            list(any::<i32>(), 0..5),
            |items| Cell::List(cells(items, int)),
            |items| array_literal(items, |x| x.to_string()),
        ),
        parsed(
            r,
            ("c_text_array", "text[]", list_of(DataType::Utf8)),
            list(re("[^\\x00]{0,8}"), 0..4),
            |items| Cell::List(cells(items, same_text)),
            |items| array_literal(items, |s| quote_element(s)),
        ),
        parsed(
            r,
            (
                "c_numeric_array",
                "numeric(12,3)[]",
                list_of(DataType::Decimal128(12, 3)),
            ),
            list(decimal(12), 0..4),
            |items| Cell::List(cells(items, |d: &Dec| Cell::Dec(d.at(3)))),
            |items| array_literal(items, |d| quote_element(&d.at(3))),
        ),
        parsed(
            r,
            ("c_enum", &mood, DataType::Utf8),
            labels(),
            same_text,
            |s| s.to_string(),
        ),
        parsed(
            r,
            ("c_enum_array", &moods, list_of(DataType::Utf8)),
            list(labels(), 0..4),
            |items| Cell::List(cells(items, same_text)),
            |items| array_literal(items, |s| quote_element(s)),
        ),
        typed(
            r,
            ("c_domain_int", &posint, DataType::Int32),
            prop_oneof![1i32..=i32::MAX, Just(1i32), Just(i32::MAX)],
            int,
            Param::I32,
        ),
        parsed(
            r,
            ("c_domain_numeric", &money2, DataType::Decimal128(8, 2)),
            decimal(8),
            |d| Cell::Dec(d.at(2)),
            |d| d.at(2),
        ),
    ]);
    cases
}

/// Every type `postgres::decode` decodes, sent by sqlx and read back by Sluice's
/// reader in small batches, and again in parts on three connections.
#[tokio::test]
async fn values_sent_by_sqlx_read_back_through_binary_copy() {
    let (mut runner, seed) = seeded_runner();
    let schema = unique("sluice_rt");
    let mut cases = cases(&mut runner, &schema);
    let mut conn = connect().await;
    let labels: Vec<String> = ENUM_LABELS
        .iter()
        .map(|l| format!("'{}'", l.replace('\'', "''")))
        .collect();
    let columns: Vec<String> = cases
        .iter()
        .map(|c| format!("{} {}", c.name, c.sql_type))
        .collect();
    exec(
        &mut conn,
        format!(
            "CREATE SCHEMA {schema}; \
             CREATE TYPE {schema}.mood AS ENUM ({}); \
             CREATE DOMAIN {schema}.posint AS int4 CHECK (VALUE > 0); \
             CREATE DOMAIN {schema}.money2 AS numeric(8,2); \
             CREATE TABLE {schema}.t (id int4 PRIMARY KEY, {})",
            labels.join(", "),
            columns.join(", ")
        ),
    )
    .await;

    let names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    let casts: Vec<String> = cases
        .iter()
        .map(|c| format!("u.{}::{}", c.name, c.sql_type))
        .collect();
    let params: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}", i + 2, c.param.array_type()))
        .collect();
    let insert = format!(
        "INSERT INTO {schema}.t (id, {names}) SELECT u.id, {casts} \
         FROM unnest($1::int4[], {params}) AS u(id, {names})",
        names = names.join(", "),
        casts = casts.join(", "),
        params = params.join(", ")
    );
    let mut q = sqlx::query::<sqlx::Postgres>(AssertSqlSafe(insert.clone()));
    q = q.bind((0..ROWS as i32).collect::<Vec<i32>>());
    for c in &cases {
        q = match &c.param {
            Param::Bool(v) => q.bind(v.clone()),
            Param::I16(v) => q.bind(v.clone()),
            Param::I32(v) => q.bind(v.clone()),
            Param::I64(v) => q.bind(v.clone()),
            Param::F32(v) => q.bind(v.clone()),
            Param::F64(v) => q.bind(v.clone()),
            Param::Bytes(v) => q.bind(v.clone()),
            Param::Text(v) => q.bind(v.clone()),
        };
    }
    if let Err(e) = q.execute(&mut conn).await {
        exec(&mut conn, format!("DROP SCHEMA {schema} CASCADE")).await;
        panic!("inserting (seed {seed}): {e}\n{insert}");
    }

    // jsonb reads back as the server's normal form of what was sent.
    let mut problems: Vec<String> = Vec::new();
    let normal = text_rows(
        &mut conn,
        format!("SELECT c_jsonb::text FROM {schema}.t ORDER BY id"),
    )
    .await;
    let jsonb = cases
        .iter_mut()
        .find(|c| c.name == "c_jsonb")
        .expect("a jsonb column");
    if let Param::Text(sent) = &jsonb.param {
        for (i, (sent, row)) in sent.iter().zip(&normal).enumerate() {
            if let (Some(s), Some(Some(n))) = (sent, row.first())
                && !json_eq(s, n)
            {
                problems.push(format!(
                    "c_jsonb row {i}: sent {s:?}, the server holds {n:?}"
                ));
            }
        }
    }
    jsonb.expected = normal
        .iter()
        .map(|row| match row.first() {
            Some(Some(t)) => Cell::Text(t.clone()),
            _ => Cell::Null,
        })
        .collect();

    let whole = read(&format!("SELECT * FROM {schema}.t ORDER BY id"), 37, 1).await;
    let parts = read(&format!("SELECT * FROM {schema}.t"), 50, 3).await;
    exec(&mut conn, format!("DROP SCHEMA {schema} CASCADE")).await;
    let whole = whole.unwrap_or_else(|e| panic!("reading back (seed {seed}): {e}"));
    let parts = parts.unwrap_or_else(|e| panic!("reading back in parts (seed {seed}): {e}"));

    let rows: usize = whole.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, ROWS, "rows read back (seed {seed})");
    assert!(
        whole.len() > 1,
        "batch_size = 37 must cut {ROWS} rows into batches"
    );
    let read_schema = whole[0].schema();
    assert_eq!(read_schema.fields().len(), cases.len() + 1);
    let want_ids: Vec<Cell> = (0..ROWS).map(|i| Cell::Int(i as i128)).collect();
    assert_eq!(
        column_cells(&whole, 0),
        want_ids,
        "ids in order (seed {seed})"
    );
    for (k, c) in cases.iter().enumerate() {
        let field = read_schema.field(k + 1);
        assert_eq!(field.name(), c.name);
        if field.data_type() != &c.arrow {
            problems.push(format!(
                "{}: read as {}, expected {}",
                c.name,
                field.data_type(),
                c.arrow
            ));
            continue;
        }
        let got = column_cells(&whole, k + 1);
        for (i, (g, w)) in got.iter().zip(&c.expected).enumerate() {
            if g != w {
                problems.push(format!(
                    "{} row {i}: sent {}, expected {w:?}, read {g:?}",
                    c.name,
                    c.param.shown(i)
                ));
            }
        }
    }

    // The parts of a partitioned read, put in id order, are the whole.
    let part_ids = column_cells(&parts, 0);
    let mut order: Vec<usize> = (0..part_ids.len()).collect();
    order.sort_by_key(|&i| match part_ids[i] {
        Cell::Int(id) => id,
        _ => i128::MAX,
    });
    for col in 0..=cases.len() {
        let part = column_cells(&parts, col);
        let sorted: Vec<Cell> = order.iter().map(|&i| part[i].clone()).collect();
        if column_cells(&whole, col) != sorted {
            problems.push(format!(
                "the partitioned read differs in column {}",
                read_schema.field(col).name()
            ));
        }
    }

    let shown: Vec<&String> = problems.iter().take(25).collect();
    assert!(
        problems.is_empty(),
        "{} mismatches (seed {seed}; set SLUICE_PG_ROUNDTRIP_SEED to replay):\n{shown:#?}",
        problems.len()
    );
}

/// Values an Arrow column cannot hold fail the read, saying why, instead
/// of landing as something else; the largest that fit are read.
#[tokio::test]
async fn values_arrow_cannot_hold_fail_the_read() {
    // Fail, not skip, without a server.
    drop(connect().await);
    for (query, needle) in [
        ("SELECT 'infinity'::date AS v", "infinity"),
        ("SELECT '-infinity'::timestamp AS v", "infinity"),
        ("SELECT 'infinity'::timestamptz AS v", "infinity"),
        ("SELECT 'NaN'::numeric(10,2) AS v", "NaN"),
        ("SELECT 'Infinity'::numeric AS v", "infinity"),
        ("SELECT 0.00000000001::numeric AS v", "fractional digits"),
        ("SELECT 1e28::numeric AS v", "does not fit"),
        ("SELECT '{{1,2},{3,4}}'::int4[] AS v", "dimensional"),
    ] {
        match read(query, 10, 1).await {
            Ok(batches) => panic!("{query} read as {batches:?}"),
            Err(e) => assert!(e.contains(needle), "{query}: {e}"),
        }
    }
    let largest = "9999999999999999999999999999.9999999999";
    let batches = read(&format!("SELECT {largest}::numeric AS v"), 10, 1)
        .await
        .expect("the largest unconstrained numeric Sluice reads");
    assert_eq!(column_cells(&batches, 0), vec![Cell::Dec(largest.into())]);
}
