//! A database reader that panics part-way must fail its task and publish
//! nothing: before the readers were owned by the stream, the channel they
//! fed closed, the stream looked finished and the load published the
//! batches read so far. The panic is injected by naming a column
//! `sluice_test_panic_after_N` (see `producers::injected_panic`), on the
//! machine's PostgreSQL and MariaDB and on a SQLite file.

use crate::runner::{Engine, TaskAttempt, Units};
use sluice_core::config::{DaemonConfig, parse_job};
use sqlx::Connection;
use std::path::Path;

const ROWS: i64 = 5000;

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// Runs an extract of `query` on `connection` fused with a Parquet load,
/// and checks that the run failed on the injected panic with nothing in
/// the destination.
async fn assert_panic_fails_and_publishes_nothing(
    connection: &str,
    query: &str,
    partitions: usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let config = DaemonConfig::parse(
        &format!("staging = \"file://{d}/staging\"\ndead_letter = \"file://{d}/dead\"\n"),
        Path::new("sluice.toml"),
        &|_| None,
    )
    .unwrap();
    let partitioning = if partitions > 1 {
        format!("partitions = {partitions}\npartition_on = \"id\"\n")
    } else {
        String::new()
    };
    let job = format!(
        r#"
[tasks.src]
extract = "sql"
connection = "{connection}"
query = "{query}"
batch_size = 200
{partitioning}
[tasks.out]
load = "parquet"
input = "src"
url = "file://{d}/out/"
"#
    );
    let job = parse_job(&job, &dir.path().join("panics.toml"), &|_| None).unwrap();
    let ctx = job.manual_context(chrono::NaiveDate::from_ymd_opt(2026, 11, 24).unwrap());
    let engine = Engine::new(config).unwrap();
    let units = Units::all(&job);
    let attempt = TaskAttempt {
        generation: 1,
        attempt: 1,
    };
    let error = engine
        .run_unit(&job, &ctx, &units, "out", attempt, &crate::fence::Sole)
        .await
        .expect_err("a reader's panic fails the load it feeds")
        .to_string();
    assert!(
        error.contains("panicked") && error.contains("injected panic"),
        "the error must say a reader panicked: {error}"
    );
    let published: Vec<_> = walk(&dir.path().join("out"));
    assert!(
        published.is_empty(),
        "published after a panic: {published:?}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn panicking_query(table: &str) -> String {
    format!("SELECT id, id AS sluice_test_panic_after_3 FROM {table}")
}

async fn postgres_table() -> String {
    let url = "postgres://postgres@127.0.0.1:5432/test";
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 (the tests need it)");
    let table = unique("panics");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} AS SELECT g::int8 AS id FROM generate_series(1, {ROWS}) g"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    table
}

async fn mysql_table() -> String {
    let url = "mysql://root@127.0.0.1:3306/test";
    let mut conn = sqlx::MySqlConnection::connect(url)
        .await
        .expect("MariaDB at 127.0.0.1:3306 (the tests need it)");
    let table = unique("panics");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY); \
         SET SESSION max_recursive_iterations = {ROWS}; \
         INSERT INTO {table} WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {ROWS}) SELECT n FROM g"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    table
}

#[tokio::test]
async fn a_panicking_postgres_reader_fails_the_task() {
    let table = postgres_table().await;
    let url = "postgres://postgres@127.0.0.1:5432/test";
    assert_panic_fails_and_publishes_nothing(url, &panicking_query(&table), 1).await;
}

#[tokio::test]
async fn a_panicking_partitioned_postgres_reader_fails_the_task() {
    let table = postgres_table().await;
    let url = "postgres://postgres@127.0.0.1:5432/test";
    assert_panic_fails_and_publishes_nothing(url, &panicking_query(&table), 2).await;
    // By key, too: a query the block split does not take.
    let keyed = format!("SELECT id, id + 0 AS sluice_test_panic_after_3 FROM {table} WHERE id > 0");
    assert_panic_fails_and_publishes_nothing(url, &keyed, 3).await;
}

#[tokio::test]
async fn a_panicking_mysql_reader_fails_the_task() {
    let table = mysql_table().await;
    let url = "mysql://root@127.0.0.1:3306/test";
    assert_panic_fails_and_publishes_nothing(url, &panicking_query(&table), 1).await;
    assert_panic_fails_and_publishes_nothing(url, &panicking_query(&table), 2).await;
}

#[tokio::test]
async fn a_panicking_sqlite_reader_fails_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("src.db");
    std::fs::File::create(&file).unwrap();
    let url = format!("sqlite://{}", file.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE t (id INTEGER PRIMARY KEY); \
         INSERT INTO t WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {ROWS}) SELECT n FROM g"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    assert_panic_fails_and_publishes_nothing(&url, &panicking_query("t"), 1).await;
}
