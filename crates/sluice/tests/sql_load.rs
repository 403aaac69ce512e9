//! `load = "sql"` on the machine's real PostgreSQL and MariaDB: append,
//! replace and upsert, a table created from the dataset's schema, and a
//! load that fails partway leaving the table as it was.

mod common;

use common::{database_of, run, sluice, stderr};
use std::path::Path;

#[derive(Clone, Copy, Debug)]
enum Db {
    Postgres,
    Maria,
}

impl Db {
    fn fresh(self) -> String {
        match self {
            Db::Postgres => common::fresh_postgres_database(),
            Db::Maria => common::fresh_mariadb_database(),
        }
    }

    /// Runs SQL; returns the rows as tab-separated text.
    fn sql(self, url: &str, sql: &str) -> String {
        match self {
            Db::Postgres => common::psql(database_of(url), sql),
            Db::Maria => common::mariadb(database_of(url), sql),
        }
    }

    /// `name` and `amount` of every row of `table`, ordered by id.
    fn rows(self, url: &str, table: &str) -> String {
        let q = match self {
            Db::Postgres => {
                format!("SELECT id || ':' || name || ':' || amount FROM {table} ORDER BY id")
            }
            Db::Maria => {
                format!("SELECT CONCAT(id, ':', name, ':', amount) FROM {table} ORDER BY id")
            }
        };
        self.sql(url, &q).trim().replace('\n', " ")
    }
}

