//! `load = "sql"`: a dataset written into a table in one transaction, so a
//! load that fails halfway (a bad value, a lost connection, a timeout)
//! leaves the table as it was. PostgreSQL takes the rows through binary
//! COPY; MySQL, MariaDB and SQLite through multi-row INSERTs of
//! `batch_size` rows. `replace` deletes the old rows in the same
//! transaction (readers see the old rows until it commits); `upsert`
//! updates rows whose key matches and inserts the rest.

use super::pg_encode::{self, Target};
use super::{DbKind, DbTarget};
use crate::error::{Error, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use sluice_core::config::{DaemonConfig, LoadMode, SqlLoad};
use sqlx::{AssertSqlSafe, Connection, Executor, Row};
use std::collections::HashMap;

/// Writes `stream` into `table`; returns the rows written.
pub async fn load(
    config: &DaemonConfig,
    spec: &SqlLoad,
    table: &str,
    stream: SendableRecordBatchStream,
) -> Result<u64> {
    let target = DbTarget::resolve(config, &spec.connection)?;
    let kind = target.kind()?;
    let schema = stream.schema();
    if let LoadMode::Upsert { key } = &spec.mode {
        for k in key {
            if schema.index_of(k).is_err() {
                return Err(Error::Config(format!(
                    "key: column \"{k}\" is not in {}; its columns: {}",
                    spec.input,
                    crate::schema::column_names(&schema)
                )));
            }
        }
    }
    let plan = Plan {
        table: quote_path(table, kind),
        columns: schema
            .fields()
            .iter()
            .map(|f| quote(f.name(), kind))
            .collect::<Vec<_>>()
            .join(", "),
        schema: schema.clone(),
        kind,
    };
    match kind {
        DbKind::Postgres => postgres(&target, spec, &plan, table, stream).await,
        DbKind::MySql | DbKind::Sqlite => inserts(&target, spec, &plan, stream).await,
    }
}

struct Plan {
    /// The quoted table name.
    table: String,
    /// The quoted column list.
    columns: String,
    schema: SchemaRef,
    kind: DbKind,
}

fn quote(name: &str, kind: DbKind) -> String {
    match kind {
        DbKind::MySql => format!("`{}`", name.replace('`', "``")),
        _ => format!("\"{}\"", name.replace('"', "\"\"")),
    }
}

fn quote_path(table: &str, kind: DbKind) -> String {
    table
        .split('.')
        .map(|p| quote(p, kind))
        .collect::<Vec<_>>()
        .join(".")
}

/// `CREATE TABLE IF NOT EXISTS` from the dataset's schema, with the upsert
/// key as primary key.
fn create_statement(spec: &SqlLoad, plan: &Plan) -> Result<String> {
    let key: &[String] = match &spec.mode {
        LoadMode::Upsert { key } => key,
        _ => &[],
    };
    let mut cols = Vec::new();
    for f in plan.schema.fields() {
        let in_key = key.contains(f.name());
        let ty = match plan.kind {
            DbKind::Postgres => pg_encode::column_type(f.data_type()),
            DbKind::MySql => mysql_type(f.data_type(), in_key),
            DbKind::Sqlite => sqlite_type(f.data_type()),
        }
        .ok_or_else(|| {
            Error::Config(format!(
                "column {} is {}, which a {:?} table cannot take; cast it in the SQL that makes {}",
                f.name(),
                f.data_type(),
                plan.kind,
                spec.input
            ))
        })?;
        cols.push(format!("{} {ty}", quote(f.name(), plan.kind)));
    }
    if !key.is_empty() {
        cols.push(format!(
            "PRIMARY KEY ({})",
            key.iter()
                .map(|k| quote(k, plan.kind))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {} ({})",
        plan.table,
        cols.join(", ")
    ))
}

fn mysql_type(dt: &DataType, in_key: bool) -> Option<String> {
    Some(match dt {
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "int".into(),
        DataType::Int64 => "bigint".into(),
        DataType::UInt8 => "tinyint unsigned".into(),
        DataType::UInt16 => "smallint unsigned".into(),
        DataType::UInt32 => "int unsigned".into(),
        DataType::UInt64 => "bigint unsigned".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) if *p <= 65 => {
            format!("decimal({p},{s})")
        }
        // An index needs a bounded length.
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View if in_key => {
            "varchar(255)".into()
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "longtext".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView if in_key => {
            "varbinary(255)".into()
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "longblob".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, _) => "datetime(6)".into(),
        _ => return None,
    })
}

fn sqlite_type(dt: &DataType) -> Option<String> {
    Some(match dt {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => "INTEGER".into(),
        DataType::Float32 | DataType::Float64 => "REAL".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "TEXT".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BLOB".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(_, _) => "DATETIME".into(),
        _ => return None,
    })
}

/// The first batch error as ours, keeping its meaning.
fn batch_error(e: datafusion::error::DataFusionError) -> Error {
    Error::from(e)
}

async fn postgres(
    target: &DbTarget,
    spec: &SqlLoad,
    plan: &Plan,
    table: &str,
    mut stream: SendableRecordBatchStream,
) -> Result<u64> {
    let fail = |what: &'static str| move |e: sqlx::Error| target.error(what, &e);
    let mut conn = target.connect::<sqlx::PgConnection>().await?;
    let mut tx = conn.begin().await.map_err(fail("starting a transaction"))?;
    if spec.create {
        // Two loads creating one new table at once collide in the catalog
        // (a duplicate pg_type row), IF NOT EXISTS notwithstanding: the
        // second waits for the first's commit, then finds the table.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("sluice create {}", plan.table))
            .execute(&mut *tx)
            .await
            .map_err(fail("locking the table's creation"))?;
        (&mut *tx)
            .execute(AssertSqlSafe(create_statement(spec, plan)?))
            .await
            .map_err(fail("creating the table"))?;
    }
    // Binary COPY must send each column in its target type's wire form.
    let rows = sqlx::query(
        "SELECT attname::text, atttypid::int8 FROM pg_attribute \
         WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
    )
    .bind(plan.table.clone())
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| target.error(&format!("looking up table {table}"), &e))?;
    let declared: HashMap<String, u32> = rows
        .iter()
        .filter_map(|r| {
            Some((
                r.try_get::<String, _>(0).ok()?,
                r.try_get::<i64, _>(1).ok()? as u32,
            ))
        })
        .collect();
    let mut targets = Vec::new();
    for f in plan.schema.fields() {
        let oid = declared.get(f.name()).ok_or_else(|| {
            target.column_error(f.name(), &format!("table {table} has no such column"))
        })?;
        targets.push(Target::from_oid(*oid).ok_or_else(|| {
            target.column_error(
                f.name(),
                &format!(
                    "the table's type (OID {oid}) cannot be written by binary COPY from {}",
                    f.data_type()
                ),
            )
        })?);
    }
    if spec.mode == LoadMode::Replace {
        (&mut *tx)
            .execute(AssertSqlSafe(format!("DELETE FROM {}", plan.table)))
            .await
            .map_err(fail("deleting the old rows"))?;
    }
    let dest = match &spec.mode {
        LoadMode::Upsert { .. } => {
            (&mut *tx).execute(AssertSqlSafe(format!(
                "CREATE TEMPORARY TABLE sluice_load (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP",
                plan.table
            )))
            .await
            .map_err(fail("creating the upsert's staging table"))?;
            "sluice_load".to_string()
        }
        _ => plan.table.clone(),
    };
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY {dest} ({}) FROM STDIN (FORMAT binary)",
            plan.columns
        ))
        .await
        .map_err(fail("starting COPY"))?;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    buf.extend_from_slice(super::pg_binary::SIGNATURE);
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    let ncols = plan.schema.fields().len() as i16;
    let mut written: u64 = 0;
    let result: Result<()> = async {
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(batch_error)?;
            let cols = canonical_columns(&batch, target)?;
            for row in 0..batch.num_rows() {
                buf.extend_from_slice(&ncols.to_be_bytes());
                for (i, col) in cols.iter().enumerate() {
                    pg_encode::encode(col.as_ref(), row, targets[i], &mut buf).map_err(|m| {
                        target.error_msg(
                            "writing rows",
                            &format!(
                                "row {}, column {}: {m}",
                                written + row as u64 + 1,
                                plan.schema.field(i).name()
                            ),
                        )
                    })?;
                }
                if buf.len() >= 1 << 20 {
                    copy.send(std::mem::take(&mut buf))
                        .await
                        .map_err(|e| target.error("writing rows", &e))?;
                    buf.reserve(1 << 20);
                }
            }
            written += batch.num_rows() as u64;
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = copy.abort("sluice: load failed").await;
        return Err(e);
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    copy.send(buf).await.map_err(fail("writing rows"))?;
    copy.finish().await.map_err(fail("finishing COPY"))?;
    if let LoadMode::Upsert { key } = &spec.mode {
        let sets: Vec<String> = plan
            .schema
            .fields()
            .iter()
            .filter(|f| !key.contains(f.name()))
            .map(|f| {
                let c = quote(f.name(), DbKind::Postgres);
                format!("{c} = EXCLUDED.{c}")
            })
            .collect();
        let keys: Vec<String> = key.iter().map(|k| quote(k, DbKind::Postgres)).collect();
        let action = if sets.is_empty() {
            "NOTHING".to_string()
        } else {
            format!("UPDATE SET {}", sets.join(", "))
        };
        (&mut *tx).execute(AssertSqlSafe(format!(
            "INSERT INTO {} ({cols}) SELECT {cols} FROM sluice_load ON CONFLICT ({}) DO {action}",
            plan.table,
            keys.join(", "),
            cols = plan.columns
        )))
        .await
        .map_err(fail("upserting"))?;
    }
    tx.commit().await.map_err(fail("committing"))?;
    Ok(written)
}

