//! Differential test of the hand-written `combined` parser: generated
//! nginx and Apache access-log lines (good ones, and ones broken the ways
//! real logs and scanners break them) go through [`CombinedParser`] and
//! through a reference built on the `regex` crate, and both must accept
//! the same lines, in the same places, with the same typed values, column
//! by column.
//!
//! The reference reads the format as `combined.rs` documents it: values
//! are kept as logged (escapes such as `\"` and `\x16` are not decoded),
//! `-` in remote_user, referer and user_agent is NULL and in bytes is 0, a
//! request that is not `METHOD PATH HTTP/…` is all path, and times become
//! UTC microseconds. Inside a quoted field a quote is escaped when an odd
//! number of backslashes precedes it: Apache writes `"` as `\"` and `\`
//! as `\\`, so `\\\"` is a backslash then a quote, both inside the field.
//!
//! Where the parser is deliberately lenient the reference is too, and
//! says so: a leap second (`:60`), offsets whose hours or minutes are out
//! of range (`+0099`), and a sign on the byte count (`-5`, `+5`).

use super::combined::CombinedParser;
use super::{Chunk, Parsed, Parser};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int32Type, Int64Type, TimestampMicrosecondType};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};
use std::sync::Arc;

/// Lines longer than this are bad records; some generated lines are.
const MAX_LINE_BYTES: usize = 200;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// One good line, as the reference reads it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    remote_addr: String,
    remote_user: Option<String>,
    time: i64,
    method: Option<String>,
    path: String,
    protocol: Option<String>,
    status: i32,
    bytes: i64,
    referer: Option<String>,
    user_agent: Option<String>,
}

/// The combined format as regular expressions.
struct Reference {
    line: ::regex::Regex,
    time: ::regex::Regex,
    request: ::regex::Regex,
    status: ::regex::Regex,
    bytes: ::regex::Regex,
}

impl Reference {
    fn new() -> Self {
        // A quote, then characters other than quote and backslash or a
        // backslash with the character it escapes, then a quote.
        let quoted = r#""((?:[^"\\]|\\.)*)""#;
        let line = format!(
            r"(?s)^([^ ]*) ([^ ]*) ([^ ]*) \[([^\]]*)\] {quoted} ([^ ]*) ([^ ]*) {quoted} {quoted}$"
        );
        let re = |p: &str| ::regex::Regex::new(p).expect("a valid reference pattern");
        Reference {
            line: re(&line),
            time: re(
                r"^([0-9]{2})/([A-Za-z]{3})/([0-9]{4}):([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})$",
            ),
            request: re(r"(?s)^([^ ]+) ([^ ]*) (HTTP/.*)$"),
            status: re(r"^[0-9]{3}$"),
            bytes: re(r"^[+-]?[0-9]+$"),
        }
    }

    /// Every non-blank line of `data` with its 1-based number and its row,
    /// `None` for a bad line. Lines end at `\n`, and one `\r` before it
    /// is not part of the line.
    fn chunk(&self, data: &[u8]) -> Vec<(u64, Option<Row>)> {
        let mut out = Vec::new();
        for (i, piece) in data.split(|b| *b == b'\n').enumerate() {
            let line = match piece {
                [rest @ .., b'\r'] => rest,
                _ => piece,
            };
            if line.is_empty() {
                continue;
            }
            out.push((i as u64 + 1, self.line(line)));
        }
        out
    }

    fn line(&self, line: &[u8]) -> Option<Row> {
        if line.len() > MAX_LINE_BYTES {
            return None;
        }
        let text = std::str::from_utf8(line).ok()?;
        let c = self.line.captures(text)?;
        let field = |i: usize| c.get(i).map_or("", |m| m.as_str());
        let time = self.time(field(4))?;
        let status_text = field(6);
        if !self.status.is_match(status_text) {
            return None;
        }
        let status: i32 = status_text.parse().ok()?;
        let bytes: i64 = match field(7) {
            "-" => 0,
            // Lenient like the parser: a sign is taken (see the module doc).
            b if self.bytes.is_match(b) => b.parse().ok()?,
            _ => return None,
        };
        let request = field(5);
        let (method, path, protocol) = match self.request.captures(request) {
            Some(r) => (
                Some(r[1].to_string()),
                r[2].to_string(),
                Some(r[3].to_string()),
            ),
            None => (None, request.to_string(), None),
        };
        Some(Row {
            remote_addr: field(1).to_string(),
            remote_user: dash_is_null(field(3)),
            time,
            method,
            path,
            protocol,
            status,
            bytes,
            referer: dash_is_null(field(8)),
            user_agent: dash_is_null(field(9)),
        })
    }