/// A daemon config with connection `app`, and one job per load mode, each
/// reading table `src` and loading into `table`.
fn write_jobs(dir: &Path, url: &str, table: &str) {
    std::fs::write(
        dir.join("sluice.toml"),
        format!("jobs = \"jobs\"\nstaging = \"file://./staging\"\n\n[connections.app]\nurl = \"{url}\"\n"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    for (name, mode) in [
        ("append_job", "mode = \"append\"\ncreate = true"),
        ("replace_job", "mode = \"replace\"\ncreate = true"),
        (
            "upsert_job",
            "mode = \"upsert\"\nkey = [\"id\"]\ncreate = true",
        ),
    ] {
        std::fs::write(
            dir.join(format!("jobs/{name}.toml")),
            format!(
                r#"[tasks.src]
extract = "sql"
connection = "app"
query = "SELECT id, name, amount, at, ok FROM src"
batch_size = 500

[tasks.dst]
load = "sql"
input = "src"
connection = "app"
table = "{table}"
batch_size = 300
{mode}
"#
            ),
        )
        .unwrap();
    }
}

fn run_job(dir: &Path, job: &str) -> std::process::Output {
    run(sluice(dir).args(["run", job, "--date", "2026-11-20"]))
}

fn modes_and_failures(db: Db) {
    let url = db.fresh();
    let (ts_type, text_type) = match db {
        Db::Postgres => ("timestamptz", "text"),
        Db::Maria => ("datetime(6)", "varchar(100)"),
    };
    db.sql(
        &url,
        &format!(
            "CREATE TABLE src (id int PRIMARY KEY, name {text_type}, amount numeric(10,2), at {ts_type}, ok bool);
             INSERT INTO src VALUES (1, 'one', 1.50, '2026-11-01 10:00:00', true),
                                    (2, 'twö ''quoted''', -2.25, '2026-11-02 10:00:00', false),
                                    (3, '日本', 3.00, NULL, NULL);"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    write_jobs(dir.path(), &url, "dst");
    // append creates the table, then adds to it.
    assert!(run_job(dir.path(), "append_job").status.success());
    let three = "1:one:1.50 2:twö 'quoted':-2.25 3:日本:3.00";
    assert_eq!(db.rows(&url, "dst"), three);
    assert!(run_job(dir.path(), "append_job").status.success());
    assert_eq!(db.sql(&url, "SELECT count(*) FROM dst").trim(), "6");
    // replace leaves exactly the dataset's rows.
    assert!(run_job(dir.path(), "replace_job").status.success());
    assert_eq!(db.rows(&url, "dst"), three);
    // upsert by id: one changed row, one new row. dst was created without
    // a key, so the upsert goes to its own table, which it creates keyed.
    db.sql(
        &url,
        "UPDATE src SET name = 'two', amount = 22.00 WHERE id = 2;
         INSERT INTO src VALUES (4, 'four', 4.00, '2026-11-04 10:00:00', true);",
    );
    write_jobs(dir.path(), &url, "dst_keyed");
    db.sql(
        &url,
        "CREATE TABLE dst_keyed (id int PRIMARY KEY, name varchar(100), amount numeric(10,2), at timestamp NULL, ok bool);
         INSERT INTO dst_keyed VALUES (1, 'old one', 0, NULL, NULL), (2, 'old two', 0, NULL, NULL), (9, 'nine', 9, NULL, NULL);",
    );
    let out = run_job(dir.path(), "upsert_job");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        db.rows(&url, "dst_keyed"),
        "1:one:1.50 2:two:22.00 3:日本:3.00 4:four:4.00 9:nine:9.00"
    );
    // A load that fails partway: 2,000 rows, the 1,500th breaks a CHECK on
    // the table, after several INSERT statements / COPY buffers went in.
    db.sql(&url, "DELETE FROM src");
    let fill = match db {
        Db::Postgres => {
            "INSERT INTO src SELECT g, 'row ' || g, CASE WHEN g = 1500 THEN 5000 ELSE g % 100 END, NULL, true FROM generate_series(1, 2000) g"
        }
        Db::Maria => {
            "INSERT INTO src SELECT seq, CONCAT('row ', seq), IF(seq = 1500, 5000, seq % 100), NULL, true FROM seq_1_to_2000"
        }
    };
    db.sql(&url, fill);
    db.sql(
        &url,
        "CREATE TABLE guarded (id int, name varchar(100), amount numeric(10,2) CHECK (amount < 1000), at timestamp NULL, ok bool);
         INSERT INTO guarded VALUES (7, 'kept', 7, NULL, NULL);",
    );
    for job in ["append_job", "replace_job"] {
        write_jobs(dir.path(), &url, "guarded");
        let out = run_job(dir.path(), job);
        assert_eq!(out.status.code(), Some(1), "{db:?} {job}");
        let text = format!("{}{}", common::stdout(&out), stderr(&out));
        assert!(text.contains("connection app"), "{text}");
        assert_eq!(db.rows(&url, "guarded"), "7:kept:7.00", "{db:?} {job}");
    }
}

#[test]
fn postgres_load_modes_and_a_failed_load() {
    modes_and_failures(Db::Postgres);
}

#[test]
fn mariadb_load_modes_and_a_failed_load() {
    modes_and_failures(Db::Maria);
}

/// Runs SQL on a SQLite file with Python's sqlite3 (an independent client);
/// returns the rows, one per line, fields joined by ':'.
fn sqlite(file: &Path, sql: &str) -> String {
    let script = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
cur = db.executescript(sys.argv[2]) if ";" in sys.argv[2].strip().rstrip(";") else db.execute(sys.argv[2])
for row in cur.fetchall():
    print(":".join("" if v is None else str(v) for v in row))
db.commit()
"#;
    common::python_script(script, &[file.to_str().unwrap(), sql])
}

#[test]
fn sqlite_load_modes_and_a_failed_load() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.db");
    sqlite(
        &file,
        "CREATE TABLE src (id INTEGER PRIMARY KEY, name TEXT, amount DECIMAL(10,2), at DATETIME, ok BOOLEAN);
         INSERT INTO src VALUES (1, 'one', '1.50', '2026-11-01 10:00:00', 1), (2, 'tw''o', '-2.25', NULL, 0);",
    );
    let url = format!("sqlite://{}", file.display());
    write_jobs(dir.path(), &url, "dst");
    let rows = |table: &str| {
        sqlite(
            &file,
            &format!("SELECT id, name, amount FROM {table} ORDER BY id"),
        )
        .trim()
        .replace('\n', " ")
    };
    assert!(run_job(dir.path(), "append_job").status.success());
    assert!(run_job(dir.path(), "append_job").status.success());
    assert_eq!(rows("dst"), "1:one:1.5 1:one:1.5 2:tw'o:-2.25 2:tw'o:-2.25");
    assert!(run_job(dir.path(), "replace_job").status.success());
    assert_eq!(rows("dst"), "1:one:1.5 2:tw'o:-2.25");
    sqlite(
        &file,
        "UPDATE src SET name = 'two' WHERE id = 2; INSERT INTO src VALUES (3, 'three', '3.00', NULL, 1);",
    );
    write_jobs(dir.path(), &url, "dst_keyed");
    let out = run_job(dir.path(), "upsert_job");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rows("dst_keyed"), "1:one:1.5 2:two:-2.25 3:three:3");
    // 2,000 rows, the 1,500th breaks a CHECK: the table keeps its one row.
    sqlite(
        &file,
        "DELETE FROM src;
         WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 2000)
         INSERT INTO src SELECT n, 'row ' || n, CASE WHEN n = 1500 THEN 5000 ELSE n % 100 END, NULL, 1 FROM g;
         CREATE TABLE guarded (id INTEGER, name TEXT, amount DECIMAL(10,2) CHECK (amount < 1000), at DATETIME, ok BOOLEAN);
         INSERT INTO guarded VALUES (7, 'kept', 7, NULL, NULL);",
    );
    write_jobs(dir.path(), &url, "guarded");
    for job in ["append_job", "replace_job"] {
        let out = run_job(dir.path(), job);
        assert_eq!(out.status.code(), Some(1), "{job}");
        assert_eq!(rows("guarded"), "7:kept:7", "{job}");
    }
}

