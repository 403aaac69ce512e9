//! Arrow to PostgreSQL: columns encoded by `postgres::encode` and sent by binary
//! COPY, as loads write them, read back as the server's text and by
//! Sluice's reader.

use super::{
    Cell, PG_MAX_DAYS, PG_MIN_DAYS, PG_MIN_MICROS, ROWS, canonical_decimal, cells, column_cells,
    connect, decimal, decimal_value, exec, f32_cell, f64_cell, json_eq, json_text, pad, re, read,
    seeded_runner, text, text_rows, texts, unique, uuid_text, values,
};
use crate::db::postgres::decode::SIGNATURE;
use crate::db::postgres::encode::{self as pg_encode, Target};
use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Decimal256Array,
    Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array, StringArray,
    TimestampMicrosecondArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, TimeUnit, i256};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use std::sync::Arc;

/// The server's text of a column: `{c}` is the column's name.
const AS_TEXT: &str = "{c}::text";
const EPOCH: &str = "extract(epoch from {c})::text";

/// How the server's text of a column compares with the expected text.
#[derive(Clone, Copy)]
enum TextIs {
    Exact,
    Float32,
    Float64,
    Decimal,
    Json,
}

fn text_matches(how: TextIs, want: &str, got: &str) -> bool {
    match how {
        TextIs::Exact => want == got,
        TextIs::Float32 => match (want.parse::<f32>(), got.parse::<f32>()) {
            (Ok(a), Ok(b)) => f32_cell(a) == f32_cell(b),
            _ => false,
        },
        TextIs::Float64 => match (want.parse::<f64>(), got.parse::<f64>()) {
            (Ok(a), Ok(b)) => f64_cell(a) == f64_cell(b),
            _ => false,
        },
        TextIs::Decimal => canonical_decimal(want) == canonical_decimal(got),
        TextIs::Json => json_eq(want, got),
    }
}

/// One column a load writes: the Arrow column and the table's type, and
/// what the server and then the reader must hold.
struct Case {
    name: &'static str,
    sql_type: &'static str,
    target: Target,
    array: ArrayRef,
    /// SQL giving the server's text of the column.
    text_sql: &'static str,
    text: Vec<Option<String>>,
    text_is: TextIs,
    /// What the reader reads back (jsonb compares as JSON).
    arrow: DataType,
    cells: Vec<Cell>,
}

fn int<T: Copy + Into<i128>>(x: &T) -> Cell {
    Cell::Int((*x).into())
}

fn shown<T: ToString>(x: &T) -> String {
    x.to_string()
}

fn floats32() -> BoxedStrategy<f32> {
    prop_oneof![
        6 => prop::num::f32::ANY,
        1 => Just(f32::NAN),
        1 => Just(-0.0f32),
        1 => Just(f32::MIN_POSITIVE / 8.0),
    ]
    .boxed()
}

/// Microseconds since 1970 the encoder may send: from the oldest time
/// PostgreSQL holds to the latest Arrow holds.
/// Up to the microsecond before `i64::MAX`: at `i64::MAX` itself
/// PostgreSQL's `extract(epoch …)`, the reference rendering, overflows its
/// exact path and answers a rounded float.
fn stamps() -> BoxedStrategy<i64> {
    const LAST: i64 = i64::MAX - 1;
    prop_oneof![
        4 => PG_MIN_MICROS..=LAST,
        4 => -3_000_000_000_000_000i64..=5_000_000_000_000_000,
        1 => prop::sample::select(vec![PG_MIN_MICROS, -1, 0, 946_684_800_000_000, LAST]),
    ]
    .boxed()
}

