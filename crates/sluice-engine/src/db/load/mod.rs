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
//!
//! Here: what a load is asked, the table it writes, its marker and
//! commit; each connector's module holds its own load (PostgreSQL's
//! binary COPY in `postgres/load.rs`; MySQL's and SQLite's in theirs,
//! on the bind-parameter INSERTs of [`insert`]).

pub(crate) mod insert;
mod marker;

pub(crate) use marker::Affected;
pub use marker::LoadMarker;
pub(crate) use marker::{Taken, take};
pub(crate) use marker::{earlier, ensure_marker_table, ensure_marker_table_pg, record};

use super::{DbKind, DbTarget, mysql, postgres, sqlite};
use crate::error::{Error, Result};
use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use sluice_core::config::{DaemonConfig, LoadMode, SqlLoad};
use sqlx::Executor;

/// What a load was asked to do, its templates rendered.
#[derive(Clone, Copy)]
pub struct LoadRequest<'a> {
    pub spec: &'a SqlLoad,
    /// The table, rendered.
    pub table: &'a str,
    /// For `mode = "delete_insert"`: the rendered `delete_where`.
    pub delete_where: Option<&'a str>,
    pub marker: &'a LoadMarker,
    /// Asked just before the commit; see [`crate::fence`].
    pub fence: &'a dyn crate::fence::Fence,
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
/// one committed; otherwise stakes this attempt's claim on the marker
/// (see [`marker::take`]), so that only this attempt's load can commit.
/// Creates the marker table when it is missing. Asked before the input
/// is produced, so a retry after a crash does not read its source again.
/// [`Error::Fenced`] when a later attempt of the task instance took the
/// marker: this one is late and must not load.
pub async fn take_load(
    config: &DaemonConfig,
    spec: &SqlLoad,
    marker: &LoadMarker,
) -> Result<Option<u64>> {
    let target = DbTarget::resolve(config, &spec.connection)?;
    let fail = |e: sqlx::Error| target.error("taking the load marker", &e);
    let kind = target.kind()?;
    let taken = match kind {
        DbKind::Postgres => {
            let mut conn = target.connect::<sqlx::PgConnection>().await?;
            ensure_marker_table_pg(&mut conn).await.map_err(fail)?;
            take::<sqlx::Postgres>(&mut conn, marker, kind).await
        }
        DbKind::MySql => {
            let mut conn = target.connect::<sqlx::MySqlConnection>().await?;
            ensure_marker_table::<sqlx::MySql>(&mut conn, kind)
                .await
                .map_err(fail)?;
            take::<sqlx::MySql>(&mut conn, marker, kind).await
        }
        DbKind::Sqlite => {
            let mut conn = target.connect::<sqlx::SqliteConnection>().await?;
            ensure_marker_table::<sqlx::Sqlite>(&mut conn, kind)
                .await
                .map_err(fail)?;
            take::<sqlx::Sqlite>(&mut conn, marker, kind).await
        }
    }
    .map_err(fail)?;
    Ok(staked(taken, marker)?.map(Loaded::rows))
}

/// What a load does after [`take`]: go on (`None`), stop because an
/// attempt loaded already, or fail because a later one took over. Each
/// load takes the marker again right before its transaction (a no-op
/// after [`take_load`]), so the row it will update exists.
pub(crate) fn staked(taken: Taken, marker: &LoadMarker) -> Result<Option<Loaded>> {
    match taken {
        Taken::Mine => Ok(None),
        Taken::Loaded(rows) => Ok(Some(Loaded::Before(rows))),
        Taken::Later(later) => Err(late(marker, Some(later))),
    }
}

/// The error of an attempt that a later one overtook.
pub(crate) fn late(marker: &LoadMarker, later: Option<i64>) -> Error {
    Error::Fenced(match later {
        Some(n) => format!(
            "attempt {n} of this task instance took over its load from attempt {}",
            marker.attempt
        ),
        None => format!(
            "another attempt of this task instance took over its load from attempt {}",
            marker.attempt
        ),
    })
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
        DbKind::Postgres => postgres::load(&target, req, &plan, stream).await,
        DbKind::MySql => mysql::load(&target, req, &plan, stream).await,
        DbKind::Sqlite => sqlite::load(&target, req, &plan, stream).await,
    }
}

pub(crate) struct TablePlan {
    /// The quoted table name.
    pub(crate) table: String,
    /// The quoted column list.
    pub(crate) columns: String,
    pub(crate) schema: SchemaRef,
    pub(crate) kind: DbKind,
    /// The DELETE that `replace` and `delete_insert` run first.
    pub(crate) delete: Option<String>,
}

pub(crate) fn quote(name: &str, kind: DbKind) -> String {
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
pub(crate) fn create_statement(spec: &SqlLoad, plan: &TablePlan) -> Result<String> {
    let key: &[String] = match &spec.mode {
        LoadMode::Upsert { key } => key,
        _ => &[],
    };
    let mut cols = Vec::new();
    for f in plan.schema.fields() {
        let in_key = key.contains(f.name());
        let ty = match plan.kind {
            DbKind::Postgres => postgres::encode::column_type(f.data_type()),
            DbKind::MySql => mysql::column_type(f.data_type(), in_key),
            DbKind::Sqlite => sqlite::column_type(f.data_type()),
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

/// The first batch error as ours, keeping its meaning.
pub(crate) fn batch_error(e: datafusion::error::DataFusionError) -> Error {
    Error::from(e)
}

/// Records the marker and commits (true); or, when another attempt of
/// the same generation committed first or took the marker, rolls back
/// (false). Fails, rolling back, when the fence says the claim is lost.
pub(crate) async fn finish<DB: sqlx::Database>(
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
    DB::QueryResult: Affected,
{
    let fail = |what: &'static str| move |e: sqlx::Error| target.error(what, &e);
    // A replica that stalled past its claim rolls back (dropping the
    // transaction) rather than commit what the new attempt will load.
    req.fence.check().await?;
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

pub(crate) fn canonical_columns(batch: &RecordBatch, target: &DbTarget) -> Result<Vec<ArrayRef>> {
    batch
        .columns()
        .iter()
        .map(|c| {
            postgres::encode::canonical(c).map_err(|m| target.error_msg("converting a column", &m))
        })
        .collect()
}

#[cfg(test)]
mod tests;
