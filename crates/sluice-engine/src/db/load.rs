//! `load = "sql"`: a dataset written into a table in one transaction, so a
//! load that fails halfway (a bad value, a lost connection, a timeout)
//! leaves the table as it was. PostgreSQL takes the rows through binary
//! COPY; MySQL, MariaDB and SQLite through multi-row INSERTs of
//! `batch_size` rows, every value a bind parameter. `replace` deletes the
//! old rows in the same transaction (readers see the old rows until it
//! commits); `delete_insert` deletes only the rows its `delete_where`
//! selects; `upsert` updates rows whose key matches and inserts the rest.
//!
//! Each load also writes one row into the target's `sluice_loads` table,
//! in the same transaction and under a unique key (job, task, logical
//! date, generation). A process killed after the commit but before the
//! state store heard of it leaves that row behind, so the retry finds it
//! and records success instead of loading the rows a second time.

use super::postgres::encode::{self as pg_encode, Target};
use super::{DbKind, DbTarget};
use crate::error::{Error, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    SchemaRef, TimeUnit, TimestampMicrosecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use sluice_core::config::{DaemonConfig, LoadMode, SqlLoad};
use sqlx::{AssertSqlSafe, Connection, Executor, Row};
use std::collections::HashMap;

/// The table in each target database that records which task instances
/// have loaded. Dropping it is safe when no load is running: the next
/// load creates it again, and only a retry of a load that committed
/// before the drop would then load twice.
pub const MARKER_TABLE: &str = "sluice_loads";

/// The task instance a load belongs to, as its marker row records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadMarker {
    pub job: String,
    pub task: String,
    /// The run's logical date, RFC 3339 in UTC.
    pub logical_date: String,
    /// Advanced by a deliberate re-run of the task instance (a new run
    /// of the date, a clear), never by a retry: a retry finds the marker
    /// of its generation, a re-run does not.
    pub generation: i64,
    /// The attempt that loaded; kept so that a fence can tell a late
    /// attempt from the current one.
    pub attempt: i64,
}

/// What a load was asked to do, its templates rendered.
#[derive(Debug, Clone, Copy)]
pub struct LoadRequest<'a> {
    pub spec: &'a SqlLoad,
    /// The table, rendered.
    pub table: &'a str,
    /// For `mode = "delete_insert"`: the rendered `delete_where`.
    pub delete_where: Option<&'a str>,
    pub marker: &'a LoadMarker,
}

/// How a load ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// This attempt wrote this many rows.
    Now(u64),
    /// An earlier attempt of the same task instance committed this many
    /// rows; nothing was written again.
    Before(u64),
}

impl Loaded {
    pub fn rows(self) -> u64 {
        match self {
            Loaded::Now(n) | Loaded::Before(n) => n,
        }
    }
}

/// The rows an earlier attempt of `marker`'s task instance loaded, if
/// one committed. Creates the marker table when it is missing. Asked
/// before the input is produced, so a retry after a crash does not read
/// its source again.
pub async fn earlier_load(
    config: &DaemonConfig,
    spec: &SqlLoad,
    marker: &LoadMarker,
) -> Result<Option<u64>> {
    let target = DbTarget::resolve(config, &spec.connection)?;
    let fail = |e: sqlx::Error| target.error("reading the load markers", &e);
    match target.kind()? {
        DbKind::Postgres => {
            let mut conn = target.connect::<sqlx::PgConnection>().await?;
            ensure_marker_table_pg(&mut conn).await.map_err(fail)?;
            earlier::<sqlx::Postgres>(&mut conn, marker)
                .await
                .map_err(fail)
        }
        DbKind::MySql => {
            let mut conn = target.connect::<sqlx::MySqlConnection>().await?;
            ensure_marker_table::<sqlx::MySql>(&mut conn, DbKind::MySql)
                .await
                .map_err(fail)?;
            earlier::<sqlx::MySql>(&mut conn, marker)
                .await
                .map_err(fail)
        }
        DbKind::Sqlite => {
            let mut conn = target.connect::<sqlx::SqliteConnection>().await?;
            ensure_marker_table::<sqlx::Sqlite>(&mut conn, DbKind::Sqlite)
                .await
                .map_err(fail)?;
            earlier::<sqlx::Sqlite>(&mut conn, marker)
                .await
                .map_err(fail)
        }
    }
}

