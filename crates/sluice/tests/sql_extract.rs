//! `extract = "sql"` against the machine's real PostgreSQL: every mapped
//! type with its edge values round-trips to Parquet (read back by
//! pyarrow), partitioned reads return each row exactly once, and errors
//! name the connection and column.

mod common;

use common::{database_of, fresh_postgres_database, psql, python_script, run, sluice, stderr};
use std::path::Path;

/// Writes a daemon config with connection `app` and a job `extract_job`
/// whose task `src` runs `query` (with `extra` keys) and whose `out`
/// publishes it as Parquet under `<dir>/out`.
fn write_job(dir: &Path, url: &str, query: &str, extra: &str) {
    std::fs::write(
        dir.join("sluice.toml"),
        format!(
            "jobs = \"jobs\"\nstaging = \"file://./staging\"\n\n[connections.app]\nurl = \"{url}\"\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    std::fs::write(
        dir.join("jobs/extract_job.toml"),
        format!(
            r#"start = "2026-11-01"

[tasks.src]
extract = "sql"
connection = "app"
query = """{query}"""
{extra}

[tasks.out]
load = "parquet"
input = "src"
url = "out/"
"#
        ),
    )
    .unwrap();
}

const TYPES_TABLE: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'happy', 'ünïcode');
CREATE DOMAIN positive AS int4 CHECK (VALUE > 0);
CREATE TABLE everything (
    id int4 PRIMARY KEY,
    i2 int2, i4 int4, i8 int8,
    f4 float4, f8 float8,
    n_money numeric(38,10), n_wide numeric(60,20), n_free numeric,
    t text, vc varchar(10), ch char(3),
    b bool,
    d date, tm time, ts timestamp, tstz timestamptz,
    iv interval,
    j json, jb jsonb,
    u uuid,
    by bytea,
    ai int4[], at text[],
    mood mood,
    pos positive
);
INSERT INTO everything (id) VALUES (1);
INSERT INTO everything VALUES (2,
    -32768, -2147483648, -9223372036854775808,
    'NaN', '-Infinity',
    '-9999999999999999999999999999.9999999999',
    '-9999999999999999999999999999999999999999.99999999999999999999',
    '-0.5',
    '', '', '',
    false,
    '1970-01-01', '00:00:00', '1970-01-01 00:00:00', '1970-01-01 00:00:00+00',
    '-1 year -2 days -00:00:00.000001',
    '[]', '{}',
    '00000000-0000-0000-0000-000000000000',
    '\x',
    '{}', '{}',
    'sad', 1);
INSERT INTO everything VALUES (3,
    32767, 2147483647, 9223372036854775807,
    'Infinity', 'NaN',
    '9999999999999999999999999999.9999999999',
    '9999999999999999999999999999999999999999.99999999999999999999',
    '12345678.0123456789',
    '日本語 ✓ naïve', 'ünï', 'ab',
    true,
    '9999-12-31', '23:59:59.999999', '9999-12-31 23:59:59.999999', '9999-12-31 23:59:59.999999+00',
    '1 year 2 mons 3 days 04:05:06.789',
    '{"a": [1, 2], "é": null}', '{"b": {"c": true}}',
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    '\x00ff10',
    '{5,NULL,-7}', '{"x",NULL,"ü y",""}',
    'ünïcode', 2147483647);
"#;

const CHECK_TYPES: &str = r#"
import sys, math, datetime, decimal, json
import pyarrow as pa, pyarrow.parquet as pq, pyarrow.dataset as ds
t = ds.dataset(sys.argv[1], format="parquet").to_table().sort_by("id")
want = {
    "id": pa.int32(), "i2": pa.int16(), "i4": pa.int32(), "i8": pa.int64(),
    "f4": pa.float32(), "f8": pa.float64(),
    "n_money": pa.decimal128(38, 10), "n_wide": pa.decimal256(60, 20), "n_free": pa.decimal128(38, 10),
    "t": pa.string(), "vc": pa.string(), "ch": pa.string(), "b": pa.bool_(),
    "d": pa.date32(), "tm": pa.time64("us"), "ts": pa.timestamp("us"), "tstz": pa.timestamp("us", tz="UTC"),
    "iv": pa.struct([pa.field("months", pa.int32(), False), pa.field("days", pa.int32(), False),
                     pa.field("microseconds", pa.int64(), False)]),
    "j": pa.string(), "jb": pa.string(), "u": pa.string(), "by": pa.binary(),
    "ai": pa.list_(pa.int32()), "at": pa.list_(pa.string()), "mood": pa.string(), "pos": pa.int32(),
}
got = {f.name: f.type for f in t.schema}
assert list(got) == list(want), list(got)
for k, v in want.items():
    assert got[k] == v, (k, got[k], v)
