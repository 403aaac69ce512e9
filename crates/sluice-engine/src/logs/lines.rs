//! Line iteration over a chunk, with line numbers and `\r\n` handled.

use super::{BadRecord, Chunk};
use std::ops::Range;

/// One line of a chunk: its number and its byte range (without `\n` or `\r`).
#[derive(Debug, Clone)]
pub struct Line {
    pub number: u64,
    pub range: Range<usize>,
}

/// Every line of `chunk`, blank ones included.
pub fn lines(chunk: &Chunk) -> Vec<Line> {
    let data = &chunk.data[..];
    let mut out = Vec::with_capacity(data.len() / 128 + 1);
    let mut start = 0;
    let mut number = chunk.first_line;
    for nl in memchr::memchr_iter(b'\n', data) {
        out.push(Line {
            number,
            range: start..trim_cr(data, start, nl),
        });
        number += 1;
        start = nl + 1;
    }
    if start < data.len() {
        out.push(Line {
            number,
            range: start..trim_cr(data, start, data.len()),
        });
    }
    out
}

fn trim_cr(data: &[u8], start: usize, end: usize) -> usize {
    if end > start && data[end - 1] == b'\r' {
        end - 1
    } else {
        end
    }
}

/// A bad record for `line` of `chunk`.
pub fn bad(chunk: &Chunk, line: &Line, error: impl Into<String>) -> BadRecord {
    BadRecord {
        file: chunk.file.clone(),
        line: line.number,
        error: error.into(),
        raw: chunk.data.slice(line.range.clone()),
    }
}

/// The problem with a line that no format can accept, if any: too long or
/// not UTF-8.
pub fn precheck(data: &[u8], max_line_bytes: usize) -> Option<String> {
    if data.len() > max_line_bytes {
        return Some(format!(
            "line is {} bytes, over max_line_bytes ({max_line_bytes})",
            data.len()
        ));
    }
    if let Err(e) = std::str::from_utf8(data) {
        return Some(format!("invalid UTF-8 at byte {}", e.valid_up_to()));
    }
    None
}

/// Decodes bytes holding `n` records into one batch, or says why not.
pub type Decode<'a> =
    dyn Fn(&[u8], usize) -> Result<Option<arrow::record_batch::RecordBatch>, String> + 'a;

/// Decodes `records` of `chunk` with `decode`, a whole-batch decoder that
/// rejects a batch if any record in it is bad. On rejection the records are
/// halved until each bad one is alone, so good records are never lost and
/// a clean chunk costs one decode.
pub fn bisect_decode(
    chunk: &super::Chunk,
    records: &[Line],
    decode: &Decode<'_>,
    out: &mut super::Parsed,
) {
    if records.is_empty() {
        return;
    }
    let mut joined = Vec::new();
    for r in records {
        joined.extend_from_slice(&chunk.data[r.range.clone()]);
        joined.push(b'\n');
    }
    let error = match decode(&joined, records.len()) {
        Ok(Some(batch)) if batch.num_rows() == records.len() => {
            out.batches.push(batch);
            return;
        }
        Ok(None) => "the record holds no value".to_string(),
        Ok(Some(batch)) => format!("the record holds {} values, expected one", batch.num_rows()),
        Err(e) => e,
    };
    if records.len() == 1 {
        out.bad.push(bad(chunk, &records[0], error));
        return;
    }
    let mid = records.len() / 2;
    bisect_decode(chunk, &records[..mid], decode, out);
    bisect_decode(chunk, &records[mid..], decode, out);
}