/// Writes `stream` into the requested table, with its marker row.
pub async fn load(
    config: &DaemonConfig,
    req: LoadRequest<'_>,
    stream: SendableRecordBatchStream,
) -> Result<Loaded> {
    let spec = req.spec;
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
    let plan = TablePlan {
        table: quote_path(req.table, kind),
        columns: schema
            .fields()
            .iter()
            .map(|f| quote(f.name(), kind))
            .collect::<Vec<_>>()
            .join(", "),
        schema: schema.clone(),
        kind,
        delete: match (&spec.mode, req.delete_where) {
            (LoadMode::Replace, _) => Some(format!("DELETE FROM {}", quote_path(req.table, kind))),
            (LoadMode::DeleteInsert { .. }, Some(w)) => Some(format!(
                "DELETE FROM {} WHERE {w}",
                quote_path(req.table, kind)
            )),
            (LoadMode::DeleteInsert { .. }, None) => {
                return Err(Error::Internal(
                    "a delete_insert load came without its delete_where".into(),
                ));
            }
            _ => None,
        },
    };
    match kind {
        DbKind::Postgres => postgres(&target, req, &plan, stream).await,
        DbKind::MySql | DbKind::Sqlite => inserts(&target, req, &plan, stream).await,
    }
}

fn marker_ddl(kind: DbKind) -> String {
    // MySQL caps an index key at 3072 bytes: 4 bytes per utf8mb4 char.
    let (text, key_text, date, at) = match kind {
        DbKind::Postgres => ("text", "text", "text", "timestamptz NOT NULL DEFAULT now()"),
        DbKind::MySql => (
            "varchar(1000)",
            "varchar(190)",
            "varchar(40)",
            "datetime(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)",
        ),
        DbKind::Sqlite => (
            "TEXT",
            "TEXT",
            "TEXT",
            "TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP",
        ),
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {MARKER_TABLE} (\
         job {key_text} NOT NULL, task {key_text} NOT NULL, logical_date {date} NOT NULL, \
         generation BIGINT NOT NULL, attempt BIGINT NOT NULL, target {text} NOT NULL, \
         row_count BIGINT NOT NULL, loaded_at {at}, \
         PRIMARY KEY (job, task, logical_date, generation))"
    )
}

/// PostgreSQL: two sessions creating the same table at once collide in
/// the catalog, so the creation takes an advisory lock, in a transaction
/// of its own so that the load's transaction does not hold it.
async fn ensure_marker_table_pg(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(MARKER_TABLE)
        .fetch_one(&mut *conn)
        .await?;
    if exists {
        return Ok(());
    }
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("sluice create {MARKER_TABLE}"))
        .execute(&mut *tx)
        .await?;
    (&mut *tx)
        .execute(AssertSqlSafe(marker_ddl(DbKind::Postgres)))
        .await?;
    tx.commit().await
}

/// MySQL and SQLite; outside any transaction, since MySQL commits the
/// open one at DDL.
async fn ensure_marker_table<DB: sqlx::Database>(
    conn: &mut DB::Connection,
    kind: DbKind,
) -> Result<(), sqlx::Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Decode<'t, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    conn.execute(AssertSqlSafe(marker_ddl(kind))).await?;
    Ok(())
}

async fn earlier<DB: sqlx::Database>(
    conn: &mut DB::Connection,
    m: &LoadMarker,
) -> Result<Option<u64>, sqlx::Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Decode<'t, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut q =
        sqlx::QueryBuilder::<DB>::new(format!("SELECT row_count FROM {MARKER_TABLE} WHERE job = "));
    q.push_bind(m.job.clone())
        .push(" AND task = ")
        .push_bind(m.task.clone())
        .push(" AND logical_date = ")
        .push_bind(m.logical_date.clone())
        .push(" AND generation = ")
        .push_bind(m.generation);
    let row = q.build().fetch_optional(&mut *conn).await?;
    row.map(|r| r.try_get::<i64, _>(0).map(|n| n.max(0) as u64))
        .transpose()
}

/// Writes the marker row inside the load's transaction. `Ok(false)`: an
/// attempt of the same generation committed first, and this
/// transaction must roll back.
async fn record<DB: sqlx::Database>(
    conn: &mut DB::Connection,
    m: &LoadMarker,
    table: &str,
    rows: u64,
) -> Result<bool, sqlx::Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Decode<'t, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut q = sqlx::QueryBuilder::<DB>::new(format!(
        "INSERT INTO {MARKER_TABLE} (job, task, logical_date, generation, attempt, target, row_count) "
    ));
    q.push_values([()], |mut b, ()| {
        b.push_bind(m.job.clone())
            .push_bind(m.task.clone())
            .push_bind(m.logical_date.clone())
            .push_bind(m.generation)
            .push_bind(m.attempt)
            .push_bind(table.to_string())
            .push_bind(i64::try_from(rows).unwrap_or(i64::MAX));
    });
    match q.build().execute(&mut *conn).await {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(e),
    }
}

