//! The fast path for the usual shape of JSON logs: one flat object per
//! line whose values are scalars of the declared column types. It decodes
//! straight into Arrow builders, without arrow-json's intermediate tape.
//!
//! It only accepts what it can decode exactly as arrow-json would, and
//! gives up on a chunk (returns `None`) at anything else: a nested value,
//! a value of another type than its column's, an escaped or repeated key,
//! a number or timestamp in a form it does not parse itself. arrow-json
//! then decodes that chunk, so arrow-json's coercions and error messages
//! stay the reference and a bad line is reported the same way either way.

use super::lines::Line;
use super::typed::{Column, Value};
use arrow::array::{ArrayRef, AsArray};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A decoder for one schema; shared by the threads that parse chunks.
pub struct FlatJson {
    schema: SchemaRef,
    names: Vec<Box<[u8]>>,
    /// Bytes each string column took in the last chunk, so the next
    /// chunk's builders start at about the right size instead of growing
    /// (and copying) from empty.
    sizes: Vec<AtomicUsize>,
}

impl FlatJson {
    /// A decoder for `schema`, or `None` when a column has a type the fast
    /// path does not decode (lists, structs, decimals, other timestamps).
    pub fn new(schema: SchemaRef) -> Option<FlatJson> {
        for f in schema.fields() {
            Column::for_arrow(f.data_type(), 0, 0)?;
        }
        let names = schema
            .fields()
            .iter()
            .map(|f| f.name().as_bytes().into())
            .collect();
        let sizes = schema
            .fields()
            .iter()
            .map(|_| AtomicUsize::new(0))
            .collect();
        Some(FlatJson {
            schema,
            names,
            sizes,
        })
    }

    /// Decodes the non-blank `lines` of `text` into one batch, or `None`
    /// when some line is outside what the fast path takes.
    pub fn decode(&self, text: &str, lines: &[&Line]) -> Option<RecordBatch> {
        let rows = lines.len();
        let fields = self.schema.fields();
        let mut builders: Vec<Column> = fields
            .iter()
            .zip(&self.sizes)
            .map(|(f, size)| {
                let hint = size.load(Ordering::Relaxed);
                Column::for_arrow(f.data_type(), rows, hint + hint / 8)
            })
            .collect::<Option<_>>()?;
        // The row (plus one) that last set each column: a second key for
        // the same column in a row is a repeated key.
        let mut set_in = vec![0usize; fields.len()];
        let mut scratch = String::new();
        for (row, line) in lines.iter().enumerate() {
            let mut p = Cursor {
                text,
                at: line.range.start,
                end: line.range.end,
            };
            self.object(&mut p, &mut builders, &mut set_in, row + 1, &mut scratch)?;
            for (b, set) in builders.iter_mut().zip(&set_in) {
                if *set != row + 1 {
                    b.push(&Value::Null);
                }
            }
        }
        let columns: Vec<ArrayRef> = builders.iter_mut().map(Column::finish).collect();
        for (c, size) in columns.iter().zip(&self.sizes) {
            if let Some(text) = c.as_string_opt::<i32>() {
                size.store(text.values().len(), Ordering::Relaxed);
            }
        }
        RecordBatch::try_new(self.schema.clone(), columns).ok()
    }