/// numeric wider than 38 digits arrives as a 256-bit decimal and goes back
/// into PostgreSQL with every digit, into a created table and an existing
/// one.
#[test]
fn postgres_wide_numerics_load_exactly() {
    let url = Db::Postgres.fresh();
    let values = "(1, 12345678901234567890123456789012345678901234.56789), \
                  (2, -0.00001), (3, NULL), (4, 0), \
                  (5, -99999999999999999999999999999999999999999999.99999)";
    Db::Postgres.sql(
        &url,
        &format!(
            "CREATE TABLE src (id int PRIMARY KEY, v numeric(50,5));
             INSERT INTO src VALUES {values};
             CREATE TABLE dst_existing (id int, v numeric(60,10));"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sluice.toml"),
        format!("jobs = \"jobs\"\nstaging = \"file://./staging\"\n\n[connections.app]\nurl = \"{url}\"\n"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    for (job, table) in [("created", "dst_created"), ("existing", "dst_existing")] {
        std::fs::write(
            dir.path().join(format!("jobs/{job}.toml")),
            format!(
                r#"[tasks.src]
extract = "sql"
connection = "app"
query = "SELECT id, v FROM src"

[tasks.dst]
load = "sql"
input = "src"
connection = "app"
table = "{table}"
mode = "append"
create = true
"#
            ),
        )
        .unwrap();
        let out = run_job(dir.path(), job);
        assert!(out.status.success(), "{job}: {}", stderr(&out));
        // Compared as numbers, and the created column keeps (50,5).
        let diff = Db::Postgres.sql(
            &url,
            &format!(
                "SELECT count(*) FROM src FULL JOIN {table} d USING (id) \
                 WHERE src.v IS DISTINCT FROM d.v"
            ),
        );
        assert_eq!(diff.trim(), "0", "{job}");
    }
    let created = Db::Postgres.sql(
        &url,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
         WHERE attrelid = 'dst_created'::regclass AND attname = 'v'",
    );
    assert_eq!(created.trim(), "numeric(50,5)");
    let text = Db::Postgres.sql(&url, "SELECT v FROM dst_created WHERE id = 1");
    assert_eq!(
        text.trim(),
        "12345678901234567890123456789012345678901234.56789"
    );
}

/// `mode = "delete_insert"`: running a date again replaces that date's
/// rows and leaves the other dates' alone; every run leaves one marker.
fn delete_insert_replaces_a_dates_rows(url: &str, sql: &dyn Fn(&str) -> String) {
    sql("CREATE TABLE src (id int PRIMARY KEY, name varchar(20));
         INSERT INTO src VALUES (1, 'one'), (2, 'two');");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sluice.toml"),
        format!("jobs = \"jobs\"\nstaging = \"file://./staging\"\n\n[connections.app]\nurl = \"{url}\"\n"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    std::fs::write(
        dir.path().join("jobs/daily.toml"),
        r#"[tasks.src]
extract = "sql"
connection = "app"
query = "SELECT id, name, '{{ ds }}' AS dt FROM src"

[tasks.dst]
load = "sql"
input = "src"
connection = "app"
table = "daily"
mode = "delete_insert"
delete_where = "dt = '{{ ds }}'"
create = true
"#,
    )
    .unwrap();
    let run_date = |date: &str| {
        let out = run(sluice(dir.path()).args(["run", "daily", "--date", date]));
        assert!(out.status.success(), "{date}: {}", stderr(&out));
    };
    let rows = || {
        sql("SELECT dt, id, name FROM daily ORDER BY dt, id")
            .trim()
            .replace(['\t', '|'], ":")
            .replace('\n', " ")
    };
    run_date("2026-11-20");
    run_date("2026-11-21");
    assert_eq!(
        rows(),
        "2026-11-20:1:one 2026-11-20:2:two 2026-11-21:1:one 2026-11-21:2:two"
    );
    sql("DELETE FROM src WHERE id = 2; INSERT INTO src VALUES (3, 'three');");
    run_date("2026-11-20");
    assert_eq!(
        rows(),
        "2026-11-20:1:one 2026-11-20:3:three 2026-11-21:1:one 2026-11-21:2:two"
    );
    let markers = sql("SELECT count(*) FROM sluice_loads WHERE job = 'daily' AND task = 'dst'");
    assert_eq!(markers.trim(), "3", "one marker per run");
}

#[test]
fn postgres_delete_insert_replaces_a_dates_rows() {
    let url = Db::Postgres.fresh();
    delete_insert_replaces_a_dates_rows(&url, &|q| Db::Postgres.sql(&url, q));
}

#[test]
fn mariadb_delete_insert_replaces_a_dates_rows() {
    let url = Db::Maria.fresh();
    delete_insert_replaces_a_dates_rows(&url, &|q| Db::Maria.sql(&url, q));
}

#[test]
fn sqlite_delete_insert_replaces_a_dates_rows() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.db");
    let url = format!("sqlite://{}", file.display());
    delete_insert_replaces_a_dates_rows(&url, &|q| sqlite(&file, q));
}

/// A retry never loads twice, but a deliberate re-run does: `sluice
/// clear` and `sluice backfill --reset` start a new load generation. The
/// run had succeeded, so its staging is gone: clearing the load runs the
/// extract and transform it reads from again (or it would miss its input).
#[test]
fn clear_and_backfill_reset_start_a_new_load_generation() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.db");
    sqlite(
        &file,
        "CREATE TABLE src (id INTEGER PRIMARY KEY, name TEXT);
         INSERT INTO src VALUES (1, 'one'), (2, 'two');",
    );
    let url = format!("sqlite://{}", file.display());
    std::fs::write(
        dir.path().join("sluice.toml"),
        format!("jobs = \"jobs\"\nstaging = \"file://./staging\"\n\n[connections.app]\nurl = \"{url}\"\n"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    std::fs::write(
        dir.path().join("jobs/daily.toml"),
        r#"[tasks.src]
extract = "sql"
connection = "app"
query = "SELECT id, name, '{{ ds }}' AS dt FROM src"

[tasks.named]
transform = "SELECT id, upper(name) AS name, dt FROM src"

[tasks.dst]
load = "sql"
input = "named"
connection = "app"
table = "daily"
create = true
"#,
    )
    .unwrap();
    let sluice_ok = |args: &[&str]| {
        let out = run(sluice(dir.path()).args(args));
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        common::stdout(&out)
    };
    let count = || {
        sqlite(&file, "SELECT count(*) FROM daily")
            .trim()
            .to_string()
    };
    let backfill = [
        "backfill",
        "daily",
        "--from",
        "2026-11-20",
        "--to",
        "2026-11-20",
    ];
    sluice_ok(&backfill);
    assert_eq!(count(), "2");
    // Backfilling a date that ran is a no-op without --reset.
    sluice_ok(&backfill);
    assert_eq!(count(), "2");

    let state = dir.path().join("sluice-state.db");
    let run_id = sqlite(&state, "SELECT run_id FROM dag_runs WHERE dag = 'daily'")
        .trim()
        .to_string();
    let cleared = sluice_ok(&["clear", "daily", &run_id, "dst", "--local"]);
    assert!(
        cleared.contains("cleared daily") && cleared.contains("src, named, dst"),
        "{cleared}"
    );
    // The daemon's loop (here a backfill of the date) runs it again: an
    // append load appends the date's rows again, under a new generation.
    sluice_ok(&backfill);
    assert_eq!(count(), "4");
    let states = sqlite(
        &state,
        "SELECT task || '=' || state FROM task_instances WHERE dag = 'daily' ORDER BY task",
    );
    assert_eq!(
        states.trim().replace('\n', " "),
        "dst=success named=success src=success"
    );

    let mut reset = backfill.to_vec();
    reset.push("--reset");
    sluice_ok(&reset);
    assert_eq!(count(), "6");
    let generations = sqlite(
        &file,
        "SELECT count(DISTINCT generation) FROM sluice_loads WHERE job = 'daily' AND task = 'dst'",
    );
    assert_eq!(generations.trim(), "3", "one marker per generation");

    // What cannot be cleared says why, and exits 1.
    let out = run(sluice(dir.path()).args(["clear", "daily", &run_id, "nope", "--local"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("job daily has no task \"nope\"; its tasks: src, named, dst"),
        "{}",
        stderr(&out)
    );
    let out = run(sluice(dir.path()).args(["clear", "daily", "no_such_run", "dst", "--local"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("has no run \"no_such_run\""),
        "{}",
        stderr(&out)
    );
}
