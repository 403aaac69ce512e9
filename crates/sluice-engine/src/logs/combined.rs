//! The nginx and Apache "combined" access-log formats, parsed by hand (no
//! regex) straight into typed columns:
//!
//! `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"`
//!
//! `-` in remote_user, referer and user_agent is NULL; Apache's `-` for
//! zero bytes is 0. A request that is not `METHOD PATH PROTOCOL` (scanners
//! send garbage) keeps its text in `path` with NULL method and protocol.

use super::lines::{bad, lines};
use super::{Chunk, Parsed, Parser};
use arrow::array::{
    ArrayRef, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

pub struct CombinedParser {
    schema: SchemaRef,
    max_line_bytes: usize,
}

impl CombinedParser {
    pub fn new(max_line_bytes: usize) -> Self {
        CombinedParser {
            schema: Arc::new(combined_schema()),
            max_line_bytes,
        }
    }
}

pub fn combined_schema() -> Schema {
    Schema::new(vec![
        Field::new("remote_addr", DataType::Utf8, false),
        Field::new("remote_user", DataType::Utf8, true),
        Field::new("time", crate::schema::timestamp_type(), false),
        Field::new("method", DataType::Utf8, true),
        Field::new("path", DataType::Utf8, false),
        Field::new("protocol", DataType::Utf8, true),
        Field::new("status", DataType::Int32, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("referer", DataType::Utf8, true),
        Field::new("user_agent", DataType::Utf8, true),
    ])
}

/// One parsed line, borrowing from the chunk.
#[derive(Debug)]
struct Entry<'a> {
    remote_addr: &'a str,
    remote_user: Option<&'a str>,
    time: i64,
    method: Option<&'a str>,
    path: &'a str,
    protocol: Option<&'a str>,
    status: i32,
    bytes: i64,
    referer: Option<&'a str>,
    user_agent: Option<&'a str>,
}

struct Builders {
    remote_addr: StringBuilder,
    remote_user: StringBuilder,
    time: TimestampMicrosecondBuilder,
    method: StringBuilder,
    path: StringBuilder,
    protocol: StringBuilder,
    status: Int32Builder,
    bytes: Int64Builder,
    referer: StringBuilder,
    user_agent: StringBuilder,
}

impl Builders {
    fn new(rows: usize, bytes: usize) -> Self {
        let s = |share: usize| StringBuilder::with_capacity(rows, bytes / share);
        Builders {
            remote_addr: s(12),
            remote_user: s(64),
            time: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            method: s(48),
            path: s(5),
            protocol: s(24),
            status: Int32Builder::with_capacity(rows),
            bytes: Int64Builder::with_capacity(rows),
            referer: s(8),
            user_agent: s(3),
        }
    }

    fn push(&mut self, e: &Entry<'_>) {
        self.remote_addr.append_value(e.remote_addr);
        self.remote_user.append_option(e.remote_user);
        self.time.append_value(e.time);
        self.method.append_option(e.method);
        self.path.append_value(e.path);
        self.protocol.append_option(e.protocol);
        self.status.append_value(e.status);
        self.bytes.append_value(e.bytes);
        self.referer.append_option(e.referer);
        self.user_agent.append_option(e.user_agent);
    }

    fn finish(mut self, schema: SchemaRef) -> crate::Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.remote_addr.finish()),
            Arc::new(self.remote_user.finish()),
            Arc::new(self.time.finish()),
            Arc::new(self.method.finish()),
            Arc::new(self.path.finish()),
            Arc::new(self.protocol.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.bytes.finish()),
            Arc::new(self.referer.finish()),
            Arc::new(self.user_agent.finish()),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

impl Parser for CombinedParser {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn parse(&self, chunk: &Chunk) -> crate::Result<Parsed> {
        let data = &chunk.data[..];
        let all_utf8 = std::str::from_utf8(data).is_ok();
        let all = lines(chunk);
        let mut builders = Builders::new(all.len(), data.len());
        let mut out = Parsed::default();
        let mut clock = TimeCache::default();
        for line in &all {
            let bytes = &data[line.range.clone()];
            if bytes.is_empty() {
                continue;
            }
            out.records += 1;
            if (!all_utf8 || bytes.len() > self.max_line_bytes)
                && let Some(problem) = super::lines::precheck(bytes, self.max_line_bytes)
            {
                out.bad.push(bad(chunk, line, problem));
                continue;
            }
            // Checked above: the chunk, or else this line, is UTF-8.
            let text = std::str::from_utf8(bytes).unwrap_or_default();
            match parse_line(text, &mut clock) {
                Ok(entry) => builders.push(&entry),
                Err(problem) => out.bad.push(bad(chunk, line, problem)),
            }
        }
        out.batches.push(builders.finish(self.schema.clone())?);
        Ok(out)
    }
}

/// A cursor over one line.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn until_space(&mut self, what: &str) -> Result<&'a str, String> {
        let rest = &self.s[self.pos..];
        let end = memchr::memchr(b' ', rest.as_bytes())
            .ok_or_else(|| format!("line ends before {what}"))?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    fn expect(&mut self, c: u8, what: &str) -> Result<(), String> {
        if self.s.as_bytes().get(self.pos) == Some(&c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!(
                "expected '{}' {what} at column {}",
                c as char,
                self.pos + 1
            ))
        }
    }

    /// A double-quoted field; `\"` inside it does not end it.
    fn quoted(&mut self, what: &str) -> Result<&'a str, String> {
        self.expect(b'"', &format!("before {what}"))?;
        let bytes = self.s.as_bytes();
        let start = self.pos;
        let mut i = start;
        loop {
            let off = memchr::memchr(b'"', &bytes[i..])
                .ok_or_else(|| format!("unterminated quote in {what}"))?;
            let q = i + off;
            // Apache writes `\` as `\\` and `"` as `\"`: a quote is escaped
            // when an odd number of backslashes precede it.
            let backslashes = bytes[start..q]
                .iter()
                .rev()
                .take_while(|&&b| b == b'\\')
                .count();
            if backslashes % 2 == 1 {
                i = q + 1;
                continue;
            }
            self.pos = q + 1;
            return Ok(&self.s[start..q]);
        }
    }
}