    /// One line: `{ "key": value, … }` and nothing after it but spaces.
    fn object(
        &self,
        p: &mut Cursor<'_>,
        builders: &mut [Column],
        set_in: &mut [usize],
        stamp: usize,
        scratch: &mut String,
    ) -> Option<()> {
        p.space();
        p.eat(b'{')?;
        p.space();
        let mut next = 0;
        if p.peek() == Some(b'}') {
            p.at += 1;
        } else {
            loop {
                p.space();
                let key = p.key()?;
                p.space();
                p.eat(b':')?;
                p.space();
                match self.column(key, next) {
                    Some(col) => {
                        if set_in[col] == stamp {
                            return None;
                        }
                        set_in[col] = stamp;
                        next = col + 1;
                        value(p, &mut builders[col], scratch)?;
                    }
                    None => p.skip_scalar(scratch)?,
                }
                p.space();
                match p.next()? {
                    b',' => continue,
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        p.space();
        (p.at == p.end).then_some(())
    }

    /// The column named `key`; keys usually come in the same order on
    /// every line, so the one after the last match is tried first.
    fn column(&self, key: &[u8], guess: usize) -> Option<usize> {
        if self.names.get(guess).is_some_and(|n| same(n, key)) {
            return Some(guess);
        }
        self.names.iter().position(|n| same(n, key))
    }
}

/// Byte equality for short keys, without a call to `memcmp` (which the
/// profile showed costing more than the comparison itself).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decodes one value into its column's builder.
fn value(p: &mut Cursor<'_>, b: &mut Column, scratch: &mut String) -> Option<()> {
    match p.peek()? {
        b'n' => {
            p.literal("null")?;
            b.push(&Value::Null);
        }
        b'"' => {
            let s = p.string(scratch)?;
            match b {
                Column::Str(b) => b.append_value(s),
                Column::Ts(b) => b.append_value(timestamp_micros(s.as_bytes())?),
                Column::Date(b) => b.append_value(date_days(s.as_bytes())?),
                _ => return None,
            }
        }
        b't' | b'f' => {
            let v = p.peek() == Some(b't');
            p.literal(if v { "true" } else { "false" })?;
            match b {
                Column::Bool(b) => b.append_value(v),
                _ => return None,
            }
        }
        b'-' | b'0'..=b'9' => {
            let (n, integral) = p.number()?;
            // An integer column takes integers only, in its type's range
            // (which parsing into that type checks).
            match b {
                Column::F64(b) => b.append_value(n.parse::<f64>().ok().filter(|v| v.is_finite())?),
                Column::F32(b) => b.append_value(n.parse::<f32>().ok().filter(|v| v.is_finite())?),
                _ if !integral => return None,
                Column::I8(b) => b.append_value(n.parse().ok()?),
                Column::I16(b) => b.append_value(n.parse().ok()?),
                Column::I32(b) => b.append_value(n.parse().ok()?),
                Column::I64(b) => b.append_value(n.parse().ok()?),
                Column::U8(b) => b.append_value(n.parse().ok()?),
                Column::U16(b) => b.append_value(n.parse().ok()?),
                Column::U32(b) => b.append_value(n.parse().ok()?),
                Column::U64(b) => b.append_value(n.parse().ok()?),
                _ => return None,
            }
        }
        _ => return None,
    }
    Some(())
}

/// A position in one line of the chunk's text.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
    end: usize,
}

impl<'a> Cursor<'a> {
    fn bytes(&self) -> &'a [u8] {
        &self.text.as_bytes()[..self.end]
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        let rest = self.bytes().get(self.at..)?;
        if !rest.starts_with(word.as_bytes()) {
            return None;
        }
        self.at += word.len();
        Some(())
    }

    /// A key: a string without escapes.
    fn key(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let bytes = self.bytes();
        let len = memchr::memchr2(b'"', b'\\', &bytes[self.at..])?;
        if bytes[self.at + len] != b'"' {
            return None;
        }
        let key = &bytes[self.at..self.at + len];
        self.at += len + 1;
        Some(key)
    }

    /// A string value. Borrowed from the text unless it has escapes, in
    /// which case it is unescaped into `scratch`.
    fn string<'s>(&mut self, scratch: &'s mut String) -> Option<&'s str>
    where
        'a: 's,
    {
        self.eat(b'"')?;
        let bytes = self.bytes();
        let start = self.at;
        let mut from = start;
        let mut escaped = false;
        loop {
            let len = memchr::memchr2(b'"', b'\\', &bytes[from..])?;
            let stop = from + len;
            // Raw control characters are not JSON.
            if bytes[from..stop].iter().any(|&c| c < 0x20) {
                return None;
            }
            if bytes[stop] == b'"' {
                self.at = stop + 1;
                if !escaped {
                    // Both ends are ASCII quotes, so this is on char boundaries.
                    return Some(&self.text[start..stop]);
                }
                scratch.push_str(&self.text[from..stop]);
                return Some(scratch.as_str());
            }
            if !escaped {
                scratch.clear();
                escaped = true;
            }
            scratch.push_str(&self.text[from..stop]);
            from = unescape(bytes, stop, scratch)?;
        }
    }

    /// A JSON number's text, and whether it is written as an integer.
    fn number(&mut self) -> Option<(&'a str, bool)> {
        let bytes = self.bytes();
        let start = self.at;
        let mut i = start;
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        let digits = |i: usize| bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        let int = digits(i);
        // No leading zeros, no bare sign.
        if int == 0 || (int > 1 && bytes[i] == b'0') {
            return None;
        }
        i += int;
        let mut integral = true;
        if bytes.get(i) == Some(&b'.') {
            let frac = digits(i + 1);
            if frac == 0 {
                return None;
            }
            i += 1 + frac;
            integral = false;
        }
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(bytes.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let exp = digits(i);
            if exp == 0 {
                return None;
            }
            i += exp;
            integral = false;
        }
        self.at = i;
        Some((&self.text[start..i], integral))
    }

