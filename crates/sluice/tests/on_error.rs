//! Every `on_error` mode on one file that mixes good lines with truncated
//! JSON, bad timestamps, invalid UTF-8 and an over-long line: no good line
//! is lost, and bad ones go where the job says.

mod common;
use common::*;
use std::path::Path;

/// (line number, the bytes, why it is bad) of each malformed line.
fn bad_lines() -> Vec<(u64, Vec<u8>, &'static str)> {
    vec![
        (
            3,
            br#"{"id": 1003, "ts": "2026-11-24T00:00:03Z", "msg": "trunc"#.to_vec(),
            "",
        ),
        (
            7,
            br#"{"id": 1007, "ts": "yesterday at noon", "msg": "bad ts"}"#.to_vec(),
            "yesterday at noon",
        ),
        (
            11,
            b"{\"id\": 1011, \"ts\": \"2026-11-24T00:00:11Z\", \"msg\": \"caf\xe9\"}".to_vec(),
            "invalid UTF-8",
        ),
        (
            15,
            format!(
                r#"{{"id": 1015, "ts": "2026-11-24T00:00:15Z", "msg": "{}"}}"#,
                "x".repeat(2000)
            )
            .into_bytes(),
            "over max_line_bytes",
        ),
        (
            18,
            br#"{"id": "not a number", "ts": "2026-11-24T00:00:18Z", "msg": "type"}"#.to_vec(),
            "",
        ),
    ]
}

/// Writes 20 lines (5 bad) and a job with `on_error = mode`; returns the
/// scratch folder and the ids of the good lines.
fn setup(mode: &str) -> (tempfile::TempDir, Vec<i64>) {
    let dir = tempfile::tempdir().unwrap();
    let bad = bad_lines();
    let mut data = Vec::new();
    let mut good = Vec::new();
    for n in 1..=20u64 {
        if let Some((_, bytes, _)) = bad.iter().find(|(l, _, _)| *l == n) {
            data.extend_from_slice(bytes);
        } else {
            let id = 1000 + n as i64;
            good.push(id);
            data.extend_from_slice(
                format!(r#"{{"id": {id}, "ts": "2026-11-24T00:00:{n:02}Z", "msg": "ok é {n}"}}"#)
                    .as_bytes(),
            );
        }
        data.push(b'\n');
    }
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/app.jsonl"), data).unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    std::fs::write(
        dir.path().join("jobs/mixed.toml"),
        format!(
            r#"
[tasks.app]
extract = "logs"
path = "in/*.jsonl"
format = "jsonl"
on_error = "{mode}"
max_line_bytes = "1KiB"
schema = {{ id = "int64", ts = "timestamp", msg = "string" }}

[tasks.out]
load = "parquet"
input = "app"
url = "file://./out/"
"#
        ),
    )
    .unwrap();
    (dir, good)
}

fn output_ids(dir: &Path) -> Vec<i64> {
    let out = python_script(
        "import sys, pyarrow.dataset as ds; t = ds.dataset(sys.argv[1], format='parquet').to_table(); print(sorted(t.column('id').to_pylist()))",
        &[dir.join("out").to_str().unwrap()],
    );
    serde_json::from_str(out.trim()).unwrap()
}

#[test]
fn fail_names_the_file_and_line() {
    let (dir, _) = setup("fail");
    let out = run(sluice(dir.path()).args(["run", "jobs/mixed.toml", "--date", "2026-11-24"]));
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let file = dir.path().join("in/app.jsonl").canonicalize().unwrap();
    assert!(
        text.contains(&format!("app failed: {}:3: ", file.display())),
        "{text}"
    );
    // Nothing was published.
    assert!(
        files_under(&dir.path().join("out"))
            .iter()
            .all(|f| f.starts_with('.')),
        "{:?}",
        files_under(&dir.path().join("out"))
    );
}

#[test]
fn skip_counts_and_keeps_every_good_line() {
    let (dir, good) = setup("skip");
    let out = run(sluice(dir.path()).args(["run", "jobs/mixed.toml", "--date", "2026-11-24"]));
    assert!(out.status.success());
    let row = stdout(&out)
        .lines()
        .find(|l| l.starts_with("app "))
        .unwrap()
        .to_string();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[2..6], ["success", "20", "15", "5"], "{row}");
    assert_eq!(output_ids(dir.path()), good);
    assert!(!dir.path().join("data/dead_letter").exists());
}

#[test]
fn dead_letter_keeps_each_bad_line_with_file_line_and_error() {
    let (dir, good) = setup("dead_letter");
    let out = run(sluice(dir.path()).args(["run", "jobs/mixed.toml", "--date", "2026-11-24"]));
    assert!(out.status.success());
    assert_eq!(output_ids(dir.path()), good);

    let path = dir
        .path()
        .join("data/dead_letter/mixed/app/20261124T000000Z/bad_records.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expected = bad_lines();
    assert_eq!(records.len(), expected.len(), "{text}");
    let file = dir.path().join("in/app.jsonl").canonicalize().unwrap();
    for (r, (line, bytes, why)) in records.iter().zip(&expected) {
        assert_eq!(r["file"], file.to_str().unwrap(), "{r}");
        assert_eq!(r["line"], *line, "{r}");
        assert!(r["error"].as_str().unwrap().contains(why), "{r}");
        assert_eq!(r["record"], String::from_utf8_lossy(bytes).as_ref(), "{r}");
    }
    // The bytes that are not UTF-8 are kept exactly.
    let b64 = records[2]["record_base64"]
        .as_str()
        .expect("base64 of the invalid line");
    let decoded = python_script(
        "import base64, sys; print(base64.b64decode(sys.argv[1]).hex())",
        &[b64],
    );
    assert_eq!(
        decoded.trim(),
        bad_lines()[2]
            .1
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );

    // A re-run with the bad lines fixed leaves no stale dead letters.
    let fixed: String = (1..=3)
        .map(|n| format!("{{\"id\": {n}, \"ts\": \"2026-11-24T00:00:00Z\", \"msg\": \"m\"}}\n"))
        .collect();
    std::fs::write(dir.path().join("in/app.jsonl"), fixed).unwrap();
    let out = run(sluice(dir.path()).args(["run", "jobs/mixed.toml", "--date", "2026-11-24"]));
    assert!(out.status.success());
    assert!(!path.exists());
    assert_eq!(output_ids(dir.path()), vec![1, 2, 3]);
}