fn dash_is_null(s: &str) -> Option<&str> {
    if s == "-" { None } else { Some(s) }
}

fn parse_line<'a>(line: &'a str, clock: &mut TimeCache) -> Result<Entry<'a>, String> {
    let mut c = Cursor { s: line, pos: 0 };
    let remote_addr = c.until_space("remote_addr")?;
    let _ident = c.until_space("remote_user")?;
    let remote_user = dash_is_null(c.until_space("time")?);
    c.expect(b'[', "before time")?;
    let rest = &line[c.pos..];
    let close = memchr::memchr(b']', rest.as_bytes()).ok_or("unterminated [time]")?;
    let time = clock.parse(&rest[..close])?;
    c.pos += close + 1;
    c.expect(b' ', "after time")?;
    let request = c.quoted("request")?;
    c.expect(b' ', "after request")?;
    let status_text = c.until_space("bytes")?;
    let status: i32 = match status_text.as_bytes() {
        [a, b, d] if a.is_ascii_digit() && b.is_ascii_digit() && d.is_ascii_digit() => {
            ((a - b'0') as i32) * 100 + ((b - b'0') as i32) * 10 + (d - b'0') as i32
        }
        _ => return Err(format!("status \"{status_text}\" is not a 3-digit number")),
    };
    let bytes_text = c.until_space("referer")?;
    let bytes: i64 = if bytes_text == "-" {
        0
    } else {
        bytes_text
            .parse()
            .map_err(|_| format!("bytes \"{bytes_text}\" is not a number"))?
    };
    let referer = dash_is_null(c.quoted("referer")?);
    c.expect(b' ', "after referer")?;
    let user_agent = dash_is_null(c.quoted("user_agent")?);
    if c.pos != line.len() {
        return Err(format!(
            "unexpected text after user_agent at column {}",
            c.pos + 1
        ));
    }
    let mut parts = request.splitn(3, ' ');
    let (method, path, protocol) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(p), Some(v)) if !m.is_empty() && v.starts_with("HTTP/") => {
            (Some(m), p, Some(v))
        }
        _ => (None, request, None),
    };
    Ok(Entry {
        remote_addr,
        remote_user,
        time,
        method,
        path,
        protocol,
        status,
        bytes,
        referer,
        user_agent,
    })
}