/// A column of every Arrow type, into every PostgreSQL type, the encoder
/// writes.
fn cases(r: &mut TestRunner) -> Vec<Case> {
    let mut cases = Vec::new();
    let v = values(r, any::<i16>());
    cases.push(Case {
        name: "c_int2",
        sql_type: "int2",
        target: Target::Int2,
        text_sql: AS_TEXT,
        text: texts(&v, shown),
        text_is: TextIs::Exact,
        arrow: DataType::Int16,
        cells: cells(&v, int),
        array: Arc::new(Int16Array::from(v)),
    });
    let v = values(r, any::<i8>());
    cases.push(Case {
        name: "c_int2_from_int8",
        sql_type: "int2",
        target: Target::Int2,
        text_sql: AS_TEXT,
        text: texts(&v, shown),
        text_is: TextIs::Exact,
        arrow: DataType::Int16,
        cells: cells(&v, int),
        array: Arc::new(Int8Array::from(v)),
    });
    let v = values(r, any::<i32>());
    cases.push(Case {
        name: "c_int4",
        sql_type: "int4",
        target: Target::Int4,
        text_sql: AS_TEXT,
        text: texts(&v, shown),
        text_is: TextIs::Exact,
        arrow: DataType::Int32,
        cells: cells(&v, int),
        array: Arc::new(Int32Array::from(v)),
    });
    let v = values(r, any::<i64>());
    cases.push(Case {
        name: "c_int8",
        sql_type: "int8",
        target: Target::Int8,
        text_sql: AS_TEXT,
        text: texts(&v, shown),
        text_is: TextIs::Exact,
        arrow: DataType::Int64,
        cells: cells(&v, int),
        array: Arc::new(Int64Array::from(v)),
    });
    let v = values(r, any::<u32>());
    cases.push(Case {
        name: "c_int8_from_uint32",
        sql_type: "int8",
        target: Target::Int8,
        text_sql: AS_TEXT,
        text: texts(&v, shown),
        text_is: TextIs::Exact,
        arrow: DataType::Int64,
        cells: cells(&v, int),
        array: Arc::new(UInt32Array::from(v)),
    });
    let v = values(r, prop_oneof![any::<u64>(), Just(u64::MAX)]);
    cases.push(Case {
        name: "c_numeric_from_uint64",
        sql_type: "numeric(20,0)",
        target: Target::Numeric,
        text_sql: AS_TEXT,
        text: texts(&v, shown),
        text_is: TextIs::Decimal,
        arrow: DataType::Decimal128(20, 0),
        cells: cells(&v, |x| Cell::Dec(x.to_string())),
        array: Arc::new(UInt64Array::from(v)),
    });
    // An unconstrained numeric reads back at scale 10.
    let v = values(r, any::<i64>());
    cases.push(Case {
        name: "c_numeric_from_int64",
        sql_type: "numeric",
        target: Target::Numeric,
        text_sql: AS_TEXT,
        text: texts(&v, shown),
        text_is: TextIs::Decimal,
        arrow: DataType::Decimal128(38, 10),
        cells: cells(&v, |x| Cell::Dec(x.to_string())),
        array: Arc::new(Int64Array::from(v)),
    });
    let v = values(r, floats32());
    cases.push(Case {
        name: "c_float4",
        sql_type: "float4",
        target: Target::Float4,
        text_sql: AS_TEXT,
        text: texts(&v, shown),
        text_is: TextIs::Float32,
        arrow: DataType::Float32,
        cells: cells(&v, |x| f32_cell(*x)),
        array: Arc::new(Float32Array::from(v)),
    });
    let v = values(r, floats32());
    cases.push(Case {
        name: "c_float8_from_float4",
        sql_type: "float8",
        target: Target::Float8,
        text_sql: AS_TEXT,
        text: texts(&v, |x| f64::from(*x).to_string()),
        text_is: TextIs::Float64,
        arrow: DataType::Float64,
        cells: cells(&v, |x| f64_cell(f64::from(*x))),
        array: Arc::new(Float32Array::from(v)),
    });
    let v = values(
        r,
        prop_oneof![6 => prop::num::f64::ANY, 1 => Just(f64::NAN), 1 => Just(5e-324)],
    );
    cases.push(Case {
        name: "c_float8",
        sql_type: "float8",
        target: Target::Float8,
        text_sql: AS_TEXT,
        text: texts(&v, shown),
        text_is: TextIs::Float64,
        arrow: DataType::Float64,
        cells: cells(&v, |x| f64_cell(*x)),
        array: Arc::new(Float64Array::from(v)),
    });

    // 38 digits at scale 10 do not fit an i128 once shifted onto the
    // base-10000 groups: the encoder's slower path.
    for (name, sql_type, precision, scale, arrow) in [
        (
            "c_decimal_12_4",
            "numeric(12,4)",
            12u8,
            4i8,
            DataType::Decimal128(12, 4),
        ),
        (
            "c_decimal_38_10",
            "numeric(38,10)",
            38,
            10,
            DataType::Decimal128(38, 10),
        ),
        (
            "c_decimal_9_m3",
            "numeric(9,-3)",
            9,
            -3,
            DataType::Decimal128(9, -3),
        ),
        (
            "c_decimal_20_20",
            "numeric(20,20)",
            20,
            20,
            DataType::Decimal128(20, 20),
        ),
        (
            "c_decimal_30_6",
            "numeric",
            30,
            6,
            DataType::Decimal128(38, 10),
        ),
    ] {
        let v = values(r, decimal(usize::from(precision)));
        let unscaled: Vec<Option<i128>> = v
            .iter()
            .map(|o| {
                o.as_ref()
                    .map(|d| d.unscaled().parse().expect("fits an i128"))
            })
            .collect();
        let array = Decimal128Array::from(unscaled)
            .with_precision_and_scale(precision, scale)
            .expect("a valid decimal type");
        let scale = i32::from(scale);
        cases.push(Case {
            name,
            sql_type,
            target: Target::Numeric,
            text_sql: AS_TEXT,
            text: texts(&v, |d| d.at(scale)),
            text_is: TextIs::Decimal,
            arrow,
            cells: cells(&v, |d| Cell::Dec(d.at(scale))),
            array: Arc::new(array),
        });
    }
    let v = values(r, decimal(70));
    let unscaled: Vec<Option<i256>> = v
        .iter()
        .map(|o| {
            o.as_ref()
                .map(|d| i256::from_string(&d.unscaled()).expect("fits an i256"))
        })
        .collect();
    let array = Decimal256Array::from(unscaled)
        .with_precision_and_scale(70, 15)
        .expect("a valid decimal type");
    cases.push(Case {
        name: "c_decimal256_70_15",
        sql_type: "numeric(70,15)",
        target: Target::Numeric,
        text_sql: AS_TEXT,
        text: texts(&v, |d| d.at(15)),
        text_is: TextIs::Decimal,
        arrow: DataType::Decimal256(70, 15),
        cells: cells(&v, |d| Cell::Dec(d.at(15))),
        array: Arc::new(array),
    });

    for (name, sql_type, target, strategy, text_is) in [
        ("c_text", "text", Target::Text, text(), TextIs::Exact),
        (
            "c_varchar",
            "varchar(30)",
            Target::Text,
            re("[^\\x00]{0,30}"),
            TextIs::Exact,
        ),
        ("c_json", "json", Target::Json, json_text(), TextIs::Exact),
        ("c_jsonb", "jsonb", Target::Jsonb, json_text(), TextIs::Json),
    ] {
        let v = values(r, strategy);
        cases.push(Case {
            name,
            sql_type,
            target,
            text_sql: AS_TEXT,
            text: texts(&v, String::clone),
            text_is,
            arrow: DataType::Utf8,
            cells: cells(&v, |s| Cell::Text(s.clone())),
            array: Arc::new(StringArray::from(v)),
        });
    }
    // char(n) pads to n characters; its text drops trailing spaces.
    let v = values(r, re("[^\\x00]{0,7} {0,3}"));
    cases.push(Case {
        name: "c_bpchar",
        sql_type: "char(10)",
        target: Target::Text,
        text_sql: AS_TEXT,
        text: texts(&v, |s| s.trim_end_matches(' ').to_string()),
        text_is: TextIs::Exact,
        arrow: DataType::Utf8,
        cells: cells(&v, |s| Cell::Text(pad(s, 10))),
        array: Arc::new(StringArray::from(v)),
    });
    let v = values(r, (any::<[u8; 16]>(), 0u8..4));
    cases.push(Case {
        name: "c_uuid",
        sql_type: "uuid",
        target: Target::Uuid,
        text_sql: AS_TEXT,
        text: texts(&v, |(b, _)| uuid_text(b, 0)),
        text_is: TextIs::Exact,
        arrow: DataType::Utf8,
        cells: cells(&v, |(b, _)| Cell::Text(uuid_text(b, 0))),
        array: Arc::new(StringArray::from(texts(&v, |(b, style)| {
            uuid_text(b, *style)
        }))),
    });
    let v = values(r, any::<bool>());
    cases.push(Case {
        name: "c_bool",
        sql_type: "bool",
        target: Target::Bool,
        text_sql: AS_TEXT,
        text: texts(&v, shown),
        text_is: TextIs::Exact,
        arrow: DataType::Boolean,
        cells: cells(&v, |b| Cell::Bool(*b)),
        array: Arc::new(BooleanArray::from(v)),
    });
    let (min_days, max_days) = (PG_MIN_DAYS as i32, PG_MAX_DAYS as i32);
    let v = values(
        r,
        prop_oneof![
            4 => min_days..=max_days,
            4 => -40_000i32..=40_000,
            1 => prop::sample::select(vec![min_days, 0, 10_957, max_days]),
        ],
    );
    cases.push(Case {
        name: "c_date",
        sql_type: "date",
        target: Target::Date,
        text_sql: "({c} - date '1970-01-01')::text",
        text: texts(&v, shown),
        text_is: TextIs::Exact,
        arrow: DataType::Date32,
        cells: cells(&v, int),
        array: Arc::new(Date32Array::from(v)),
    });
    let v = values(r, stamps());
    cases.push(Case {
        name: "c_timestamp",
        sql_type: "timestamp",
        target: Target::Timestamp,
        text_sql: EPOCH,
        text: texts(&v, |m| decimal_value(&m.to_string(), 6)),
        text_is: TextIs::Decimal,
        arrow: DataType::Timestamp(TimeUnit::Microsecond, None),
        cells: cells(&v, int),
        array: Arc::new(TimestampMicrosecondArray::from(v)),
    });
    let v = values(r, stamps());
    cases.push(Case {
        name: "c_timestamptz",
        sql_type: "timestamptz",
        target: Target::Timestamp,
        text_sql: EPOCH,
        text: texts(&v, |m| decimal_value(&m.to_string(), 6)),
        text_is: TextIs::Decimal,
        arrow: DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        cells: cells(&v, int),
        array: Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")),
    });
    let v = values(r, prop::collection::vec(any::<u8>(), 0..40));
    let array: BinaryArray = v.iter().map(|o| o.as_deref()).collect();
    cases.push(Case {
        name: "c_bytea",
        sql_type: "bytea",
        target: Target::Bytea,
        text_sql: "encode({c}, 'hex')",
        text: texts(&v, |b| b.iter().map(|x| format!("{x:02x}")).collect()),
        text_is: TextIs::Exact,
        arrow: DataType::Binary,
        cells: cells(&v, |b| Cell::Bytes(b.clone())),
        array: Arc::new(array),
    });
    cases
}