    /// `10/Oct/2000:13:55:36 -0700` as microseconds since the epoch (UTC).
    fn time(&self, s: &str) -> Option<i64> {
        let c = self.time.captures(s)?;
        let n = |i: usize| -> i64 { c[i].parse().expect("ASCII digits") };
        let month = MONTHS.iter().position(|m| *m == &c[2])? as u32 + 1;
        let date = chrono::NaiveDate::from_ymd_opt(n(3) as i32, month, n(1) as u32)?;
        let minute = date.and_hms_opt(n(4) as u32, n(5) as u32, 0)?;
        // Lenient like the parser: a leap second is taken.
        if n(6) > 60 {
            return None;
        }
        // Lenient like the parser: offsets are not range-checked.
        let sign = if &c[7] == "-" { -1 } else { 1 };
        let offset = sign * (n(8) * 3600 + n(9) * 60);
        Some((minute.and_utc().timestamp() + n(6) - offset) * 1_000_000)
    }
}

fn dash_is_null(s: &str) -> Option<String> {
    (s != "-").then(|| s.to_string())
}

/// One column of output, parser's or reference's, for comparing.
#[derive(Debug, PartialEq)]
enum Col {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
}

/// The parser's batches as columns, in schema order.
fn batch_columns(batches: &[RecordBatch]) -> Vec<(String, Col)> {
    let schema = CombinedParser::new(MAX_LINE_BYTES).schema();
    let mut out = Vec::new();
    for (i, f) in schema.fields().iter().enumerate() {
        let col = match f.data_type() {
            DataType::Utf8 => {
                let mut v = Vec::new();
                for b in batches {
                    let a = b.column(i).as_string::<i32>();
                    v.extend((0..a.len()).map(|r| a.is_valid(r).then(|| a.value(r).to_string())));
                }
                Col::Text(v)
            }
            DataType::Int32 => {
                let mut v = Vec::new();
                for b in batches {
                    let a = b.column(i).as_primitive::<Int32Type>();
                    v.extend((0..a.len()).map(|r| a.is_valid(r).then(|| i64::from(a.value(r)))));
                }
                Col::Int(v)
            }
            DataType::Int64 => {
                let mut v = Vec::new();
                for b in batches {
                    let a = b.column(i).as_primitive::<Int64Type>();
                    v.extend((0..a.len()).map(|r| a.is_valid(r).then(|| a.value(r))));
                }
                Col::Int(v)
            }
            DataType::Timestamp(..) => {
                let mut v = Vec::new();
                for b in batches {
                    let a = b.column(i).as_primitive::<TimestampMicrosecondType>();
                    v.extend((0..a.len()).map(|r| a.is_valid(r).then(|| a.value(r))));
                }
                Col::Int(v)
            }
            other => panic!("combined_schema has a {other} column; teach this test about it"),
        };
        out.push((f.name().clone(), col));
    }
    out
}

/// The reference's rows as columns, in the parser's schema order.
fn row_columns(rows: &[Row]) -> Vec<(String, Col)> {
    fn text(rows: &[Row], f: impl Fn(&Row) -> Option<String>) -> Col {
        Col::Text(rows.iter().map(f).collect())
    }
    fn int(rows: &[Row], f: impl Fn(&Row) -> i64) -> Col {
        Col::Int(rows.iter().map(|r| Some(f(r))).collect())
    }
    vec![
        (
            "remote_addr".into(),
            text(rows, |r| Some(r.remote_addr.clone())),
        ),
        ("remote_user".into(), text(rows, |r| r.remote_user.clone())),
        ("time".into(), int(rows, |r| r.time)),
        ("method".into(), text(rows, |r| r.method.clone())),
        ("path".into(), text(rows, |r| Some(r.path.clone()))),
        ("protocol".into(), text(rows, |r| r.protocol.clone())),
        ("status".into(), int(rows, |r| i64::from(r.status))),
        ("bytes".into(), int(rows, |r| r.bytes)),
        ("referer".into(), text(rows, |r| r.referer.clone())),
        ("user_agent".into(), text(rows, |r| r.user_agent.clone())),
    ]
}