    /// The value of a key no column takes: a scalar, checked and dropped.
    fn skip_scalar(&mut self, scratch: &mut String) -> Option<()> {
        match self.peek()? {
            b'"' => self.string(scratch).map(|_| ()),
            b'n' => self.literal("null"),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'-' | b'0'..=b'9' => self.number().map(|_| ()),
            _ => None,
        }
    }
}

/// Unescapes the escape at `bytes[at]` (a backslash) into `out`; returns
/// the position after it.
fn unescape(bytes: &[u8], at: usize, out: &mut String) -> Option<usize> {
    let c = match *bytes.get(at + 1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let hi = hex4(bytes.get(at + 2..at + 6)?)?;
            if (0xD800..0xDC00).contains(&hi) {
                // A surrogate pair: `\uD83D\uDE00`.
                if bytes.get(at + 6..at + 8)? != b"\\u" {
                    return None;
                }
                let lo = hex4(bytes.get(at + 8..at + 12)?)?;
                if !(0xDC00..0xE000).contains(&lo) {
                    return None;
                }
                out.push(char::from_u32(
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00),
                )?);
                return Some(at + 12);
            }
            out.push(char::from_u32(hi)?);
            return Some(at + 6);
        }
        _ => return None,
    };
    out.push(c);
    Some(at + 2)
}

fn hex4(b: &[u8]) -> Option<u32> {
    b.iter()
        .try_fold(0u32, |acc, &c| Some(acc * 16 + (c as char).to_digit(16)?))
}

/// Parses a fixed-width run of ASCII digits.
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// `YYYY-MM-DD` as days since 1970-01-01.
fn date_days(s: &[u8]) -> Option<i32> {
    if s.len() != 10 {
        return None;
    }
    civil_days(s)
}

