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

/// The streaming decoders of arrow-json and arrow-csv, which share a shape.
pub trait BatchDecoder {
    fn decode(&mut self, data: &[u8]) -> Result<usize, arrow::error::ArrowError>;
    fn flush(
        &mut self,
    ) -> Result<Option<arrow::record_batch::RecordBatch>, arrow::error::ArrowError>;
}

/// A borrowed decoder, so one can be reused across chunks.
impl<T: BatchDecoder> BatchDecoder for &mut T {
    fn decode(&mut self, data: &[u8]) -> Result<usize, arrow::error::ArrowError> {
        (**self).decode(data)
    }
    fn flush(
        &mut self,
    ) -> Result<Option<arrow::record_batch::RecordBatch>, arrow::error::ArrowError> {
        (**self).flush()
    }
}

impl BatchDecoder for arrow::json::reader::Decoder {
    fn decode(&mut self, data: &[u8]) -> Result<usize, arrow::error::ArrowError> {
        arrow::json::reader::Decoder::decode(self, data)
    }
    fn flush(
        &mut self,
    ) -> Result<Option<arrow::record_batch::RecordBatch>, arrow::error::ArrowError> {
        arrow::json::reader::Decoder::flush(self)
    }
}

impl BatchDecoder for arrow::csv::reader::Decoder {
    fn decode(&mut self, data: &[u8]) -> Result<usize, arrow::error::ArrowError> {
        arrow::csv::reader::Decoder::decode(self, data)
    }
    fn flush(
        &mut self,
    ) -> Result<Option<arrow::record_batch::RecordBatch>, arrow::error::ArrowError> {
        arrow::csv::reader::Decoder::flush(self)
    }
}

/// Feeds all of `data` to `decoder` and returns the rows as one batch.
pub fn decode_all(
    mut decoder: impl BatchDecoder,
    data: &[u8],
    schema: &arrow::datatypes::SchemaRef,
) -> Result<Option<arrow::record_batch::RecordBatch>, String> {
    let mut batches = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        let n = decoder.decode(&data[offset..]).map_err(|e| e.to_string())?;
        offset += n;
        if n == 0 {
            match decoder.flush().map_err(|e| e.to_string())? {
                Some(b) => batches.push(b),
                None => break,
            }
        }
    }
    if let Some(b) = decoder.flush().map_err(|e| e.to_string())? {
        batches.push(b);
    }
    match batches.len() {
        0 => Ok(None),
        1 => Ok(batches.pop()),
        _ => arrow::compute::concat_batches(schema, &batches)
            .map(Some)
            .map_err(|e| e.to_string()),
    }
}

/// Decodes `records` one run at a time: records that fail the
/// [`precheck`] are bad on their own, the runs between them go through
/// [`bisect_decode`]. Blank records are skipped.
pub fn decode_records(
    chunk: &Chunk,
    records: Vec<Line>,
    max_line_bytes: usize,
    decode: &Decode<'_>,
) -> super::Parsed {
    let mut out = super::Parsed::default();
    let mut run: Vec<Line> = Vec::new();
    for line in records {
        let bytes = &chunk.data[line.range.clone()];
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.records += 1;
        if let Some(problem) = precheck(bytes, max_line_bytes) {
            bisect_decode(chunk, &run, decode, &mut out);
            run.clear();
            out.bad.push(bad(chunk, &line, problem));
        } else {
            run.push(line);
        }
    }
    bisect_decode(chunk, &run, decode, &mut out);
    out
}