fn parse(data: &[u8]) -> Parsed {
    let chunk = Chunk {
        file: Arc::from("generated.log"),
        first_line: 1,
        data: bytes::Bytes::copy_from_slice(data),
    };
    CombinedParser::new(MAX_LINE_BYTES)
        .parse(&chunk)
        .expect("a chunk of lines always parses; bad lines are reported")
}

// ---- generators ----

fn re(pattern: &str) -> BoxedStrategy<String> {
    proptest::string::string_regex(pattern)
        .expect("a valid generator pattern")
        .boxed()
}

fn pick(items: &[&'static str]) -> BoxedStrategy<String> {
    prop::sample::select(items.to_vec())
        .prop_map(String::from)
        .boxed()
}

fn remote_addr() -> BoxedStrategy<String> {
    prop_oneof![
        6 => (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        2 => pick(&["::1", "2001:db8::7", "fe80::1%eth0", "localhost", "unix:"]),
        1 => re("[^ \\r\\n]{0,6}"),
    ]
    .boxed()
}

fn ident() -> BoxedStrategy<String> {
    prop_oneof![
        8 => Just("-".to_string()),
        1 => re("[a-z]{1,5}"),
        1 => re("[^ \\r\\n]{0,3}"),
    ]
    .boxed()
}

fn remote_user() -> BoxedStrategy<String> {
    prop_oneof![
        5 => Just("-".to_string()),
        3 => re("[a-z][a-z0-9._@]{0,7}"),
        1 => re("[^ \\r\\n]{0,4}"),
        1 => Just(String::new()),
    ]
    .boxed()
}

fn clf_time(
    (day, month, year, hour, minute, second, sign, off_h, off_m): (
        u32,
        String,
        i32,
        u32,
        u32,
        u32,
        String,
        u32,
        u32,
    ),
) -> String {
    format!(
        "{day:02}/{month}/{year:04}:{hour:02}:{minute:02}:{second:02} {sign}{off_h:02}{off_m:02}"
    )
}

/// What goes between `[` and `]`.
fn time_local() -> BoxedStrategy<String> {
    let plausible = (
        1u32..=28,
        pick(&MONTHS),
        1970i32..=2038,
        0u32..24,
        0u32..60,
        0u32..60,
        pick(&["+", "-"]),
        0u32..=14,
        prop::sample::select(vec![0u32, 30, 45]),
    )
        .prop_map(clf_time);
    let edgy = (
        0u32..=32,
        pick(&["Jan", "Feb", "Jun", "Dec", "Foo", "oct", "OCT", "Ma"]),
        0i32..=9999,
        0u32..=24,
        0u32..=61,
        0u32..=61,
        pick(&["+", "-", " ", "x"]),
        0u32..=99,
        0u32..=99,
    )
        .prop_map(clf_time);
    // The same few times again and again, as in a real log: the parser
    // remembers the last one.
    let repeated = pick(&[
        "10/Oct/2000:13:55:36 -0700",
        "01/Nov/2023:00:00:07 +0900",
        "29/Feb/2024:23:59:60 +0000",
        "31/Dec/1969:23:59:59 -0000",
    ]);
    let garbage = prop_oneof![
        Just(String::new()),
        re("[^\\]\\r\\n]{0,30}"),
        pick(&[
            "10/Oct/2000:13:55:36",
            "10/Oct/2000:13:55:36 -07:00",
            " 10/Oct/2000:13:55:36 -0700",
            "10/Oct/2000:13:55:36 -0700 ",
            "1/Oct/2000:13:55:36 -0700",
            "10/Oct/2000 13:55:36 -0700",
            "29/Feb/2023:00:00:00 +0000",
            "١٠/Oct/2000:13:55:36 -0700",
        ]),
    ];
    prop_oneof![8 => plausible, 3 => edgy, 3 => repeated, 1 => garbage].boxed()
}

/// The text between a quoted field's quotes: mostly plain, with escapes
/// as nginx (`\xNN`) and Apache (`\"`, `\\`) write them, and now and
/// then something that ends or breaks the field.
fn quoted_text(max_tokens: usize) -> BoxedStrategy<String> {
    let token = prop_oneof![
        30 => re("[a-zA-Z0-9/._~%?=&+;:,()-]{1,6}"),
        4 => re("[^\"\\\\\\r\\n]{1,3}"),
        3 => Just("\\\"".to_string()),
        3 => Just("\\\\".to_string()),
        3 => any::<u8>().prop_map(|b| format!("\\x{b:02X}")),
        3 => Just(" ".to_string()),
        // An escaped backslash then an escaped quote.
        1 => Just("\\\\\\\"".to_string()),
        1 => Just("\\".to_string()),
        1 => Just("\"".to_string()),
    ];
    prop::collection::vec(token, 0..max_tokens)
        .prop_map(|t| t.concat())
        .boxed()
}

fn method() -> BoxedStrategy<String> {
    pick(&[
        "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "get", "",
    ])
}

fn request() -> BoxedStrategy<String> {
    let protocol = pick(&[
        "HTTP/1.0",
        "HTTP/1.1",
        "HTTP/2.0",
        "HTTP/2",
        "HTTP/1.1 extra",
        "HTTP/",
        "http/1.1",
        "HTTP",
        "SSH-2.0-Go",
        "",
    ]);
    prop_oneof![
        6 => (method(), quoted_text(8), protocol).prop_map(|(m, p, v)| format!("{m} {p} {v}")),
        1 => (method(), quoted_text(8)).prop_map(|(m, p)| format!("{m} {p}")),
        1 => quoted_text(6),
        1 => Just("-".to_string()),
        // What a TLS handshake sent to a plain-HTTP port looks like.
        1 => prop::collection::vec(any::<u8>(), 1..4)
            .prop_map(|b| b.iter().map(|x| format!("\\x{x:02X}")).collect::<String>()),
    ]
    .boxed()
}

fn status() -> BoxedStrategy<String> {
    prop_oneof![
        8 => (100u32..=599).prop_map(|s| s.to_string()),
        1 => pick(&["000", "2x0", "20", "2000", "-", "", "+20", "٢٠٠"]),
    ]
    .boxed()
}

fn body_bytes() -> BoxedStrategy<String> {
    prop_oneof![
        6 => any::<u32>().prop_map(|n| n.to_string()),
        2 => Just("-".to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => pick(&[
            "+5",
            "-0",
            "00012",
            "99999999999999999999",
            "9223372036854775807",
            "9223372036854775808",
            "",
            "1.5",
            "0x10",
            "１",
        ]),
    ]
    .boxed()
}

fn quoted_field() -> BoxedStrategy<String> {
    prop_oneof![
        3 => Just("-".to_string()),
        6 => quoted_text(10),
        1 => Just(String::new()),
    ]
    .boxed()
}

/// A change that (usually) breaks a line.
#[derive(Debug, Clone)]
enum Mangle {
    Keep,
    Truncate(Index),
    Insert(Index, char),
    Delete(Index),
    NotUtf8(Index),
}

impl Mangle {
    fn apply(&self, line: String) -> Vec<u8> {
        let chars = line.chars().count();
        let byte_at = |i: &Index| {
            let k = i.index(chars + 1);
            line.char_indices().nth(k).map_or(line.len(), |(b, _)| b)
        };
        let mut bytes = line.clone().into_bytes();
        match self {
            Mangle::Keep => {}
            Mangle::Truncate(i) => bytes.truncate(byte_at(i)),
            Mangle::Insert(i, c) => {
                let tail = bytes.split_off(byte_at(i));
                bytes.extend_from_slice(c.to_string().as_bytes());
                bytes.extend_from_slice(&tail);
            }
            Mangle::Delete(i) => {
                let at = byte_at(i);
                let len = line[at..].chars().next().map_or(0, char::len_utf8);
                bytes.drain(at..at + len);
            }
            Mangle::NotUtf8(i) => bytes.insert(byte_at(i), 0xff),
        }
        bytes
    }
}

fn mangle() -> BoxedStrategy<Mangle> {
    prop_oneof![
        16 => Just(Mangle::Keep),
        1 => any::<Index>().prop_map(Mangle::Truncate),
        1 => (
            any::<Index>(),
            prop::sample::select(vec![' ', '"', '[', ']', '\\', '\t', '\r', '-', 'é']),
        )
            .prop_map(|(i, c)| Mangle::Insert(i, c)),
        1 => any::<Index>().prop_map(Mangle::Delete),
        1 => any::<Index>().prop_map(Mangle::NotUtf8),
    ]
    .boxed()
}

fn access_line() -> BoxedStrategy<Vec<u8>> {
    (
        (remote_addr(), ident(), remote_user(), time_local()),
        (request(), status(), body_bytes()),
        (quoted_field(), quoted_field()),
        mangle(),
    )
        .prop_map(
            |((addr, ident, user, time), (request, status, bytes), (referer, agent), m)| {
                m.apply(format!(
                    "{addr} {ident} {user} [{time}] \"{request}\" {status} {bytes} \"{referer}\" \"{agent}\""
                ))
            },
        )
        .boxed()
}

/// A line of a generated file, and whether it ends in `\r\n`.
#[derive(Debug, Clone)]
struct GenLine {
    bytes: Vec<u8>,
    crlf: bool,
}

fn gen_line() -> BoxedStrategy<GenLine> {
    (
        prop_oneof![
            24 => access_line(),
            1 => Just(Vec::<u8>::new()),
            1 => pick(&[" ", "\t", "-", "\r"]).prop_map(String::into_bytes),
        ],
        prop::bool::weighted(0.15),
    )
        .prop_map(|(bytes, crlf)| GenLine { bytes, crlf })
        .boxed()
}

fn join(lines: &[GenLine], newline_at_end: bool) -> Vec<u8> {
    let mut data = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        data.extend_from_slice(&l.bytes);
        if i + 1 < lines.len() || newline_at_end {
            let end: &[u8] = if l.crlf { b"\r\n" } else { b"\n" };
            data.extend_from_slice(end);
        }
    }
    data
}

/// Differential: for every generated chunk, the parser accepts exactly the
/// lines the reference accepts (the others are bad records, with their
/// line numbers and bytes) and gives every column the reference's values.
#[test]
fn generated_lines_parse_as_the_regex_reference_does() {
    let cases = 3000;
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Default::default()
    });
    let reference = Reference::new();
    let accepted = std::cell::Cell::new(0u64);
    let rejected = std::cell::Cell::new(0u64);
    runner
        .run(
            &(prop::collection::vec(gen_line(), 1..8), any::<bool>()),
            |(lines, newline_at_end)| {
                let data = join(&lines, newline_at_end);
                let shown = String::from_utf8_lossy(&data).into_owned();
                let want = reference.chunk(&data);
                let got = parse(&data);

                prop_assert_eq!(got.records, want.len() as u64, "records in:\n{}", shown);
                let want_bad: Vec<(u64, Vec<u8>)> = want
                    .iter()
                    .filter(|(_, row)| row.is_none())
                    .map(|(n, _)| {
                        let piece = data.split(|b| *b == b'\n').nth(*n as usize - 1);
                        let piece = piece.unwrap_or_default();
                        let line = match piece {
                            [rest @ .., b'\r'] => rest,
                            _ => piece,
                        };
                        (*n, line.to_vec())
                    })
                    .collect();
                let got_bad: Vec<(u64, Vec<u8>)> =
                    got.bad.iter().map(|b| (b.line, b.raw.to_vec())).collect();
                let reasons: Vec<&str> = got.bad.iter().map(|b| b.error.as_str()).collect();
                prop_assert_eq!(
                    &got_bad,
                    &want_bad,
                    "bad lines (parser's reasons: {:?}) of:\n{}",
                    reasons,
                    shown
                );

                let rows: Vec<Row> = want.into_iter().filter_map(|(_, row)| row).collect();
                accepted.set(accepted.get() + rows.len() as u64);
                rejected.set(rejected.get() + want_bad.len() as u64);
                let got_cols = batch_columns(&got.batches);
                let want_cols = row_columns(&rows);
                prop_assert_eq!(got_cols.len(), want_cols.len());
                for ((name, got_col), (want_name, want_col)) in got_cols.iter().zip(&want_cols) {
                    prop_assert_eq!(name, want_name);
                    prop_assert_eq!(got_col, want_col, "column {} of:\n{}", name, shown);
                }
                Ok(())
            },
        )
        .unwrap();
    // Both sides of the decision must have been exercised.
    assert!(
        accepted.get() > u64::from(cases),
        "only {} good lines in {cases} chunks",
        accepted.get()
    );
    assert!(
        rejected.get() > u64::from(cases) / 4,
        "only {} bad lines in {cases} chunks",
        rejected.get()
    );
}

