//! Follows the files a glob matches, as `tail -F` does, across rotations.
//!
//! A file is known by a fingerprint of its first line, not by its path or
//! inode: a rotation by rename moves the path, `copytruncate` keeps the
//! inode for new content, and a `.gz` made of a rotated file holds the same
//! first line as the plain file it came from. So a renamed file is read on
//! from where it was, a truncated file is a new file once its first line is
//! written, and a rotated file that was compressed is read once (its offset
//! counts decompressed bytes, the same coordinates as the plain file's).
//!
//! Only whole lines are read: a last line still being written waits for its
//! newline, in every file that is not compressed (a compressed file is
//! complete, so its last line counts even without one).

use crate::error::{Error, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

/// How many bytes of a first line make a fingerprint. A file whose first
/// line is shorter than this is known once that line has its newline.
pub const FINGERPRINT_BYTES: usize = 256;

/// How long a file read to its end stays in the checkpoint after the
/// glob last matched it.
pub const FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A file's identity: a hash of its first line (at most
/// [`FINGERPRINT_BYTES`] of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub u64);

impl Fingerprint {
    /// The fingerprint of a file that starts with `head`, or `None` while
    /// its first line is shorter than [`FINGERPRINT_BYTES`] and has no
    /// newline yet (a file just created, or truncated and not yet written).
    pub fn of(head: &[u8]) -> Option<Fingerprint> {
        let head = &head[..head.len().min(FINGERPRINT_BYTES)];
        let first = match memchr::memchr(b'\n', head) {
            Some(nl) => &head[..=nl],
            None if head.len() == FINGERPRINT_BYTES => head,
            None => return None,
        };
        let digest = Sha256::digest(first);
        let mut eight = [0u8; 8];
        eight.copy_from_slice(&digest[..8]);
        Some(Fingerprint(u64::from_be_bytes(eight)))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for Fingerprint {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        u64::from_str_radix(s, 16).map(Fingerprint)
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where reading one file stands: the first byte and line not yet read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub offset: u64,
    /// Lines before `offset`, for the line numbers of bad records.
    pub line: u64,
    /// Where the file was last seen.
    pub path: PathBuf,
    /// Its length then (decompressed, for a compressed file).
    pub size: u64,
}

/// Whole lines of one file, `data` being its bytes `start..end`.
#[derive(Debug, Clone)]
pub struct Read {
    pub file: Fingerprint,
    pub path: PathBuf,
    pub start: u64,
    pub end: u64,
    /// The 1-based number of the first line in `data`.
    pub first_line: u64,
    pub data: Bytes,
}

/// What one pass over the files found.
#[derive(Debug, Default)]
pub struct Poll {
    pub reads: Vec<Read>,
    /// Files that were deleted before they were read to their end: what is
    /// left of each (`size - offset` bytes) is lost. Each is reported once.
    pub vanished: Vec<(Fingerprint, Cursor)>,
}

impl Poll {
    pub fn bytes(&self) -> u64 {
        self.reads.iter().map(|r| r.data.len() as u64).sum()
    }
}

/// A compressed file already decompressed once: its identity and
/// decompressed length, so a poll does not decompress it again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Seen {
    path: PathBuf,
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

pub struct Tailer {
    pattern: String,
    cursors: BTreeMap<Fingerprint, Cursor>,
    compressed: HashMap<Seen, (Fingerprint, u64)>,
    /// Files reported as vanished, so they are reported once.
    reported: std::collections::HashSet<Fingerprint>,
    /// When each file was last matched by the glob (this process's
    /// view), so that files gone long ago are forgotten.
    last_seen: HashMap<Fingerprint, std::time::Instant>,
    forget_after: std::time::Duration,
    max_line_bytes: usize,
}

impl Tailer {
    /// Follows `pattern` (a glob over local paths) from `cursors`, the
    /// last committed checkpoint.
    pub fn new(
        pattern: &str,
        cursors: BTreeMap<Fingerprint, Cursor>,
        max_line_bytes: usize,
    ) -> Result<Self> {
        glob::Pattern::new(pattern)
            .map_err(|e| Error::Config(format!("path \"{pattern}\": {e}")))?;
        Ok(Tailer {
            pattern: pattern.to_string(),
            cursors,
            compressed: HashMap::new(),
            reported: Default::default(),
            last_seen: HashMap::new(),
            forget_after: FORGET_AFTER,
            max_line_bytes,
        })
    }

    /// Forgets files read to their end after `d` unmatched instead of a
    /// day (tests).
    #[cfg(test)]
    pub fn forget_after(mut self, d: std::time::Duration) -> Self {
        self.forget_after = d;
        self
    }

    /// Where each file stands, as read so far.
    pub fn cursors(&self) -> &BTreeMap<Fingerprint, Cursor> {
        &self.cursors
    }

    /// Goes back to `cursors` (the last commit), after what was read since
    /// could not be written.
    pub fn rewind(&mut self, cursors: BTreeMap<Fingerprint, Cursor>) {
        self.cursors = cursors;
    }

    /// Bytes not yet read, per file that is still there.
    pub fn lag(&self) -> impl Iterator<Item = (&Fingerprint, &Cursor, u64)> {
        self.cursors
            .iter()
            .map(|(fp, c)| (fp, c, c.size.saturating_sub(c.offset)))
    }

    /// One pass: whole lines from each file, oldest file first, up to
    /// about `budget` bytes in all.
    pub fn poll(&mut self, budget: usize) -> Result<Poll> {
        let mut files = self.list()?;
        files.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        let mut poll = Poll::default();
        let mut seen = std::collections::HashSet::new();
        let mut left = budget;
        for (path, _) in files {
            let read = if is_compressed(&path) {
                self.read_compressed(&path, left, &mut seen)
            } else {
                self.read_plain(&path, left, &mut seen)
            };
            match read {
                Ok(Some(read)) => {
                    left = left.saturating_sub(read.data.len());
                    poll.reads.push(read);
                }
                Ok(None) => {}
                // Gone between the listing and the read: the next pass
                // sees where it went.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(Error::Io { path, source }),
            }
        }
        let now = std::time::Instant::now();
        for (fp, cursor) in &self.cursors {
            if seen.contains(fp) {
                self.last_seen.insert(*fp, now);
            } else if cursor.offset < cursor.size && self.reported.insert(*fp) {
                poll.vanished.push((*fp, cursor.clone()));
            }
        }
        // A file read to its end and not matched for a day is forgotten,
        // so the checkpoint does not grow with every rotation. (Should it
        // come back, it would be read again.)
        let (last_seen, forget_after) = (&mut self.last_seen, self.forget_after);
        self.cursors.retain(|fp, c| {
            let at = *last_seen.entry(*fp).or_insert(now);
            seen.contains(fp) || c.offset < c.size || now.duration_since(at) < forget_after
        });
        self.last_seen.retain(|fp, _| self.cursors.contains_key(fp));
        Ok(poll)
    }

    /// The files the glob matches, with their modification times.
    fn list(&self) -> Result<Vec<(PathBuf, Option<SystemTime>)>> {
        let paths = glob::glob(&self.pattern)
            .map_err(|e| Error::Config(format!("path \"{}\": {e}", self.pattern)))?;
        let mut out = Vec::new();
        for entry in paths {
            // A folder the glob could not list: skipped, as `tail -F` does.
            let Ok(path) = entry else { continue };
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_file() {
                out.push((path, meta.modified().ok()));
            }
        }
        Ok(out)
    }

    fn read_plain(
        &mut self,
        path: &Path,
        budget: usize,
        seen: &mut std::collections::HashSet<Fingerprint>,
    ) -> std::io::Result<Option<Read>> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut head = [0u8; FINGERPRINT_BYTES];
        let n = read_at_full(&file, &mut head, 0)?;
        let Some(fp) = Fingerprint::of(&head[..n]) else {
            return Ok(None);
        };
        seen.insert(fp);
        let cursor = self.cursors.entry(fp).or_insert_with(|| Cursor {
            offset: 0,
            line: 0,
            path: path.to_path_buf(),
            size: 0,
        });
        cursor.path = path.to_path_buf();
        cursor.size = len;
        if len <= cursor.offset || budget == 0 {
            // Shorter than where reading stands: truncated, and written
            // again with the same first line. What it holds up to the old
            // offset is not read again (it cannot be told from what was).
            return Ok(None);
        }
        let unread = len - cursor.offset;
        let mut buf = vec![0u8; unread.min(budget as u64) as usize];
        let mut got = read_at_full(&file, &mut buf, cursor.offset)?;
        buf.truncate(got);
        if memchr::memrchr(b'\n', &buf).is_none() && unread > got as u64 {
            // One line longer than the budget: read up to its end, or to
            // one byte past max_line_bytes.
            buf.resize(unread.min(self.max_line_bytes as u64 + 1) as usize, 0);
            got = read_at_full(&file, &mut buf, cursor.offset)?;
            buf.truncate(got);
        }
        let end = match memchr::memrchr(b'\n', &buf) {
            Some(nl) => nl + 1,
            // One line longer than max_line_bytes: passed on whole, with a
            // newline, for the parser to report as a bad record.
            None if buf.len() > self.max_line_bytes => {
                buf.push(b'\n');
                buf.len()
            }
            None => return Ok(None),
        };
        let taken = end.min(got);
        buf.truncate(end);
        // Truncated (copytruncate) and written again while this pass
        // read it: the bytes are the new file's, not this one's.
        let n = read_at_full(&file, &mut head, 0)?;
        if Fingerprint::of(&head[..n]) != Some(fp) {
            return Ok(None);
        }
        Ok(Some(advance(cursor, fp, path, taken as u64, buf)))
    }

    fn read_compressed(
        &mut self,
        path: &Path,
        budget: usize,
        seen: &mut std::collections::HashSet<Fingerprint>,
    ) -> std::io::Result<Option<Read>> {
        let meta = std::fs::metadata(path)?;
        let key = Seen {
            path: path.to_path_buf(),
            inode: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        };
        if let Some((fp, total)) = self.compressed.get(&key).copied() {
            seen.insert(fp);
            if let Some(c) = self.cursors.get_mut(&fp) {
                c.size = c.size.max(total);
                if c.offset >= total {
                    return Ok(None);
                }
            }
        }
        let mut reader = decoder(path)?;
        let mut head = Vec::with_capacity(FINGERPRINT_BYTES);
        // A compressed file still being written ends early: read it once
        // it is whole.
        let Ok(_) = reader
            .by_ref()
            .take(FINGERPRINT_BYTES as u64)
            .read_to_end(&mut head)
        else {
            return Ok(None);
        };
        let fp = match Fingerprint::of(&head) {
            Some(fp) => fp,
            // A file of one short line with no newline: complete, so the
            // line is its fingerprint.
            None if head.len() < FINGERPRINT_BYTES && !head.is_empty() => {
                let mut with_nl = head.clone();
                with_nl.push(b'\n');
                Fingerprint::of(&with_nl).expect("ends with a newline")
            }
            None => return Ok(None),
        };
        seen.insert(fp);
        let offset = self.cursors.get(&fp).map_or(0, |c| c.offset);
        // Skip what was read already (decompressed coordinates).
        let mut rest = head;
        let mut pos = rest.len() as u64;
        if offset < pos {
            rest.drain(..offset as usize);
        } else {
            rest.clear();
            let skipped = std::io::copy(
                &mut reader.by_ref().take(offset - pos),
                &mut std::io::sink(),
            );
            let Ok(skipped) = skipped else {
                return Ok(None);
            };
            pos += skipped;
            if pos < offset {
                // Shorter than where reading stands: nothing new.
                self.compressed.insert(key, (fp, pos));
                return Ok(None);
            }
        }
        let want = budget.max(self.max_line_bytes + 1);
        let Ok(_) = reader
            .by_ref()
            .take((want.saturating_sub(rest.len())) as u64)
            .read_to_end(&mut rest)
        else {
            return Ok(None);
        };
        let mut probe = [0u8; 1];
        let at_end = matches!(reader.read(&mut probe), Ok(0));
        let available = offset + rest.len() as u64 + u64::from(!at_end);
        if at_end {
            self.compressed
                .insert(key, (fp, offset + rest.len() as u64));
        }
        let cursor = self.cursors.entry(fp).or_insert_with(|| Cursor {
            offset: 0,
            line: 0,
            path: path.to_path_buf(),
            size: 0,
        });
        cursor.path = path.to_path_buf();
        cursor.size = cursor.size.max(available);
        if rest.is_empty() {
            return Ok(None);
        }
        let taken = if at_end {
            rest.len()
        } else {
            match memchr::memrchr(b'\n', &rest) {
                Some(nl) => nl + 1,
                None => rest.len(),
            }
        };
        rest.truncate(taken);
        let mut data = rest;
        if data.last() != Some(&b'\n') {
            data.push(b'\n');
        }
        Ok(Some(advance(cursor, fp, path, taken as u64, data)))
    }
}

/// Moves `cursor` past `taken` bytes whose lines are `data`.
fn advance(cursor: &mut Cursor, fp: Fingerprint, path: &Path, taken: u64, data: Vec<u8>) -> Read {
    let lines = memchr::memchr_iter(b'\n', &data).count() as u64;
    let read = Read {
        file: fp,
        path: path.to_path_buf(),
        start: cursor.offset,
        end: cursor.offset + taken,
        first_line: cursor.line + 1,
        data: Bytes::from(data),
    };
    cursor.offset += taken;
    cursor.line += lines;
    read
}

pub fn is_compressed(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("gz" | "zst" | "zstd")
    )
}

fn decoder(path: &Path) -> std::io::Result<Box<dyn std::io::Read>> {
    let file = std::io::BufReader::with_capacity(1 << 16, File::open(path)?);
    Ok(match path.extension().and_then(|e| e.to_str()) {
        Some("gz") => Box::new(flate2::read::MultiGzDecoder::new(file)),
        _ => Box::new(zstd::stream::read::Decoder::new(file)?),
    })
}

/// Reads at `offset` until `buf` is full or the file ends; the count read.
fn read_at_full(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
