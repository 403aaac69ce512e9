//! The tailer across the rotations logrotate does: every line read once.

use super::tail::{Cursor, Fingerprint, Tailer};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

fn append(path: &Path, lines: std::ops::Range<u32>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for i in lines {
        writeln!(f, "line {i:08}").unwrap();
    }
}

/// Polls until nothing new comes; the numbers of the lines read.
fn drain(t: &mut Tailer, budget: usize) -> Vec<u32> {
    let mut out = Vec::new();
    loop {
        let poll = t.poll(budget).unwrap();
        if poll.reads.is_empty() {
            return out;
        }
        for r in poll.reads {
            assert_eq!(r.data.last(), Some(&b'\n'), "whole lines only");
            assert_eq!(r.end - r.start, r.data.len() as u64);
            for line in std::str::from_utf8(&r.data).unwrap().lines() {
                out.push(line["line ".len()..].parse().unwrap());
            }
        }
    }
}

/// One poll; the numbers of the lines read.
fn once(t: &mut Tailer, budget: usize) -> Vec<u32> {
    let poll = t.poll(budget).unwrap();
    poll.reads
        .iter()
        .flat_map(|r| std::str::from_utf8(&r.data).unwrap().lines())
        .map(|l| l["line ".len()..].parse().unwrap())
        .collect()
}

fn tailer(dir: &Path, cursors: BTreeMap<Fingerprint, Cursor>) -> Tailer {
    Tailer::new(&format!("{}/app.log*", dir.display()), cursors, 1 << 20).unwrap()
}

#[test]
fn a_partial_last_line_waits_for_its_newline() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, 0..3);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"line 0000")
        .unwrap();
    let mut t = tailer(dir.path(), BTreeMap::new());
    assert_eq!(drain(&mut t, 1 << 20), vec![0, 1, 2]);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(b"0003\n")
        .unwrap();
    assert_eq!(drain(&mut t, 1 << 20), vec![3]);
}

#[test]
fn a_small_budget_reads_in_whole_lines() {
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("app.log"), 0..1000);
    let mut t = tailer(dir.path(), BTreeMap::new());
    assert_eq!(drain(&mut t, 100), (0..1000).collect::<Vec<_>>());
}

#[test]
fn rotation_by_rename_reads_the_old_file_on_and_the_new_one_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, 0..100);
    let mut t = tailer(dir.path(), BTreeMap::new());
    let mut got = drain(&mut t, 1 << 20);
    // The writer still holds the renamed file open and writes on.
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&dir.path().join("app.log.1"), 100..150);
    append(&log, 150..200);
    got.extend(drain(&mut t, 1 << 20));
    got.sort_unstable();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
}

#[test]
fn copytruncate_reads_the_copy_on_and_the_truncated_file_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, 0..100);
    let mut t = tailer(dir.path(), BTreeMap::new());
    let mut got = once(&mut t, 300);
    assert!(
        got.len() < 100,
        "some lines are still unread: {}",
        got.len()
    );
    append(&log, 100..120);
    std::fs::copy(&log, dir.path().join("app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, 120..200);
    got.extend(drain(&mut t, 1 << 20));
    got.sort_unstable();
    assert_eq!(got, (0..200).collect::<Vec<_>>());
}

#[test]
fn a_compressed_rotated_file_is_read_once_and_only_where_the_plain_one_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, 0..100);
    let mut t = tailer(dir.path(), BTreeMap::new());
    let mut got = once(&mut t, 500);
    assert!(
        got.len() < 100,
        "some lines are still unread: {}",
        got.len()
    );
    // Rotated and compressed before it was read to its end.
    let plain = std::fs::read(&log).unwrap();
    let gz = std::fs::File::create(dir.path().join("app.log.1.gz")).unwrap();
    let mut enc = flate2::write::GzEncoder::new(gz, flate2::Compression::default());
    enc.write_all(&plain).unwrap();
    enc.finish().unwrap();
    std::fs::remove_file(&log).unwrap();
    got.extend(drain(&mut t, 1 << 20));
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    // And a .zst of the same file adds nothing.
    let zst = zstd::encode_all(&plain[..], 3).unwrap();
    std::fs::write(dir.path().join("app.log.1.zst"), zst).unwrap();
    assert_eq!(drain(&mut t, 1 << 20), Vec::<u32>::new());
}

#[test]
fn a_restart_from_the_cursors_reads_on_without_repeating() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, 0..50);
    let mut t = tailer(dir.path(), BTreeMap::new());
    let mut got = drain(&mut t, 1 << 20);
    let cursors = t.cursors().clone();
    // The checkpoint survives as JSON in the state store.
    let cursors: BTreeMap<Fingerprint, Cursor> =
        serde_json::from_str(&serde_json::to_string(&cursors).unwrap()).unwrap();
    append(&log, 50..80);
    let mut t = tailer(dir.path(), cursors);
    let poll = t.poll(1 << 20).unwrap();
    assert_eq!(poll.reads[0].first_line, 51, "line numbers carry on");
    t.rewind(t.cursors().clone());
    got.extend(poll.reads.iter().flat_map(|r| {
        std::str::from_utf8(&r.data)
            .unwrap()
            .lines()
            .map(|l| l[5..].parse::<u32>().unwrap())
            .collect::<Vec<_>>()
    }));
    assert_eq!(got, (0..80).collect::<Vec<_>>());
}

#[test]
fn a_file_deleted_before_its_end_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, 0..100);
    let mut t = tailer(dir.path(), BTreeMap::new());
    let poll = t.poll(200).unwrap();
    assert_eq!(poll.vanished.len(), 0);
    std::fs::remove_file(&log).unwrap();
    let poll = t.poll(200).unwrap();
    assert_eq!(poll.vanished.len(), 1);
    assert_eq!(poll.vanished[0].1.path, log);
    assert!(t.poll(200).unwrap().vanished.is_empty());
}

#[test]
fn a_file_is_known_once_its_first_line_is_whole() {
    assert_eq!(Fingerprint::of(b"no newline yet"), None);
    let a = Fingerprint::of(b"first\nsecond").unwrap();
    assert_eq!(Some(a), Fingerprint::of(b"first\nother"));
    assert_ne!(Some(a), Fingerprint::of(b"firsT\n"));
    let long = vec![b'x'; 300];
    assert!(Fingerprint::of(&long).is_some());
    assert_eq!(a.to_string().parse::<Fingerprint>().unwrap(), a);
}

#[test]
fn files_gone_long_ago_are_forgotten_once_read_to_their_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let old = dir.path().join("app.log.1");
    append(&old, 0..10);
    append(&log, 10..100);
    let mut t = tailer(dir.path(), BTreeMap::new()).forget_after(std::time::Duration::ZERO);
    // app.log.1 read whole, app.log in part.
    assert_eq!(drain(&mut t, 1 << 20).len(), 100);
    assert_eq!(t.cursors().len(), 2);
    std::fs::remove_file(&old).unwrap();
    t.poll(1 << 20).unwrap();
    assert_eq!(
        t.cursors().len(),
        1,
        "the deleted file read to its end goes"
    );
    // A file deleted before its end is kept (its loss is reported).
    let mut t = tailer(dir.path(), BTreeMap::new()).forget_after(std::time::Duration::ZERO);
    t.poll(100).unwrap();
    std::fs::remove_file(&log).unwrap();
    assert_eq!(t.poll(100).unwrap().vanished.len(), 1);
    assert_eq!(t.cursors().len(), 1);
}