/// Arrow columns encoded by `postgres::encode` and sent by binary COPY, as loads
/// write them, hold the same values on the server and read back the same.
#[tokio::test]
async fn arrow_encoded_by_pg_encode_reads_back_the_same() {
    let (mut runner, seed) = seeded_runner();
    let cases = cases(&mut runner);
    let table = unique("sluice_rt_encode");
    let mut conn = connect().await;
    let columns: Vec<String> = cases
        .iter()
        .map(|c| format!("{} {}", c.name, c.sql_type))
        .collect();
    exec(
        &mut conn,
        format!(
            "CREATE TABLE {table} (id int4 PRIMARY KEY, {})",
            columns.join(", ")
        ),
    )
    .await;

    // The framing load.rs writes around the encoded values.
    let ids = Int32Array::from((0..ROWS as i32).collect::<Vec<i32>>());
    let mut buf: Vec<u8> = Vec::new();
    buf.extend_from_slice(SIGNATURE);
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    for row in 0..ROWS {
        buf.extend_from_slice(&(cases.len() as i16 + 1).to_be_bytes());
        pg_encode::encode(&ids, row, Target::Int4, &mut buf).expect("an id");
        for c in &cases {
            if let Err(e) = pg_encode::encode(c.array.as_ref(), row, c.target, &mut buf) {
                panic!("encoding {} row {row} (seed {seed}): {e}", c.name);
            }
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    let names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    let statement = format!(
        "COPY {table} (id, {}) FROM STDIN (FORMAT binary)",
        names.join(", ")
    );
    let copied = async {
        let mut copy = conn.copy_in_raw(&statement).await?;
        copy.send(buf).await?;
        copy.finish().await
    }
    .await;
    if let Err(e) = copied {
        // The connection may be stuck in the COPY: clean up on a new one.
        exec(&mut connect().await, format!("DROP TABLE {table}")).await;
        panic!("the server refused the COPY (seed {seed}): {e}");
    }

    let exprs: Vec<String> = cases
        .iter()
        .map(|c| c.text_sql.replace("{c}", c.name))
        .collect();
    let server = text_rows(
        &mut conn,
        format!("SELECT {} FROM {table} ORDER BY id", exprs.join(", ")),
    )
    .await;
    let read_back = read(&format!("SELECT * FROM {table} ORDER BY id"), 64, 1).await;
    exec(&mut conn, format!("DROP TABLE {table}")).await;
    let read_back = read_back.unwrap_or_else(|e| panic!("reading back (seed {seed}): {e}"));

    let mut problems: Vec<String> = Vec::new();
    assert_eq!(server.len(), ROWS, "rows on the server (seed {seed})");
    for (k, c) in cases.iter().enumerate() {
        for (i, row) in server.iter().enumerate() {
            let (want, got) = (&c.text[i], &row[k]);
            let same = match (want, got) {
                (Some(w), Some(g)) => text_matches(c.text_is, w, g),
                (None, None) => true,
                _ => false,
            };
            if !same {
                problems.push(format!(
                    "{} row {i} on the server: expected {want:?}, holds {got:?}",
                    c.name
                ));
            }
        }
    }
    let read_schema = match read_back.first() {
        Some(b) => b.schema(),
        None => panic!("no batch read back (seed {seed})"),
    };
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
        let got = column_cells(&read_back, k + 1);
        assert_eq!(got.len(), ROWS, "rows read back (seed {seed})");
        for (i, (g, w)) in got.iter().zip(&c.cells).enumerate() {
            let same = match (g, w, c.text_is) {
                (Cell::Text(g), Cell::Text(w), TextIs::Json) => json_eq(w, g),
                _ => g == w,
            };
            if !same {
                problems.push(format!(
                    "{} row {i} read back: expected {w:?}, read {g:?}",
                    c.name
                ));
            }
        }
    }
    let shown: Vec<&String> = problems.iter().take(25).collect();
    assert!(
        problems.is_empty(),
        "{} mismatches (seed {seed}; set SLUICE_PG_ROUNDTRIP_SEED to replay):\n{shown:#?}",
        problems.len()
    );
}