/// Parses `10/Oct/2000:13:55:36 -0700` to microseconds since the epoch in
/// UTC, remembering the last second seen (log lines come in time order).
#[derive(Default)]
struct TimeCache {
    last: String,
    micros: i64,
}

impl TimeCache {
    fn parse(&mut self, s: &str) -> Result<i64, String> {
        // The cache starts empty, so an empty `[]` must not match it.
        if !s.is_empty() && s == self.last {
            return Ok(self.micros);
        }
        let micros = parse_clf_time(s).ok_or_else(|| {
            format!("invalid time \"{s}\"; expected e.g. 10/Oct/2000:13:55:36 -0700")
        })?;
        self.last.clear();
        self.last.push_str(s);
        self.micros = micros;
        Ok(micros)
    }
}

fn parse_clf_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 26
        || b[2] != b'/'
        || b[6] != b'/'
        || b[11] != b':'
        || b[14] != b':'
        || b[17] != b':'
        || b[20] != b' '
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + (d - b'0') as i64)
        })
    };
    let day = num(0..2)?;
    let month = match &b[3..6] {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    };
    let year = num(7..11)?;
    let (hour, minute, second) = (num(12..14)?, num(15..17)?, num(18..20)?);
    let sign = match b[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let offset = sign * (num(22..24)? * 3600 + num(24..26)? * 60);
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month, day as u32)?;
    let days = date
        .signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?)
        .num_days();
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(secs * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_line() {
        let line = r#"203.0.113.9 - alice [01/Nov/2023:00:00:07 +0900] "GET /api/v1/users/7?x=\"y\" HTTP/1.1" 200 5123 "-" "curl/8.4.0""#;
        let e = parse_line(line, &mut TimeCache::default()).unwrap();
        assert_eq!(e.remote_addr, "203.0.113.9");
        assert_eq!(e.remote_user, Some("alice"));
        assert_eq!(e.time, (1_698_796_807 - 9 * 3600) * 1_000_000);
        assert_eq!(
            (e.method, e.path, e.protocol),
            (Some("GET"), r#"/api/v1/users/7?x=\"y\""#, Some("HTTP/1.1"))
        );
        assert_eq!((e.status, e.bytes), (200, 5123));
        assert_eq!((e.referer, e.user_agent), (None, Some("curl/8.4.0")));
    }

    #[test]
    fn apache_dash_bytes_and_garbage_request() {
        let line = r#"::1 - - [31/Dec/2023:23:59:59 -0000] "\x16\x03\x01" 400 - "-" "-""#;
        let e = parse_line(line, &mut TimeCache::default()).unwrap();
        assert_eq!((e.method, e.path, e.bytes), (None, r"\x16\x03\x01", 0));
    }

    #[test]
    fn malformed_lines_say_why() {
        let mut c = TimeCache::default();
        assert!(
            parse_line("garbage", &mut c)
                .unwrap_err()
                .contains("line ends")
        );
        let bad_time = r#"1.2.3.4 - - [32/Foo/2023:00:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "-""#;
        assert!(
            parse_line(bad_time, &mut c)
                .unwrap_err()
                .contains("invalid time")
        );
        let bad_status =
            r#"1.2.3.4 - - [01/Nov/2023:00:00:00 +0000] "GET / HTTP/1.1" 2x0 1 "-" "-""#;
        assert!(
            parse_line(bad_status, &mut c)
                .unwrap_err()
                .contains("status")
        );
    }
}
