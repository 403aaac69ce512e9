//! Reads files (local or object store, plain, gzip or zstd) on a thread of
//! its own and cuts them into [`Chunk`]s that end on a record boundary, so
//! that chunks can be parsed independently and in parallel.

use super::Chunk;
use crate::error::{Error, Result};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use std::io::Read;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Bytes read before a chunk is cut.
pub const CHUNK_BYTES: usize = 4 << 20;
/// A record longer than this ends the file's reading with an error.
const MAX_RECORD_BYTES: usize = 1 << 30;

/// One input file.
#[derive(Clone)]
pub struct InputFile {
    /// The path or URL shown in messages.
    pub display: Arc<str>,
    pub store: Arc<dyn ObjectStore>,
    pub path: Path,
    /// Set for local files, which are read directly.
    pub local: Option<std::path::PathBuf>,
}

/// How records end.
#[derive(Debug, Clone, Copy)]
pub enum Boundary {
    /// At every newline.
    Newline,
    /// At newlines outside double quotes (CSV).
    QuotedNewline,
}

impl Boundary {
    /// The end (exclusive) of the last whole record in `buf`.
    fn last(self, buf: &[u8]) -> Option<usize> {
        match self {
            Boundary::Newline => memchr::memrchr(b'\n', buf).map(|i| i + 1),
            Boundary::QuotedNewline => {
                let mut in_quotes = false;
                let mut last = None;
                for i in memchr::memchr2_iter(b'"', b'\n', buf) {
                    if buf[i] == b'"' {
                        in_quotes = !in_quotes;
                    } else if !in_quotes {
                        last = Some(i + 1);
                    }
                }
                last
            }
        }
    }
}

/// Reads `files` in order into chunks sent down `tx`; run on a blocking
/// thread owned by the stream's [`crate::producers::Tasks`], so that a
/// panic here fails the task instead of ending its input early. Stops at
/// the end of the files, at the first error (sent down the channel), or
/// when the receiver is dropped.
pub fn read_chunks(
    files: Vec<InputFile>,
    boundary: Boundary,
    tx: mpsc::Sender<Result<Chunk>>,
    handle: tokio::runtime::Handle,
) -> Result<()> {
    let pool = BufferPool::default();
    for file in files {
        let result =
            open(&file, &handle).and_then(|reader| cut(reader, &file, boundary, &tx, &pool));
        match result {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => {
                // The parser stops at the error, in line order; when it is
                // gone already, nobody is left to care.
                let _ = tx.blocking_send(Err(e));
                return Ok(());
            }
        }
    }
    Ok(())
}

fn open(file: &InputFile, handle: &tokio::runtime::Handle) -> Result<Box<dyn Read + Send>> {
    let raw: Box<dyn Read + Send> = match &file.local {
        Some(path) => Box::new(std::fs::File::open(path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?),
        None => {
            let get = handle
                .block_on(file.store.get(&file.path))
                .map_err(|e| Error::store(format!("reading {}", file.display), e))?;
            Box::new(StreamReader {
                handle: handle.clone(),
                stream: get.into_stream(),
                current: Bytes::new(),
                display: file.display.clone(),
            })
        }
    };
    let name = file.path.as_ref();
    Ok(if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(
            std::io::BufReader::with_capacity(1 << 16, raw),
        ))
    } else if name.ends_with(".zst") || name.ends_with(".zstd") {
        Box::new(
            zstd::stream::read::Decoder::new(raw).map_err(|source| Error::Io {
                path: file.display.to_string().into(),
                source,
            })?,
        )
    } else {
        raw
    })
}

/// Chunk buffers, reused. A new 4 MiB buffer costs a thousand page faults
/// and zero-filling; recycling a few keeps the reader off both. Buffers
/// come back when the parser drops its chunk.
#[derive(Clone, Default)]
struct BufferPool(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

/// Buffers kept for reuse: enough for the chunks in flight.
const POOLED_BUFFERS: usize = 16;

impl BufferPool {
    /// A buffer of at least `len` initialised bytes.
    fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = self
            .0
            .lock()
            .map(|mut v| v.pop())
            .ok()
            .flatten()
            .unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, 0);
        }
        buf
    }

    fn give(&self, buf: Vec<u8>) {
        if let Ok(mut v) = self.0.lock()
            && v.len() < POOLED_BUFFERS
        {
            v.push(buf);
        }
    }
}