struct TablePlan {
    /// The quoted table name.
    table: String,
    /// The quoted column list.
    columns: String,
    schema: SchemaRef,
    kind: DbKind,
    /// The DELETE that `replace` and `delete_insert` run first.
    delete: Option<String>,
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
fn create_statement(spec: &SqlLoad, plan: &TablePlan) -> Result<String> {
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
    req: LoadRequest<'_>,
    plan: &TablePlan,
    mut stream: SendableRecordBatchStream,
) -> Result<Loaded> {
    let (spec, table) = (req.spec, req.table);
    let fail = |what: &'static str| move |e: sqlx::Error| target.error(what, &e);
    let mut conn = target.connect::<sqlx::PgConnection>().await?;
    ensure_marker_table_pg(&mut conn)
        .await
        .map_err(fail("creating the load markers table"))?;
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
    if let Some(delete) = &plan.delete {
        (&mut *tx)
            .execute(AssertSqlSafe(delete.clone()))
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
    buf.extend_from_slice(super::postgres::decode::SIGNATURE);
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
    if finish::<sqlx::Postgres>(target, tx, req, written).await? {
        return Ok(Loaded::Now(written));
    }
    let rows = earlier::<sqlx::Postgres>(&mut conn, req.marker)
        .await
        .map_err(fail("reading the load markers"))?;
    Ok(Loaded::Before(rows.unwrap_or(0)))
}

/// Records the marker and commits (true); or, when an attempt of the
/// same generation committed first, rolls back (false).
async fn finish<DB: sqlx::Database>(
    target: &DbTarget,
    mut tx: sqlx::Transaction<'_, DB>,
    req: LoadRequest<'_>,
    written: u64,
) -> Result<bool>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Decode<'t, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let fail = |what: &'static str| move |e: sqlx::Error| target.error(what, &e);
    let first = record::<DB>(&mut tx, req.marker, req.table, written)
        .await
        .map_err(fail("recording the load"))?;
    if first {
        tx.commit().await.map_err(fail("committing"))?;
    } else {
        tracing::warn!(job = %req.marker.job, task = %req.marker.task, "another attempt of this task instance committed its load first; this one rolled back");
        tx.rollback().await.map_err(fail("rolling back"))?;
    }
    Ok(first)
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
    req: LoadRequest<'_>,
    plan: &TablePlan,
    stream: SendableRecordBatchStream,
) -> Result<Loaded> {
    match plan.kind {
        DbKind::MySql => {
            let mut conn = target.connect::<sqlx::MySqlConnection>().await?;
            conn.execute("SET time_zone = '+00:00'")
                .await
                .map_err(|e| target.error("setting the session time zone", &e))?;
            insert_rows::<sqlx::MySql>(&mut conn, target, req, plan, stream, MYSQL_MAX_PARAMS).await
        }
        _ => {
            let mut conn = target.connect::<sqlx::SqliteConnection>().await?;
            insert_rows::<sqlx::Sqlite>(&mut conn, target, req, plan, stream, SQLITE_MAX_PARAMS)
                .await
        }
    }
}

/// Bind parameters one statement may carry: MySQL's protocol counts them
/// in 16 bits; SQLite's default `SQLITE_MAX_VARIABLE_NUMBER` since 3.32.
const MYSQL_MAX_PARAMS: usize = 65_535;
const SQLITE_MAX_PARAMS: usize = 32_766;

async fn insert_rows<DB>(
    conn: &mut DB::Connection,
    target: &DbTarget,
    req: LoadRequest<'_>,
    plan: &TablePlan,
    mut stream: SendableRecordBatchStream,
    max_params: usize,
) -> Result<Loaded>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Decode<'t, DB> + sqlx::Type<DB>,
    for<'t> f64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> bool: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Vec<u8>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<String>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let spec = req.spec;
    let fail = |what: &'static str| move |e: sqlx::Error| target.error(what, &e);
    // MySQL commits the open transaction at any DDL, so the tables are
    // made before the transaction starts (SQLite could do either).
    ensure_marker_table::<DB>(conn, plan.kind)
        .await
        .map_err(fail("creating the load markers table"))?;
    if spec.create {
        (&mut *conn)
            .execute(AssertSqlSafe(create_statement(spec, plan)?))
            .await
            .map_err(fail("creating the table"))?;
    }
    let mut tx = conn.begin().await.map_err(fail("starting a transaction"))?;
    if let Some(delete) = &plan.delete {
        (&mut *tx)
            .execute(AssertSqlSafe(delete.clone()))
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
    let ncols = plan.schema.fields().len().max(1);
    let per_statement = spec.batch_size.min(max_params / ncols).max(1);
    let head = format!("INSERT INTO {} ({}) VALUES ", plan.table, plan.columns);
    let mut statement = sqlx::QueryBuilder::<DB>::new(head.clone());
    let mut in_statement = 0;
    let mut written: u64 = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(batch_error)?;
        let cols = canonical_columns(&batch, target)?;
        for row in 0..batch.num_rows() {
            if in_statement > 0 {
                statement.push(", ");
            }
            statement.push("(");
            for (i, col) in cols.iter().enumerate() {
                if i > 0 {
                    statement.push(", ");
                }
                bind_value(&mut statement, col.as_ref(), row, plan.kind).map_err(|m| {
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
            statement.push(")");
            in_statement += 1;
            if in_statement == per_statement {
                statement.push(&tail);
                statement
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(fail("writing rows"))?;
                statement = sqlx::QueryBuilder::<DB>::new(head.clone());
                in_statement = 0;
            }
        }
        written += batch.num_rows() as u64;
    }
    if in_statement > 0 {
        statement.push(&tail);
        statement
            .build()
            .execute(&mut *tx)
            .await
            .map_err(fail("writing rows"))?;
    }
    if finish::<DB>(target, tx, req, written).await? {
        return Ok(Loaded::Now(written));
    }
    let rows = earlier::<DB>(conn, req.marker)
        .await
        .map_err(fail("reading the load markers"))?;
    Ok(Loaded::Before(rows.unwrap_or(0)))
}

/// Adds one value as a bind parameter. Dates and timestamps go as text
/// in the form both servers parse (SQLite keeps it as it is); decimals
/// and unsigned values past `i64` as their exact decimal text.
fn bind_value<DB>(
    q: &mut sqlx::QueryBuilder<DB>,
    array: &dyn Array,
    row: usize,
    kind: DbKind,
) -> Result<(), String>
where
    DB: sqlx::Database,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> f64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> bool: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Vec<u8>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> Option<String>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    if array.is_null(row) {
        q.push_bind(None::<String>);
        return Ok(());
    }
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
            q.push_bind(v);
        }
        DataType::Utf8 => {
            q.push_bind(array.as_string::<i32>().value(row).to_string());
        }
        DataType::Binary => {
            q.push_bind(array.as_binary::<i32>().value(row).to_vec());
        }
        DataType::Boolean => {
            q.push_bind(array.as_boolean().value(row));
        }
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            let d = chrono::DateTime::from_timestamp(i64::from(days) * 86_400, 0)
                .ok_or("date out of range")?;
            q.push_bind(d.format("%Y-%m-%d").to_string());
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let micros = array.as_primitive::<TimestampMicrosecondType>().value(row);
            let t =
                chrono::DateTime::from_timestamp_micros(micros).ok_or("timestamp out of range")?;
            q.push_bind(t.format("%Y-%m-%d %H:%M:%S%.6f").to_string());
        }
        DataType::Int8 => {
            q.push_bind(i64::from(array.as_primitive::<Int8Type>().value(row)));
        }
        DataType::Int16 => {
            q.push_bind(i64::from(array.as_primitive::<Int16Type>().value(row)));
        }
        DataType::Int32 => {
            q.push_bind(i64::from(array.as_primitive::<Int32Type>().value(row)));
        }
        DataType::Int64 => {
            q.push_bind(array.as_primitive::<Int64Type>().value(row));
        }
        DataType::UInt8 => {
            q.push_bind(i64::from(array.as_primitive::<UInt8Type>().value(row)));
        }
        DataType::UInt16 => {
            q.push_bind(i64::from(array.as_primitive::<UInt16Type>().value(row)));
        }
        DataType::UInt32 => {
            q.push_bind(i64::from(array.as_primitive::<UInt32Type>().value(row)));
        }
        DataType::UInt64 => {
            let v = array.as_primitive::<UInt64Type>().value(row);
            match i64::try_from(v) {
                Ok(v) => q.push_bind(v),
                Err(_) => q.push_bind(v.to_string()),
            };
        }
        DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => {
            let text = arrow::util::display::array_value_to_string(array, row)
                .map_err(|e| e.to_string())?;
            q.push_bind(text);
        }
        other => {
            return Err(format!(
                "{other} cannot be written to a {kind:?} table by Sluice; cast it first"
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
            let (ma, mb) = (marker(&t, "a", 1), marker(&t, "b", 1));
            let (ra, rb) = tokio::join!(
                load(&config, request(&a, &t, &ma), rows(0, 500)),
                load(&config, request(&b, &t, &mb), rows(500, 500))
            );
            assert_eq!(ra.expect("first load"), Loaded::Now(500), "round {round}");
            assert_eq!(rb.expect("second load"), Loaded::Now(500), "round {round}");
        }
    }

    /// A load whose marker is already there loads nothing: neither a
    /// retry after the commit nor an attempt racing the first one. A new
    /// generation loads again.
    async fn loads_once_per_generation(url: &str, table: &str) {
        let config =
            DaemonConfig::parse("", std::path::Path::new("sluice.toml"), &|_| None).unwrap();
        let spec = SqlLoad {
            input: "a".into(),
            connection: url.into(),
            table: table.into(),
            mode: LoadMode::Append,
            create: true,
            batch_size: 7,
        };
        let count = || async {
            let target = DbTarget::resolve(&config, url).unwrap();
            let sql = format!(
                "SELECT count(*) FROM {}",
                quote_path(table, target.kind().unwrap())
            );
            match target.kind().unwrap() {
                DbKind::Postgres => {
                    let mut c = target.connect::<sqlx::PgConnection>().await.unwrap();
                    sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
                        .fetch_one(&mut c)
                        .await
                        .unwrap()
                }
                DbKind::MySql => {
                    let mut c = target.connect::<sqlx::MySqlConnection>().await.unwrap();
                    sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
                        .fetch_one(&mut c)
                        .await
                        .unwrap()
                }
                DbKind::Sqlite => {
                    let mut c = target.connect::<sqlx::SqliteConnection>().await.unwrap();
                    sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql))
                        .fetch_one(&mut c)
                        .await
                        .unwrap()
                }
            }
        };
        let first = marker(table, "load", 1);
        assert_eq!(earlier_load(&config, &spec, &first).await.unwrap(), None);
        let (ra, rb) = tokio::join!(
            load(&config, request(&spec, table, &first), rows(0, 100)),
            load(&config, request(&spec, table, &first), rows(0, 100))
        );
        let mut outcomes = [ra.unwrap(), rb.unwrap()];
        outcomes.sort_by_key(|o| matches!(o, Loaded::Before(_)));
        assert_eq!(outcomes, [Loaded::Now(100), Loaded::Before(100)]);
        assert_eq!(count().await, 100);
        assert_eq!(
            earlier_load(&config, &spec, &first).await.unwrap(),
            Some(100)
        );
        let retry = LoadMarker {
            attempt: 2,
            ..first.clone()
        };
        assert_eq!(
            load(&config, request(&spec, table, &retry), rows(0, 100))
                .await
                .unwrap(),
            Loaded::Before(100)
        );
        assert_eq!(count().await, 100);
        let rerun = marker(table, "load", 2);
        assert_eq!(
            load(&config, request(&spec, table, &rerun), rows(0, 100))
                .await
                .unwrap(),
            Loaded::Now(100)
        );
        assert_eq!(count().await, 200);
    }

    #[tokio::test]
    async fn loads_once_per_generation_on_postgres() {
        loads_once_per_generation("postgres://postgres@127.0.0.1:5432/test", &unique("once")).await;
    }

    #[tokio::test]
    async fn loads_once_per_generation_on_mysql() {
        loads_once_per_generation("mysql://root@127.0.0.1:3306/test", &unique("once")).await;
    }

    #[tokio::test]
    async fn loads_once_per_generation_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.db");
        std::fs::File::create(&file).unwrap();
        loads_once_per_generation(&format!("sqlite://{}", file.display()), "once").await;
    }

    fn marker(job: &str, task: &str, generation: i64) -> LoadMarker {
        LoadMarker {
            job: job.into(),
            task: task.into(),
            logical_date: "2026-12-02T00:00:00Z".into(),
            generation,
            attempt: 1,
        }
    }

    fn request<'a>(spec: &'a SqlLoad, table: &'a str, marker: &'a LoadMarker) -> LoadRequest<'a> {
        LoadRequest {
            spec,
            table,
            delete_where: None,
            marker,
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
