//! What the benchmarks share: the local PostgreSQL they make their
//! databases on.

/// Runs one statement as postgres on 127.0.0.1:5432, database `test`;
/// panics (the benchmark needs it) when PostgreSQL is not there.
pub fn psql(command: &str) {
    let out = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-c",
            command,
        ])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "PostgreSQL must run at 127.0.0.1:5432: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