/// The first `len` bytes of a pooled buffer, as the owner of a chunk's
/// `Bytes`; the buffer returns to the pool on drop.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
    pool: BufferPool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

/// Cuts one file into chunks. Returns false when the receiver is gone.
fn cut(
    mut reader: Box<dyn Read + Send>,
    file: &InputFile,
    boundary: Boundary,
    tx: &mpsc::Sender<Result<Chunk>>,
    pool: &BufferPool,
) -> Result<bool> {
    let io_err = |source| Error::Io {
        path: file.display.to_string().into(),
        source,
    };
    let mut line = 1u64;
    // The start of a record the last chunk cut off.
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let mut buf = pool.take(CHUNK_BYTES.max(carry.len() * 2));
        buf[..carry.len()].copy_from_slice(&carry);
        let mut filled = carry.len();
        let mut target = CHUNK_BYTES.max(filled + (64 << 10));
        let (end, eof) = loop {
            let mut eof = false;
            while filled < target {
                if buf.len() < target {
                    buf.resize(target, 0);
                }
                match reader.read(&mut buf[filled..target]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io_err(e)),
                }
            }
            if eof {
                if filled == 0 {
                    pool.give(buf);
                    return Ok(true);
                }
                if buf[filled - 1] != b'\n' {
                    if buf.len() == filled {
                        buf.push(b'\n');
                    } else {
                        buf[filled] = b'\n';
                    }
                    filled += 1;
                }
                break (filled, true);
            }
            match boundary.last(&buf[..filled]) {
                Some(end) => break (end, false),
                None => {
                    if filled >= MAX_RECORD_BYTES {
                        return Err(Error::BadRecord {
                            file: file.display.to_string(),
                            line,
                            message: format!("record longer than {MAX_RECORD_BYTES} bytes"),
                        });
                    }
                    // One record fills the buffer: read on until it ends.
                    target = filled * 2;
                }
            }
        };
        carry.clear();
        carry.extend_from_slice(&buf[end..filled]);
        let lines = memchr::memchr_iter(b'\n', &buf[..end]).count() as u64;
        let chunk = Chunk {
            file: file.display.clone(),
            first_line: line,
            data: Bytes::from_owner(Pooled {
                buf,
                len: end,
                pool: pool.clone(),
            }),
        };
        line += lines;
        if tx.blocking_send(Ok(chunk)).is_err() {
            return Ok(false);
        }
        if eof {
            return Ok(true);
        }
    }
}

/// A blocking `Read` over an object store download, for the reader thread.
struct StreamReader {
    handle: tokio::runtime::Handle,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    current: Bytes,
    display: Arc<str>,
}

impl Read for StreamReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => {
                    return Err(std::io::Error::other(format!(
                        "reading {}: {e}",
                        self.display
                    )));
                }
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Up to `limit` decompressed bytes from the start of `file`, cut at the
/// last newline; for schema inference. Call from a blocking thread.
pub fn read_sample(file: &InputFile, limit: usize) -> Result<Vec<u8>> {
    let handle = tokio::runtime::Handle::current();
    let mut reader = open(file, &handle)?.take(limit as u64);
    let mut buf = Vec::new();
    reader.read_to_end(&mut buf).map_err(|source| Error::Io {
        path: file.display.to_string().into(),
        source,
    })?;
    if buf.len() == limit
        && let Some(end) = memchr::memrchr(b'\n', &buf)
    {
        buf.truncate(end + 1);
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_newlines_do_not_end_records() {
        let b = Boundary::QuotedNewline;
        assert_eq!(b.last(b"a,\"x\ny\"\nb,c"), Some(8));
        assert_eq!(b.last(b"a,\"x\ny"), None);
        assert_eq!(Boundary::Newline.last(b"a\nb"), Some(2));
    }
}