fn canonical_columns(batch: &RecordBatch, target: &DbTarget) -> Result<Vec<ArrayRef>> {
    batch
        .columns()
        .iter()
        .map(|c| pg_encode::canonical(c).map_err(|m| target.error_msg("converting a column", &m)))
        .collect()
}

async fn inserts(
    target: &DbTarget,
    spec: &SqlLoad,
    plan: &Plan,
    stream: SendableRecordBatchStream,
) -> Result<u64> {
    match plan.kind {
        DbKind::MySql => {
            let mut conn = target.connect::<sqlx::MySqlConnection>().await?;
            conn.execute("SET time_zone = '+00:00'")
                .await
                .map_err(|e| target.error("setting the session time zone", &e))?;
            insert_rows::<sqlx::MySql>(&mut conn, target, spec, plan, stream).await
        }
        _ => {
            let mut conn = target.connect::<sqlx::SqliteConnection>().await?;
            insert_rows::<sqlx::Sqlite>(&mut conn, target, spec, plan, stream).await
        }
    }
}

async fn insert_rows<DB>(
    conn: &mut DB::Connection,
    target: &DbTarget,
    spec: &SqlLoad,
    plan: &Plan,
    mut stream: SendableRecordBatchStream,
) -> Result<u64>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let fail = |what: &'static str| move |e: sqlx::Error| target.error(what, &e);
    // MySQL commits the open transaction at any DDL, so the table is made
    // before the transaction starts (SQLite could do either).
    if spec.create {
        (&mut *conn)
            .execute(AssertSqlSafe(create_statement(spec, plan)?))
            .await
            .map_err(fail("creating the table"))?;
    }
    let mut tx = conn.begin().await.map_err(fail("starting a transaction"))?;
    if spec.mode == LoadMode::Replace {
        (&mut *tx)
            .execute(AssertSqlSafe(format!("DELETE FROM {}", plan.table)))
            .await
            .map_err(fail("deleting the old rows"))?;
    }
    let tail = match &spec.mode {
        LoadMode::Upsert { key } => {
            let others: Vec<String> = plan
                .schema
                .fields()
                .iter()
                .filter(|f| !key.contains(f.name()))
                .map(|f| quote(f.name(), plan.kind))
                .collect();
            match plan.kind {
                DbKind::MySql if others.is_empty() => {
                    // Nothing to update: a matching row stays as it is.
                    let k = quote(&key[0], plan.kind);
                    format!(" ON DUPLICATE KEY UPDATE {k} = {k}")
                }
                DbKind::MySql => format!(
                    " ON DUPLICATE KEY UPDATE {}",
                    others
                        .iter()
                        .map(|c| format!("{c} = VALUES({c})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => {
                    let keys: Vec<String> = key.iter().map(|k| quote(k, plan.kind)).collect();
                    if others.is_empty() {
                        format!(" ON CONFLICT ({}) DO NOTHING", keys.join(", "))
                    } else {
                        format!(
                            " ON CONFLICT ({}) DO UPDATE SET {}",
                            keys.join(", "),
                            others
                                .iter()
                                .map(|c| format!("{c} = excluded.{c}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                }
            }
        }
        _ => String::new(),
    };
    let head = format!("INSERT INTO {} ({}) VALUES ", plan.table, plan.columns);
    let mut statement = head.clone();
    let mut in_statement = 0;
    let mut written: u64 = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(batch_error)?;
        let cols = canonical_columns(&batch, target)?;
        for row in 0..batch.num_rows() {
            if in_statement > 0 {
                statement.push_str(", ");
            }
            statement.push('(');
            for (i, col) in cols.iter().enumerate() {
                if i > 0 {
                    statement.push_str(", ");
                }
                literal(col.as_ref(), row, plan.kind, &mut statement).map_err(|m| {
                    target.error_msg(
                        "writing rows",
                        &format!(
                            "row {}, column {}: {m}",
                            written + row as u64 + 1,
                            plan.schema.field(i).name()
                        ),
                    )
                })?;
            }
            statement.push(')');
            in_statement += 1;
            if in_statement == spec.batch_size {
                statement.push_str(&tail);
                (&mut *tx)
                    .execute(AssertSqlSafe(std::mem::replace(
                        &mut statement,
                        head.clone(),
                    )))
                    .await
                    .map_err(fail("writing rows"))?;
                in_statement = 0;
            }
        }
        written += batch.num_rows() as u64;
    }
    if in_statement > 0 {
        statement.push_str(&tail);
        (&mut *tx)
            .execute(AssertSqlSafe(statement))
            .await
            .map_err(fail("writing rows"))?;
    }
    tx.commit().await.map_err(fail("committing"))?;
    Ok(written)
}

/// Appends one value as an SQL literal. Strings go to MySQL as hex with a
/// charset introducer, which means the same whatever its `sql_mode` says
/// about backslashes.
fn literal(array: &dyn Array, row: usize, kind: DbKind, out: &mut String) -> Result<(), String> {
    use std::fmt::Write;
    if array.is_null(row) {
        out.push_str("NULL");
        return Ok(());
    }
    let hex = |bytes: &[u8], out: &mut String| {
        for b in bytes {
            let _ = write!(out, "{b:02x}");
        }
    };
    match array.data_type() {
        DataType::Float32 | DataType::Float64 => {
            let v = if let DataType::Float32 = array.data_type() {
                f64::from(array.as_primitive::<Float32Type>().value(row))
            } else {
                array.as_primitive::<Float64Type>().value(row)
            };
            if !v.is_finite() {
                return Err(format!("{v} cannot be stored in a {kind:?} column"));
            }
            let _ = write!(out, "{v:?}");
        }
        DataType::Utf8 => {
            let s = array.as_string::<i32>().value(row);
            if kind == DbKind::MySql {
                out.push_str("_utf8mb4 X'");
                hex(s.as_bytes(), out);
                out.push('\'');
            } else {
                out.push('\'');
                out.push_str(&s.replace('\'', "''"));
                out.push('\'');
            }
        }
        DataType::Binary => {
            out.push_str("X'");
            hex(array.as_binary::<i32>().value(row), out);
            out.push('\'');
        }
        DataType::Boolean => out.push_str(if array.as_boolean().value(row) {
            "1"
        } else {
            "0"
        }),
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            let d = chrono::DateTime::from_timestamp(i64::from(days) * 86_400, 0)
                .ok_or("date out of range")?;
            let _ = write!(out, "'{}'", d.format("%Y-%m-%d"));
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let micros = array.as_primitive::<TimestampMicrosecondType>().value(row);
            let t =
                chrono::DateTime::from_timestamp_micros(micros).ok_or("timestamp out of range")?;
            let _ = write!(out, "'{}'", t.format("%Y-%m-%d %H:%M:%S%.6f"));
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Decimal128(_, _)
        | DataType::Decimal256(_, _) => {
            let text = arrow::util::display::array_value_to_string(array, row)
                .map_err(|e| e.to_string())?;
            out.push_str(&text);
        }
        other => {
            return Err(format!(
                "{other} has no SQL literal in Sluice; cast it first"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{Field, Schema};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use std::sync::Arc;

    fn rows(from: i64, n: i64) -> SendableRecordBatchStream {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(from..from + n))],
        )
        .unwrap();
        Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter(vec![Ok(batch)]),
        ))
    }

    /// Two tasks loading into one table that does not exist yet, both
    /// with `create = true`, at the same moment: both succeed, every row
    /// lands once. PostgreSQL used to fail one with a duplicate key in
    /// pg_type although it had loaded.
    async fn concurrent_creates(url: &str, table: &str) {
        let config =
            DaemonConfig::parse("", std::path::Path::new("sluice.toml"), &|_| None).unwrap();
        let spec = |input: &str| SqlLoad {
            input: input.into(),
            connection: url.into(),
            table: table.into(),
            mode: LoadMode::Append,
            create: true,
            batch_size: 1000,
        };
        for round in 0..5 {
            let t = format!("{table}_{round}");
            let (a, b) = (spec("a"), spec("b"));
            let (ra, rb) = tokio::join!(
                load(&config, &a, &t, rows(0, 500)),
                load(&config, &b, &t, rows(500, 500))
            );
            assert_eq!(ra.expect("first load"), 500, "round {round}");
            assert_eq!(rb.expect("second load"), 500, "round {round}");
        }
    }

    fn unique(prefix: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
    }

    #[tokio::test]
    async fn concurrent_creates_on_postgres() {
        concurrent_creates(
            "postgres://postgres@127.0.0.1:5432/test",
            &unique("created"),
        )
        .await;
    }

    #[tokio::test]
    async fn concurrent_creates_on_mysql() {
        concurrent_creates("mysql://root@127.0.0.1:3306/test", &unique("created")).await;
    }

    #[tokio::test]
    async fn concurrent_creates_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.db");
        std::fs::File::create(&file).unwrap();
        concurrent_creates(&format!("sqlite://{}", file.display()), "created").await;
    }
}
