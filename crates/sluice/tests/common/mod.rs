//! Helpers shared by the end-to-end tests: the built binary, a scratch
//! folder with a copy of the example configs, and the Python interpreter
//! that holds the independent readers (pyarrow, DuckDB, moto).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The `sluice` binary, with logs quiet and no config from the caller.
pub fn sluice(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    c.current_dir(dir)
        .env_remove("SLUICE_CONFIG")
        .env("SLUICE_LOG", "warn");
    for (k, _) in std::env::vars() {
        if k.starts_with("SLUICE_") && k != "SLUICE_LOG" && k != "SLUICE_TEST_PYTHON" {
            c.env_remove(k);
        }
    }
    c
}

/// Runs a command and returns its output, printing it for failed tests.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run command");
    eprintln!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A scratch folder holding a copy of `configs/`.
pub fn scratch_with_configs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(
        &workspace_root().join("configs"),
        &dir.path().join("configs"),
    );
    dir
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// The Python that has pyarrow, duckdb and moto: `$SLUICE_TEST_PYTHON`, or
/// the `.venv` that `scripts/test.sh` makes. Missing is a test failure.
pub fn python() -> PathBuf {
    let p = std::env::var_os("SLUICE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "no Python with pyarrow at {}: run the tests with scripts/test.sh, which installs it",
        p.display()
    );
    p
}

/// Runs a Python script with arguments and returns its stdout; panics with
/// its stderr if it fails.
pub fn python_script(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file under `dir` (but publish manifests), relative, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                // Publish manifests (`_sluice/<run>.json`) are no data.
                if p.file_name().is_some_and(|n| n == "_sluice") {
                    continue;
                }
                walk(base, &p, out);
            } else {
                out.push(
                    p.strip_prefix(base)
                        .expect("prefix")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The first shell command of the README's first code block: the command
/// that runs the example job.
pub fn readme_run_command() -> String {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let block = readme
        .split("```")
        .nth(1)
        .expect("a code block in the README");
    block
        .lines()
        .skip(1)
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .expect("a command")
        .trim()
        .to_string()
}

/// Runs SQL with `psql` on the local PostgreSQL database `db`, stopping at
/// the first error. No server is a test failure, never a skip.
pub fn psql(db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db])
        .args(["-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql])
        .output()
        .expect("psql (the PostgreSQL client) must be installed");
    assert!(
        out.status.success(),
        "psql failed (PostgreSQL at 127.0.0.1:5432 must be running for this test): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new, empty database on the local PostgreSQL; returns its URL.
pub fn fresh_postgres_database() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    let name = format!(
        "sluice_test_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
        nanos % 1_000_000
    );
    psql("test", &format!("CREATE DATABASE {name}"));
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

/// The database name at the end of a PostgreSQL URL.
pub fn database_of(url: &str) -> &str {
    url.rsplit('/').next().expect("database name")
}

/// Runs SQL with the `mariadb` client on the local MariaDB (root, no
/// password) in database `db`. No server is a test failure, never a skip.
pub fn mariadb(db: &str, sql: &str) -> String {
    let out = Command::new("mariadb")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            "3306",
            "-u",
            "root",
            "-N",
            "-B",
            db,
            "-e",
            sql,
        ])
        .output()
        .expect("mariadb (the MariaDB client) must be installed");
    assert!(
        out.status.success(),
        "mariadb failed (MariaDB at 127.0.0.1:3306 must be running for this test): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new, empty database on the local MariaDB; returns its URL.
pub fn fresh_mariadb_database() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "sluice_test_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    mariadb(
        "test",
        &format!("DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name} CHARACTER SET utf8mb4"),
    );
    format!("mysql://root@127.0.0.1:3306/{name}")
}

/// A plain HTTP/1.1 request to `addr` (host:port): the status and the
/// body. `headers` are extra header lines ("Name: value").
pub fn http(method: &str, addr: &str, path: &str, headers: &[&str], body: &str) -> (u16, String) {
    try_http(method, addr, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {addr}{path}: {e}"))
}

/// [`http`], with connection errors returned.
pub fn try_http(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    s.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    http("GET", addr, path, &[], "")
}

/// The address `sluice serve` listens on, from its start line in `log`
/// (JSON lines).
pub fn listen_address(log: &str) -> Option<String> {
    log.lines()
        .filter(|l| l.contains("sluice serving"))
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["fields"]["listen"].as_str().map(str::to_string)
        })
}

/// Spawns `cmd` (a `sluice serve`) with its log in `log`, and waits for
/// its start line and then for `/readyz`: the start line comes before the
/// jobs folder is read, and only once it is ready does the API know the
/// jobs. The process and the address it listens on.
pub fn serve_ready(cmd: &mut Command, log: &Path) -> (std::process::Child, String) {
    let child = cmd
        .env("SLUICE_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start sluice serve");
    let t0 = std::time::Instant::now();
    let limit = std::time::Duration::from_secs(30);
    let addr = loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(a) = listen_address(&text) {
            break a;
        }
        assert!(t0.elapsed() < limit, "no start line: {text}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    while http_get(&addr, "/readyz").0 != 200 {
        assert!(t0.elapsed() < limit, "never ready");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (child, addr)
}

/// Asserts that promtool's linter accepts `scrape` (Prometheus's text
/// format), writing it to `file` on the way.
pub fn assert_promtool_accepts(scrape: &str, file: &Path) {
    std::fs::write(file, scrape).unwrap();
    let check = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(file).unwrap())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Debian's promtool, which the test setup installs.
pub fn promtool() -> PathBuf {
    let path = PathBuf::from("/usr/bin/promtool");
    assert!(
        path.exists(),
        "promtool is missing: scripts/test-env.sh installs Debian's prometheus package"
    );
    path
}