/// The reference reads the examples of `combined.rs`'s own tests as they
/// say, so a disagreement above is worth a look.
#[test]
fn the_reference_reads_the_parsers_examples() {
    let r = Reference::new();
    let nginx = r
        .line(br#"203.0.113.9 - alice [01/Nov/2023:00:00:07 +0900] "GET /api/v1/users/7?x=\"y\" HTTP/1.1" 200 5123 "-" "curl/8.4.0""#)
        .expect("a good line");
    assert_eq!(
        nginx,
        Row {
            remote_addr: "203.0.113.9".into(),
            remote_user: Some("alice".into()),
            time: (1_698_796_807 - 9 * 3600) * 1_000_000,
            method: Some("GET".into()),
            path: r#"/api/v1/users/7?x=\"y\""#.into(),
            protocol: Some("HTTP/1.1".into()),
            status: 200,
            bytes: 5123,
            referer: None,
            user_agent: Some("curl/8.4.0".into()),
        }
    );
    let apache = r
        .line(br#"::1 - - [31/Dec/2023:23:59:59 -0000] "\x16\x03\x01" 400 - "-" "-""#)
        .expect("a good line");
    assert_eq!(apache.method, None);
    assert_eq!(apache.path, r"\x16\x03\x01");
    assert_eq!(apache.bytes, 0);
    assert!(r.line(b"garbage").is_none());
    assert!(
        r.line(br#"1.2.3.4 - - [32/Foo/2023:00:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "-""#)
            .is_none()
    );
    assert!(
        r.line(br#"1.2.3.4 - - [01/Nov/2023:00:00:00 +0000] "GET / HTTP/1.1" 2x0 1 "-" "-""#)
            .is_none()
    );
}

/// `[]` holds no time. The parser remembers the last time it read, and
/// that memory starts out as the empty string meaning 1970-01-01: until a
/// chunk's first good time, an empty one was taken for the epoch.
#[test]
fn an_empty_time_is_not_the_epoch() {
    let parsed = parse(br#"1.2.3.4 - - [] "GET / HTTP/1.1" 200 1 "-" "-""#);
    let rows: usize = parsed.batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!((rows, parsed.bad.len()), (0, 1), "{:?}", parsed.batches);
}

/// Apache logs a backslash as `\\` and a quote as `\"`: `\\\"` is both,
/// inside the field. The parser looked back two characters only, and took
/// the quote for the field's end.
#[test]
fn a_quote_after_an_escaped_backslash_is_still_escaped() {
    let parsed =
        parse(br#"1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /a\\\"b HTTP/1.1" 200 1 "-" "-""#);
    assert!(parsed.bad.is_empty(), "{:?}", parsed.bad);
    let cols = batch_columns(&parsed.batches);
    let path = cols.iter().find(|(name, _)| name == "path").map(|(_, c)| c);
    assert_eq!(path, Some(&Col::Text(vec![Some(r#"/a\\\"b"#.to_string())])));
}