rows = t.to_pylist()
assert len(rows) == 3, len(rows)
null_row = rows[0]
assert all(v is None for k, v in null_row.items() if k != "id"), null_row
lo, hi = rows[1], rows[2]
D = decimal.Decimal
assert (lo["i2"], lo["i4"], lo["i8"]) == (-32768, -2**31, -2**63), lo
assert (hi["i2"], hi["i4"], hi["i8"]) == (32767, 2**31 - 1, 2**63 - 1), hi
assert math.isnan(lo["f4"]) and lo["f8"] == -math.inf, lo
assert hi["f4"] == math.inf and math.isnan(hi["f8"]), hi
assert lo["n_money"] == D("-9999999999999999999999999999.9999999999"), lo["n_money"]
assert hi["n_money"] == D("9999999999999999999999999999.9999999999"), hi["n_money"]
assert hi["n_wide"] == D("9" * 40 + "." + "9" * 20), hi["n_wide"]
assert lo["n_wide"] == D("-" + "9" * 40 + "." + "9" * 20), lo["n_wide"]
assert lo["n_free"] == D("-0.5") and hi["n_free"] == D("12345678.0123456789"), (lo["n_free"], hi["n_free"])
assert (lo["t"], lo["vc"], lo["ch"]) == ("", "", "   "), lo
assert (hi["t"], hi["vc"], hi["ch"]) == ("日本語 ✓ naïve", "ünï", "ab "), hi
assert (lo["b"], hi["b"]) == (False, True)
assert lo["d"] == datetime.date(1970, 1, 1) and hi["d"] == datetime.date(9999, 12, 31)
assert lo["tm"] == datetime.time(0, 0) and hi["tm"] == datetime.time(23, 59, 59, 999999)
assert lo["ts"] == datetime.datetime(1970, 1, 1) and hi["ts"] == datetime.datetime(9999, 12, 31, 23, 59, 59, 999999)
utc = datetime.timezone.utc
assert lo["tstz"] == datetime.datetime(1970, 1, 1, tzinfo=utc), lo["tstz"]
assert hi["tstz"] == datetime.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=utc), hi["tstz"]
assert lo["iv"] == {"months": -12, "days": -2, "microseconds": -1}, lo["iv"]
assert hi["iv"] == {"months": 14, "days": 3, "microseconds": (4 * 3600 + 5 * 60 + 6) * 10**6 + 789000}, hi["iv"]
assert json.loads(lo["j"]) == [] and json.loads(lo["jb"]) == {}, (lo["j"], lo["jb"])
assert json.loads(hi["j"]) == {"a": [1, 2], "é": None}, hi["j"]
assert json.loads(hi["jb"]) == {"b": {"c": True}}, hi["jb"]
assert lo["u"] == "00000000-0000-0000-0000-000000000000" and hi["u"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
assert lo["by"] == b"" and hi["by"] == b"\x00\xff\x10", (lo["by"], hi["by"])
assert lo["ai"] == [] and lo["at"] == [], (lo["ai"], lo["at"])
assert hi["ai"] == [5, None, -7] and hi["at"] == ["x", None, "ü y", ""], (hi["ai"], hi["at"])
assert (lo["mood"], hi["mood"]) == ("sad", "ünïcode")
assert (lo["pos"], hi["pos"]) == (1, 2147483647)
print("ok")
"#;

#[test]
fn postgres_types_round_trip_to_parquet() {
    let url = fresh_postgres_database();
    psql(database_of(&url), TYPES_TABLE);
    let dir = tempfile::tempdir().unwrap();
    // A small batch size makes the three rows span two batches.
    write_job(
        dir.path(),
        &url,
        "SELECT * FROM everything ORDER BY id",
        "batch_size = 2",
    );
    let out = run(sluice(dir.path()).args(["run", "extract_job", "--date", "2026-11-20"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let checked = python_script(CHECK_TYPES, &[dir.path().join("out").to_str().unwrap()]);
    assert_eq!(checked.trim(), "ok");
}

#[test]
fn partitions_read_every_row_once_from_one_snapshot() {
    let url = fresh_postgres_database();
    let db = database_of(&url);
    psql(
        db,
        "CREATE TABLE events (id int8, at timestamptz, v float8);
         INSERT INTO events
           SELECT CASE WHEN g % 1000 = 0 THEN NULL ELSE g END,
                  timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute', g / 7.0
           FROM generate_series(1, 20000) g;
         CREATE VIEW events_view AS SELECT * FROM events;",
    );
    let check = r#"
import sys, pyarrow.dataset as ds
t = ds.dataset(sys.argv[1], format="parquet").to_table()
ids = [i for i in t.column("id").to_pylist() if i is not None]
print(t.num_rows, len(ids), len(set(ids)), t.column("id").null_count)
"#;
    // A read of one table row for row is split by its blocks (ctid
    // ranges); a query with a function call in its select list, or of a
    // view, by the key.
    let plain = "SELECT id, at, v FROM events";
    let computed = "SELECT id, at, round(v::numeric, 2)::float8 AS v FROM events";
    let wrapped = "SELECT * FROM (SELECT id, at, v FROM events WHERE v >= 0) AS q";
    // A view has no ctid.
    let view = "SELECT id, at, v FROM events_view";
    for (query, on, partitions, by_blocks) in [
        (plain, "id", 4, true),
        (plain, "at", 3, true),
        (plain, "id", 1, false),
        (computed, "id", 4, false),
        (computed, "at", 2, false),
        (wrapped, "id", 2, true),
        (view, "at", 2, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_job(
            dir.path(),
            &url,
            query,
            &format!("partition_on = \"{on}\"\npartitions = {partitions}\nbatch_size = 1000"),
        );
        let out = run(sluice(dir.path())
            .env("SLUICE_LOG", "sluice_engine=debug")
            .args(["run", "extract_job", "--date", "2026-11-20"]));
        assert!(out.status.success(), "{query} on {on}: {}", stderr(&out));
        assert_eq!(
            stderr(&out).contains("reading in block ranges"),
            by_blocks,
            "{query} on {on}: {}",
            stderr(&out)
        );
        let counts = python_script(check, &[dir.path().join("out").to_str().unwrap()]);
        assert_eq!(counts.trim(), "20000 19980 19980 20", "{query} on {on}");
    }
}

#[test]
fn unmapped_types_and_bad_queries_name_the_column_and_connection() {
    let url = fresh_postgres_database();
    psql(
        database_of(&url),
        "CREATE TABLE hosts (name text, ip inet, n numeric); INSERT INTO hosts VALUES ('a', '10.0.0.1', 1e30);",
    );
    let cases = [
        (
            "SELECT name, ip FROM hosts",
            "",
            vec!["connection app", "column ip", "inet", "ip::text"],
        ),
        (
            "SELECT name FROM no_such_table",
            "",
            vec!["connection app", "no_such_table"],
        ),
        // 1e30 does not fit numeric's default decimal(38,10): refused, not wrapped.
        (
            "SELECT n FROM hosts",
            "",
            vec!["connection app", "column n", "does not fit decimal(38,10)"],
        ),
        (
            "SELECT name FROM hosts",
            "partition_on = \"name\"\npartitions = 2",
            vec!["partition_on", "integer, date or timestamp"],
        ),
    ];
    for (query, extra, wanted) in cases {
        let dir = tempfile::tempdir().unwrap();
        write_job(dir.path(), &url, query, extra);
        let out = run(sluice(dir.path()).args(["run", "extract_job", "--date", "2026-11-20"]));
        assert_eq!(out.status.code(), Some(1), "{query}");
        let text = format!("{}{}", common::stdout(&out), stderr(&out));
        for w in wanted {
            assert!(text.contains(w), "{query}: missing {w:?} in:\n{text}");
        }
        assert!(
            !dir.path().join("out").exists()
                || common::files_under(&dir.path().join("out")).is_empty()
        );
    }
}

const MARIADB_TABLE: &str = r#"
CREATE TABLE everything (
    id int PRIMARY KEY,
    ti tinyint, tu tinyint unsigned, si smallint, su smallint unsigned,
    mi mediumint, i int, iu int unsigned, bi bigint, bu bigint unsigned,
    flag bool,
    f float, d double,
    dec_small decimal(12,2), dec_max decimal(65,30),
    c char(3), vc varchar(20), t text, lt longtext, j json,
    e enum('sad','happy','ünïcode'),
    vb varbinary(8), bl blob,
    bt bit(12),
    dt date, tm time(6), dtm datetime(6), ts timestamp(6) NULL,
    y year
) CHARACTER SET utf8mb4;
INSERT INTO everything (id) VALUES (1);
INSERT INTO everything VALUES (2,
    -128, 0, -32768, 0, -8388608, -2147483648, 0, -9223372036854775808, 0,
    false,
    -3.5, -1.7976931348623157e308,
    '-9999999999.99', '-99999999999999999999999999999999999.999999999999999999999999999999',
    '', '', '', '', '[]',
    'sad',
    '', '',
    b'0',
    '1970-01-01', '00:00:00', '1970-01-01 00:00:00', '1970-01-01 00:00:01',
    1901);
INSERT INTO everything VALUES (3,
    127, 255, 32767, 65535, 8388607, 2147483647, 4294967295, 9223372036854775807, 18446744073709551615,
    true,
    3.5, 1.7976931348623157e308,
    '9999999999.99', '99999999999999999999999999999999999.999999999999999999999999999999',
    'ab', 'ünï ✓', '日本語', 'naïve', '{"a": [1, 2]}',
    'ünïcode',
    X'00FF10', X'DEADBEEF',
    b'111111111111',
    '9999-12-31', '23:59:59.999999', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999',
    2155);
"#;

const CHECK_MARIADB: &str = r#"
import sys, datetime, decimal, json
import pyarrow as pa, pyarrow.dataset as ds
t = ds.dataset(sys.argv[1], format="parquet").to_table().sort_by("id")
want = {
    "id": pa.int32(), "ti": pa.int8(), "tu": pa.uint8(), "si": pa.int16(), "su": pa.uint16(),
    "mi": pa.int32(), "i": pa.int32(), "iu": pa.uint32(), "bi": pa.int64(), "bu": pa.uint64(),
    "flag": pa.bool_(), "f": pa.float32(), "d": pa.float64(),
    "dec_small": pa.decimal128(12, 2), "dec_max": pa.decimal256(65, 30),
    "c": pa.string(), "vc": pa.string(), "t": pa.string(), "lt": pa.string(), "j": pa.string(),
    "e": pa.string(), "vb": pa.binary(), "bl": pa.binary(), "bt": pa.uint64(),
    "dt": pa.date32(), "tm": pa.time64("us"), "dtm": pa.timestamp("us"), "ts": pa.timestamp("us", tz="UTC"),
    "y": pa.int16(),
}
got = {f.name: f.type for f in t.schema}
assert list(got) == list(want), list(got)
for k, v in want.items():
    assert got[k] == v, (k, got[k], v)
rows = t.to_pylist()
assert len(rows) == 3
assert all(v is None for k, v in rows[0].items() if k != "id"), rows[0]
lo, hi = rows[1], rows[2]
D = decimal.Decimal
assert (lo["ti"], lo["si"], lo["mi"], lo["i"], lo["bi"]) == (-128, -32768, -8388608, -2**31, -2**63), lo
assert (hi["tu"], hi["su"], hi["iu"], hi["bu"]) == (255, 65535, 2**32 - 1, 2**64 - 1), hi
assert (lo["flag"], hi["flag"]) == (False, True)
assert (lo["f"], hi["f"]) == (-3.5, 3.5)
assert (lo["d"], hi["d"]) == (-1.7976931348623157e308, 1.7976931348623157e308)
assert hi["dec_small"] == D("9999999999.99") and lo["dec_small"] == D("-9999999999.99")
big = "9" * 35 + "." + "9" * 30
assert hi["dec_max"] == D(big) and lo["dec_max"] == D("-" + big), (hi["dec_max"], lo["dec_max"])
assert (lo["c"], lo["vc"], lo["t"], lo["lt"]) == ("", "", "", ""), lo
assert (hi["c"], hi["vc"], hi["t"], hi["lt"]) == ("ab", "ünï ✓", "日本語", "naïve"), hi
assert json.loads(lo["j"]) == [] and json.loads(hi["j"]) == {"a": [1, 2]}
assert (lo["e"], hi["e"]) == ("sad", "ünïcode")
assert (lo["vb"], lo["bl"], hi["vb"], hi["bl"]) == (b"", b"", b"\x00\xff\x10", b"\xde\xad\xbe\xef")
assert (lo["bt"], hi["bt"]) == (0, 4095)
assert lo["dt"] == datetime.date(1970, 1, 1) and hi["dt"] == datetime.date(9999, 12, 31)
assert lo["tm"] == datetime.time(0) and hi["tm"] == datetime.time(23, 59, 59, 999999)
assert hi["dtm"] == datetime.datetime(9999, 12, 31, 23, 59, 59, 999999)
utc = datetime.timezone.utc
assert lo["ts"] == datetime.datetime(1970, 1, 1, 0, 0, 1, tzinfo=utc), lo["ts"]
assert hi["ts"] == datetime.datetime(2038, 1, 19, 3, 14, 7, 999999, tzinfo=utc), hi["ts"]
assert (lo["y"], hi["y"]) == (1901, 2155)
print("ok")
"#;

#[test]
fn mariadb_types_round_trip_to_parquet() {
    let url = common::fresh_mariadb_database();
    common::mariadb(database_of(&url), MARIADB_TABLE);
    let dir = tempfile::tempdir().unwrap();
    write_job(
        dir.path(),
        &url,
        "SELECT * FROM everything ORDER BY id",
        "batch_size = 2",
    );
    let out = run(sluice(dir.path()).args(["run", "extract_job", "--date", "2026-11-20"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let checked = python_script(CHECK_MARIADB, &[dir.path().join("out").to_str().unwrap()]);
    assert_eq!(checked.trim(), "ok");
}

#[test]
fn mariadb_partitions_read_every_row_once() {
    let url = common::fresh_mariadb_database();
    common::mariadb(
        database_of(&url),
        "CREATE TABLE events (id bigint, at datetime(6), v double);
         INSERT INTO events
           SELECT IF(seq % 1000 = 0, NULL, seq), TIMESTAMP '2026-01-01 00:00:00' + INTERVAL seq MINUTE, seq / 7
           FROM seq_1_to_5000;",
    );
    let check = r#"
import sys, pyarrow.dataset as ds
t = ds.dataset(sys.argv[1], format="parquet").to_table()
ids = [i for i in t.column("id").to_pylist() if i is not None]
print(t.num_rows, len(ids), len(set(ids)), t.column("id").null_count)
"#;
    for (on, partitions) in [("id", 3), ("at", 2)] {
        let dir = tempfile::tempdir().unwrap();
        write_job(
            dir.path(),
            &url,
            "SELECT id, at, v FROM events",
            &format!("partition_on = \"{on}\"\npartitions = {partitions}\nbatch_size = 700"),
        );
        let out = run(sluice(dir.path()).args(["run", "extract_job", "--date", "2026-11-20"]));
        assert!(out.status.success(), "{on}: {}", stderr(&out));
        let counts = python_script(check, &[dir.path().join("out").to_str().unwrap()]);
        assert_eq!(counts.trim(), "5000 4995 4995 5", "partition_on = {on}");
    }
}

/// PostgreSQL here trusts every local connection, so the wrong password is
/// tried on MariaDB, with a user made for the test.
#[test]
fn a_wrong_password_names_the_connection_and_hides_the_password() {
    let url = common::fresh_mariadb_database();
    let db = database_of(&url).to_string();
    let user = format!("{db}_u");
    common::mariadb(
        "test",
        &format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY 'right-horse-battery'; \
             CREATE USER '{user}'@'localhost' IDENTIFIED BY 'right-horse-battery'; \
             GRANT ALL ON {db}.* TO '{user}'@'%'; GRANT ALL ON {db}.* TO '{user}'@'localhost';"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let wrong = "wrong-staple-Secret42";
    write_job(
        dir.path(),
        &format!("mysql://{user}:${{APP_DB_PASSWORD}}@127.0.0.1:3306/{db}"),
        "SELECT 1 AS one",
        "retries = 0",
    );
    let out = run(sluice(dir.path()).env("APP_DB_PASSWORD", wrong).args([
        "run",
        "extract_job",
        "--date",
        "2026-11-20",
    ]));
    let text = format!("{}{}", common::stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("connection app"), "{text}");
    assert!(text.contains("Access denied"), "{text}");
    assert!(!text.contains(wrong), "the password leaked:\n{text}");
    // The right password from the environment works.
    let out = run(sluice(dir.path())
        .env("APP_DB_PASSWORD", "right-horse-battery")
        .args(["run", "extract_job", "--date", "2026-11-20"]));
    assert!(out.status.success(), "{}", stderr(&out));
    common::mariadb(
        "test",
        &format!("DROP USER '{user}'@'%'; DROP USER '{user}'@'localhost';"),
    );
}

/// Writes a job whose only task is a sql sensor on connection `app`.
fn write_sensor_job(dir: &Path, url: &str, query: &str) {
    std::fs::write(
        dir.join("sluice.toml"),
        format!("jobs = \"jobs\"\nstaging = \"file://./staging\"\n\n[connections.app]\nurl = \"{url}\"\n"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    std::fs::write(
        dir.join("jobs/sensor_job.toml"),
        format!(
            "[tasks.ready]\nsensor = \"sql\"\nconnection = \"app\"\nquery = \"{query}\"\npoke_interval = \"100ms\"\ntimeout = \"2s\"\n"
        ),
    )
    .unwrap();
}

#[test]
fn sql_sensors_wait_for_true_and_fail_on_a_non_boolean() {
    let pg = fresh_postgres_database();
    psql(
        database_of(&pg),
        "CREATE TABLE loads (ds date); INSERT INTO loads VALUES ('2026-11-20');",
    );
    let maria = common::fresh_mariadb_database();
    common::mariadb(
        database_of(&maria),
        "CREATE TABLE loads (ds date); INSERT INTO loads VALUES ('2026-11-20');",
    );
    for url in [&pg, &maria] {
        let query = "SELECT count(*) > 0 FROM loads WHERE ds = '{{ ds }}'";
        let dir = tempfile::tempdir().unwrap();
        write_sensor_job(dir.path(), url, query);
        // The row for the 20th is there: the first poke succeeds.
        let out = run(sluice(dir.path()).args(["run", "sensor_job", "--date", "2026-11-20"]));
        assert!(out.status.success(), "{url}: {}", stderr(&out));
        // Nothing for the 21st: the sensor pokes until its timeout.
        let started = std::time::Instant::now();
        let out = run(sluice(dir.path()).args(["run", "sensor_job", "--date", "2026-11-21"]));
        assert_eq!(out.status.code(), Some(1), "{url}");
        assert!(started.elapsed() >= std::time::Duration::from_secs(2));
        let text = format!("{}{}", common::stdout(&out), stderr(&out));
        assert!(text.contains("timed out"), "{url}: {text}");
        // A query whose answer is not a boolean fails at once.
        write_sensor_job(dir.path(), url, "SELECT 'yes' AS answer");
        let started = std::time::Instant::now();
        let out = run(sluice(dir.path()).args(["run", "sensor_job", "--date", "2026-11-20"]));
        assert_eq!(out.status.code(), Some(1), "{url}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let text = format!("{}{}", common::stdout(&out), stderr(&out));
        assert!(
            text.contains("connection app") && text.contains("needs a boolean"),
            "{url}: {text}"
        );
    }
}

/// Writes a job whose incremental extract of `items` publishes each run's
/// rows under `out/<ds>/`.
fn write_incremental_job(dir: &Path, url: &str) {
    std::fs::write(
        dir.join("sluice.toml"),
        format!(
            "jobs = \"jobs\"\nstate = \"sqlite://state.db\"\nstaging = \"file://./staging\"\n\n[connections.app]\nurl = \"{url}\"\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    std::fs::write(
        dir.join("jobs/items_sync.toml"),
        r#"schedule = "@daily"
start = "2026-11-01"

[tasks.items]
extract = "sql"
connection = "app"
query = "SELECT id, name, updated_at FROM items"
incremental = { column = "updated_at" }

[tasks.out]
load = "parquet"
input = "items"
url = "out/{{ ds }}/"
"#,
    )
    .unwrap();
}

/// The ids each `out/<ds>` folder holds, by date.
fn ids_by_date(out: &Path) -> String {
    let script = r#"
import sys, os, pyarrow.dataset as ds
for d in sorted(os.listdir(sys.argv[1])):
    t = ds.dataset(os.path.join(sys.argv[1], d), format="parquet").to_table()
    print(d, sorted(t.column("id").to_pylist()))
"#;
    python_script(script, &[out.to_str().unwrap()])
}

#[test]
fn incremental_runs_read_each_new_row_once_and_a_failed_publish_keeps_the_mark() {
    let pg = fresh_postgres_database();
    let db = database_of(&pg).to_string();
    psql(
        &db,
        "CREATE TABLE items (id int, name text, updated_at timestamptz);
         INSERT INTO items VALUES (1, 'a', '2026-11-01 10:00:00+00'), (2, 'b', '2026-11-01 11:00:00+00'),
                                  (3, 'c', '2026-11-01 12:00:00.5+00');",
    );
    let dir = tempfile::tempdir().unwrap();
    write_incremental_job(dir.path(), &pg);
    let run_date = |date: &str| run(sluice(dir.path()).args(["run", "items_sync", "--date", date]));
    assert!(run_date("2026-11-01").status.success());
    // Two new rows and one updated row.
    psql(
        &db,
        "INSERT INTO items VALUES (4, 'd', '2026-11-02 09:00:00+00'), (5, 'e', '2026-11-02 09:30:00+00');
         UPDATE items SET name = 'b2', updated_at = '2026-11-02 10:00:00+00' WHERE id = 2;",
    );
    assert!(run_date("2026-11-02").status.success());
    // A run whose publish fails: a file stands where its folder must go.
    psql(
        &db,
        "INSERT INTO items VALUES (6, 'f', '2026-11-03 08:00:00+00');",
    );
    std::fs::write(dir.path().join("out/2026-11-03"), "in the way").unwrap();
    let failed = run_date("2026-11-03");
    assert_eq!(failed.status.code(), Some(1));
    std::fs::remove_file(dir.path().join("out/2026-11-03")).unwrap();
    // The mark stayed where run 2 left it: the retry reads row 6, and only it.
    assert!(run_date("2026-11-03").status.success());
    // Nothing new: an empty extract, and the mark stays.
    assert!(run_date("2026-11-04").status.success());
    assert_eq!(
        ids_by_date(&dir.path().join("out")),
        "2026-11-01 [1, 2, 3]\n2026-11-02 [2, 4, 5]\n2026-11-03 [6]\n2026-11-04 []\n"
    );
}

#[test]
fn incremental_marks_advance_under_the_daemon_too() {
    let maria = common::fresh_mariadb_database();
    let db = database_of(&maria).to_string();
    common::mariadb(
        &db,
        "CREATE TABLE items (id int, name text, updated_at datetime(6));
         INSERT INTO items VALUES (1, 'a', '2026-11-01 10:00:00'), (2, 'b', '2026-11-01 11:00:00.25');",
    );
    let dir = tempfile::tempdir().unwrap();
    write_incremental_job(dir.path(), &maria);
    let backfill = |from: &str, to: &str| {
        run(sluice(dir.path()).args(["backfill", "items_sync", "--from", from, "--to", to]))
    };
    // Runs take turns (max_active_runs is 1 for incremental jobs): the
    // first reads both rows, the next two nothing.
    assert!(backfill("2026-11-01", "2026-11-03").status.success());
    common::mariadb(
        &db,
        "INSERT INTO items VALUES (3, 'c', '2026-11-04 00:00:00');
         UPDATE items SET updated_at = '2026-11-04 01:00:00' WHERE id = 1;",
    );
    assert!(backfill("2026-11-04", "2026-11-04").status.success());
    assert_eq!(
        ids_by_date(&dir.path().join("out")),
        "2026-11-01 [1, 2]\n2026-11-02 []\n2026-11-03 []\n2026-11-04 [1, 3]\n"
    );
}

const SQLITE_SETUP: &str = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.executescript('''
CREATE TABLE everything (
    id INTEGER PRIMARY KEY, i BIGINT, f DOUBLE, n DECIMAL(12,2), t TEXT, vc VARCHAR(10),
    b BOOLEAN, d DATE, ts DATETIME, bl BLOB, j JSON
);
INSERT INTO everything (id) VALUES (1);
INSERT INTO everything VALUES (2, -9223372036854775808, -1.5e300, '-9999999999.99', '', '', 0,
    '1970-01-01', '1970-01-01 00:00:00', X'', '[]');
INSERT INTO everything VALUES (3, 9223372036854775807, 2.5, 1234.5, '日本語 ✓', 'ünï', 1,
    '9999-12-31', '9999-12-31T23:59:59.999999Z', X'00FF10', '{"a": 1}');
''')
db.commit()
"#;

const CHECK_SQLITE: &str = r#"
import sys, datetime, decimal
import pyarrow as pa, pyarrow.dataset as ds
t = ds.dataset(sys.argv[1], format="parquet").to_table().sort_by("id")
want = {"id": pa.int64(), "i": pa.int64(), "f": pa.float64(), "n": pa.decimal128(12, 2), "t": pa.string(),
        "vc": pa.string(), "b": pa.bool_(), "d": pa.date32(), "ts": pa.timestamp("us"), "bl": pa.binary(),
        "j": pa.string(), "twice": pa.int64()}
got = {f.name: f.type for f in t.schema}
assert got == want, got
rows = t.to_pylist()
assert all(v is None for k, v in rows[0].items() if k not in ("id", "twice")), rows[0]
lo, hi = rows[1], rows[2]
assert (lo["i"], hi["i"]) == (-2**63, 2**63 - 1)
assert (lo["f"], hi["f"]) == (-1.5e300, 2.5)
assert (lo["n"], hi["n"]) == (decimal.Decimal("-9999999999.99"), decimal.Decimal("1234.50"))
assert (lo["t"], lo["vc"], hi["t"], hi["vc"]) == ("", "", "日本語 ✓", "ünï")
assert (lo["b"], hi["b"]) == (False, True)
assert (lo["d"], hi["d"]) == (datetime.date(1970, 1, 1), datetime.date(9999, 12, 31))
assert hi["ts"] == datetime.datetime(9999, 12, 31, 23, 59, 59, 999999), hi["ts"]
assert (lo["bl"], hi["bl"]) == (b"", b"\x00\xff\x10")
assert (lo["j"], hi["j"]) == ("[]", '{"a": 1}')
assert [r["twice"] for r in rows] == [2, 4, 6]
print("ok")
"#;

#[test]
fn sqlite_types_round_trip_to_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.db");
    python_script(SQLITE_SETUP, &[file.to_str().unwrap()]);
    write_job(
        dir.path(),
        &format!("sqlite://{}", file.display()),
        "SELECT *, id * 2 AS twice FROM everything ORDER BY id",
        "batch_size = 2",
    );
    let out = run(sluice(dir.path()).args(["run", "extract_job", "--date", "2026-11-20"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let checked = python_script(CHECK_SQLITE, &[dir.path().join("out").to_str().unwrap()]);
    assert_eq!(checked.trim(), "ok");
    // Text in an INTEGER column is an error naming the row and column.
    python_script(
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); db.execute(\"INSERT INTO everything (id, i) VALUES (4, 'lots')\"); db.commit()",
        &[file.to_str().unwrap()],
    );
    let out = run(sluice(dir.path()).args(["run", "extract_job", "--date", "2026-11-21"]));
    assert_eq!(out.status.code(), Some(1));
    let text = format!("{}{}", common::stdout(&out), stderr(&out));
    assert!(
        text.contains("row 4, column i") && text.contains("lots"),
        "{text}"
    );
}

/// A host where nothing listens: the error names the connection and what
/// failed, and never the password, for each kind of server.
#[test]
fn an_unreachable_host_names_the_connection_and_hides_the_password() {
    let secret = "unreachable-Secret77";
    for scheme in ["postgres", "mysql"] {
        let dir = tempfile::tempdir().unwrap();
        // Port 1 on the loopback: refused at once.
        write_job(
            dir.path(),
            &format!("{scheme}://etl:${{APP_DB_PASSWORD}}@127.0.0.1:1/app"),
            "SELECT 1 AS one",
            "retries = 0",
        );
        let out = run(sluice(dir.path()).env("APP_DB_PASSWORD", secret).args([
            "run",
            "extract_job",
            "--date",
            "2026-11-20",
        ]));
        let text = format!("{}{}", common::stdout(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(1), "{scheme}: {text}");
        assert!(text.contains("connection app"), "{scheme}: {text}");
        assert!(text.contains("connecting"), "{scheme}: {text}");
        assert!(
            !text.contains(secret),
            "{scheme}: the password leaked:\n{text}"
        );
    }
}