/// Days since 1970-01-01 of the `YYYY-MM-DD` that `s` starts with,
/// validated (month, day of that month).
fn civil_days(s: &[u8]) -> Option<i32> {
    if s.get(4) != Some(&b'-') || s.get(7) != Some(&b'-') {
        return None;
    }
    let y = digits(s.get(0..4)?)? as i32;
    let m = digits(&s[5..7])?;
    let d = digits(&s[8..10])?;
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if d == 0 || d > month_days {
        return None;
    }
    // Days from the civil calendar (proleptic Gregorian), with March as
    // the first month so the leap day ends the year.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i32 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH:MM]` as microseconds since the
/// epoch in UTC; without an offset the time is UTC (the column's zone).
/// Digits past the microsecond are dropped, as arrow-json does.
fn timestamp_micros(s: &[u8]) -> Option<i64> {
    if s.len() < 19 || !matches!(s[10], b'T' | b' ') || s[13] != b':' || s[16] != b':' {
        return None;
    }
    let days = i64::from(civil_days(s)?);
    let h = digits(&s[11..13])?;
    let mi = digits(&s[14..16])?;
    let sec = digits(&s[17..19])?;
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if s.get(i) == Some(&b'.') {
        let n = s[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        let mut scale = 100_000;
        for &c in &s[i + 1..i + 1 + n.min(6)] {
            micros += i64::from(c - b'0') * scale;
            scale /= 10;
        }
        i += 1 + n;
    }
    let offset = match &s[i..] {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let oh = i64::from(digits(&[*h1, *h2])?);
            let om = i64::from(digits(&[*m1, *m2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = (oh * 60 + om) * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + sec) - offset;
    Some(secs * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("ts", crate::schema::timestamp_type(), true),
            Field::new("s", DataType::Utf8, true),
            Field::new("i", DataType::Int64, true),
            Field::new("small", DataType::Int8, true),
            Field::new("u", DataType::UInt16, true),
            Field::new("f", DataType::Float64, true),
            Field::new("g", DataType::Float32, true),
            Field::new("b", DataType::Boolean, true),
            Field::new("d", DataType::Date32, true),
        ]))
    }

    /// The lines as arrow-json decodes them (the reference).
    fn reference(schema: &SchemaRef, text: &str) -> Result<RecordBatch, String> {
        let decoder = arrow::json::ReaderBuilder::new(schema.clone())
            .with_batch_size(1 << 16)
            .build_decoder()
            .map_err(|e| e.to_string())?;
        super::super::lines::decode_all(decoder, text.as_bytes(), schema)?
            .ok_or_else(|| "no rows".to_string())
    }

    fn fast(schema: &SchemaRef, text: &str) -> Option<RecordBatch> {
        let chunk = super::super::Chunk {
            file: Arc::from("t.jsonl"),
            first_line: 1,
            data: bytes::Bytes::copy_from_slice(text.as_bytes()),
        };
        let all = super::super::lines::lines(&chunk);
        let records: Vec<&Line> = all.iter().filter(|l| !l.range.is_empty()).collect();
        FlatJson::new(schema.clone())?.decode(text, &records)
    }

    /// Lines the fast path must take, each decoded exactly as arrow-json
    /// decodes it.
    #[test]
    fn accepted_lines_match_arrow_json() {
        let s = schema();
        let lines = [
            r#"{"ts":"2024-01-01T00:00:00.123Z","s":"plain","i":42,"small":-128,"u":65535,"f":1.5,"g":0.1,"b":true,"d":"2024-02-29"}"#,
            r#"{"s":"tab\there \"q\" back\\slash \/ \b\f\r\n","i":-9223372036854775808}"#,
            r#"{"s":"caf\u00e9 \ud83d\ude00 日本語","f":-0.0,"g":3.4e38}"#,
            r#"{"i":9223372036854775807,"f":1e-300,"ts":"1970-01-01 00:00:00"}"#,
            r#"  { "b" : false , "i" : null , "s" : null, "ts": null } "#,
            r#"{}"#,
            r#"{"f":5,"g":-7,"ts":"2024-03-10T02:30:00+05:30","extra":"dropped","n":[1]}"#,
            r#"{"ts":"2024-12-31T23:59:59.999999999-08:00","unknown":12.5e3,"x":true,"y":null}"#,
            r#"{"ts":"1969-12-31T23:59:59.5Z","d":"1970-01-01","s":""}"#,
            r#"{"ts":"9999-12-31T23:59:59Z","d":"9999-12-31","u":0}"#,
            r#"{"ts":"0001-01-01T00:00:00Z","d":"1900-03-01","small":127}"#,
            r#"{"d":"2000-02-29","f":123456789.123456789,"g":16777217}"#,
        ];
        for (n, line) in lines.iter().enumerate() {
            // The unknown key "n" holds an array: only that line falls back.
            let got = fast(&s, line);
            if line.contains("\"n\":[") {
                assert!(got.is_none(), "line {n} should fall back");
                continue;
            }
            let got = got.unwrap_or_else(|| panic!("line {n} fell back: {line}"));
            let want = reference(&s, line).unwrap();
            assert_eq!(got, want, "line {n}: {line}");
        }
        // And all of them at once, but the one with an array.
        let text: String = lines
            .iter()
            .filter(|l| !l.contains("\"n\":["))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(fast(&s, &text).unwrap(), reference(&s, &text).unwrap());
    }

    /// A JSON value for one of the test schema's keys: mostly of the
    /// key's type, at and past its limits, sometimes of another type.
    fn json_value(key: &'static str) -> proptest::strategy::BoxedStrategy<String> {
        use proptest::prelude::*;
        let text =
            "[ -~é日😀\\\"\t\n\u{1}]{0,12}".prop_map(|s| serde_json::Value::String(s).to_string());
        let typed: BoxedStrategy<String> = match key {
            "ts" => (
                1i32..=9999,
                1u32..=12,
                1u32..=28,
                0u32..24,
                0u32..60,
                0u32..60,
                0u32..1_000_000,
                prop::sample::select(vec!["Z", "+05:30", "-08:00", ""]),
            )
                .prop_map(|(y, mo, d, h, mi, s, us, z)| {
                    format!("\"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}{z}\"")
                })
                .boxed(),
            "d" => (1i32..=9999, 1u32..=12, 1u32..=31)
                .prop_map(|(y, m, d)| format!("\"{y:04}-{m:02}-{d:02}\""))
                .boxed(),
            "s" => text.clone().boxed(),
            "i" => any::<i64>().prop_map(|n| n.to_string()).boxed(),
            "small" => (-300i32..300).prop_map(|n| n.to_string()).boxed(),
            "u" => (-5i64..70_000).prop_map(|n| n.to_string()).boxed(),
            "f" | "g" => prop_oneof![
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(|f| format!("{f:e}")),
                any::<i32>().prop_map(|n| n.to_string()),
                (-1000.0f64..1000.0).prop_map(|f| f.to_string()),
            ]
            .boxed(),
            "b" => any::<bool>().prop_map(|b| b.to_string()).boxed(),
            _ => text.clone().boxed(),
        };
        prop_oneof![
            8 => typed,
            1 => Just("null".to_string()),
            1 => prop_oneof![text, Just("[1]".to_string()), Just("{}".to_string()), Just("1.5".to_string()), Just("true".to_string())],
        ]
        .boxed()
    }

    fn json_line() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let keys = vec!["ts", "s", "i", "small", "u", "f", "g", "b", "d", "other"];
        prop::sample::subsequence(keys, 0..=10)
            .prop_shuffle()
            .prop_flat_map(|keys| {
                let values: Vec<_> = keys.iter().map(|k| json_value(k)).collect();
                (Just(keys), values, any::<bool>())
            })
            .prop_map(|(keys, values, spaced)| {
                let sep = if spaced { " , " } else { "," };
                let fields: Vec<String> = keys
                    .iter()
                    .zip(values)
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect();
                format!("{{{}}}", fields.join(sep))
            })
    }

    /// Differential: whatever lines the fast path decodes, it decodes as
    /// arrow-json does; what arrow-json rejects, it leaves alone. Most
    /// generated chunks must take the fast path, or this proves nothing.
    #[test]
    fn generated_lines_decode_as_arrow_json_does() {
        use proptest::strategy::Strategy;
        let cases = 4000;
        let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
            cases,
            failure_persistence: None,
            ..Default::default()
        });
        let fast_taken = std::cell::Cell::new(0u32);
        let s = schema();
        runner
            .run(
                &proptest::collection::vec(json_line(), 1..4).boxed(),
                |lines| {
                    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
                    match (fast(&s, &text), reference(&s, &text)) {
                        (Some(got), Ok(want)) => {
                            fast_taken.set(fast_taken.get() + 1);
                            proptest::prop_assert_eq!(got, want, "{}", text);
                        }
                        (Some(got), Err(e)) => proptest::prop_assert!(
                            false,
                            "fast path took what arrow-json rejects ({}): {} -> {:?}",
                            e,
                            text,
                            got
                        ),
                        (None, _) => {}
                    }
                    Ok(())
                },
            )
            .unwrap();
        assert!(
            fast_taken.get() > cases / 10,
            "only {} of {cases} chunks took the fast path",
            fast_taken.get()
        );
    }

    /// Lines the fast path leaves to arrow-json: a chunk holding one of
    /// them is not decoded here at all.
    #[test]
    fn other_lines_fall_back() {
        let s = schema();
        let good = r#"{"i":1}"#;
        for line in [
            r#"{"i":1.5}"#,
            r#"{"i":"12"}"#,
            r#"{"small":128}"#,
            r#"{"u":-1}"#,
            r#"{"u":65536}"#,
            r#"{"i":99999999999999999999}"#,
            r#"{"s":12}"#,
            r#"{"s":{"a":1}}"#,
            r#"{"b":"true"}"#,
            r#"{"ts":1700000000}"#,
            r#"{"ts":"2024-02-30T00:00:00Z"}"#,
            r#"{"ts":"2024-01-01T24:00:00Z"}"#,
            r#"{"ts":"2024-01-01T00:00:00+0530"}"#,
            r#"{"ts":"yesterday"}"#,
            r#"{"d":"2023-02-29"}"#,
            r#"{"f":1e400}"#,
            r#"{"f":01}"#,
            r#"{"f":1.}"#,
            r#"{"i":1,"i":2}"#,
            r#"{"s\u0041":"x"}"#,
            "{\"s\":\"raw\ttab\"}",
            r#"{"s":"\ud83d"}"#,
            r#"{"s":"\x"}"#,
            r#"{"i":1} {"i":2}"#,
            r#"{"i":1"#,
            r#"{"i":1,}"#,
            r#"[1]"#,
            r#"   "#,
        ] {
            let text = format!("{good}\n{line}\n{good}\n");
            assert!(fast(&s, &text).is_none(), "{line} should fall back");
        }
    }

    #[test]
    fn unsupported_types_use_arrow_json() {
        let s = Arc::new(Schema::new(vec![Field::new(
            "l",
            DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
            true,
        )]));
        assert!(FlatJson::new(s).is_none());
    }

    #[test]
    fn calendar() {
        assert_eq!(civil_days(b"1970-01-01"), Some(0));
        assert_eq!(civil_days(b"2000-03-01"), Some(11_017));
        assert_eq!(civil_days(b"1969-12-31"), Some(-1));
        assert_eq!(civil_days(b"0000-03-01"), Some(-719_468));
        assert_eq!(
            timestamp_micros(b"2024-01-01T00:00:00.000001Z"),
            Some(1_704_067_200_000_001)
        );
    }
}
