//! The marker row each SQL load writes into the target's `sluice_loads`
//! table, in its own transaction, under a unique key: how a retry knows
//! the rows are in, and (with the attempt number) the fence that keeps a
//! late attempt from loading after a later one took over ([`take`]).

use super::DbKind;
use sqlx::{AssertSqlSafe, Connection, Executor, Row};

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

pub(crate) fn marker_ddl(kind: DbKind) -> String {
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
pub(crate) async fn ensure_marker_table_pg(
    conn: &mut sqlx::PgConnection,
) -> Result<(), sqlx::Error> {
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
pub(crate) async fn ensure_marker_table<DB: sqlx::Database>(
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

/// The rows a committed load of `m`'s task instance wrote, if one did.
/// A pending row (`row_count` < 0, see [`take`]) is no load.
pub(crate) async fn earlier<DB: sqlx::Database>(
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
    Ok(current::<DB>(conn, m)
        .await?
        .and_then(|(_, rows)| u64::try_from(rows).ok()))
}

/// The marker row of `m`'s task instance: (attempt, row_count).
async fn current<DB: sqlx::Database>(
    conn: &mut DB::Connection,
    m: &LoadMarker,
) -> Result<Option<(i64, i64)>, sqlx::Error>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Decode<'t, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let mut q = sqlx::QueryBuilder::<DB>::new(format!(
        "SELECT attempt, row_count FROM {MARKER_TABLE} WHERE "
    ));
    key(&mut q, m);
    let row = q.build().fetch_optional(&mut *conn).await?;
    row.map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?)))
        .transpose()
}

fn key<DB: sqlx::Database>(q: &mut sqlx::QueryBuilder<DB>, m: &LoadMarker)
where
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    q.push("job = ")
        .push_bind(m.job.clone())
        .push(" AND task = ")
        .push_bind(m.task.clone())
        .push(" AND logical_date = ")
        .push_bind(m.logical_date.clone())
        .push(" AND generation = ")
        .push_bind(m.generation);
}

/// What [`take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// The marker now names this attempt: its commit will be the one.
    Mine,
    /// An attempt committed this many rows already.
    Loaded(u64),
    /// A later attempt took the marker: this one is late (its replica
    /// stalled past the heartbeat timeout and the task ran elsewhere).
    Later(i64),
}

/// Stakes this attempt's claim on the marker, before the load starts:
/// a pending row (`row_count = -1`) naming the attempt, written in a
/// statement of its own. Taken only by a later attempt than the one it
/// names, so a stalled attempt that wakes up cannot take it back; and
/// [`record`] commits only the attempt the row names. That is the fence
/// in the target itself: two attempts of one task instance, whatever
/// their replicas and however their commits interleave, load once.
pub(crate) async fn take<DB: sqlx::Database>(
    conn: &mut DB::Connection,
    m: &LoadMarker,
    kind: DbKind,
) -> Result<Taken, sqlx::Error>
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
            .push_bind(String::new())
            .push_bind(-1i64);
    });
    q.push(match kind {
        // Assignments run left to right on the row as updated so far.
        DbKind::MySql => {
            " ON DUPLICATE KEY UPDATE attempt = IF(row_count < 0 AND attempt < VALUES(attempt), \
             VALUES(attempt), attempt)"
                .to_string()
        }
        _ => format!(
            " ON CONFLICT (job, task, logical_date, generation) DO UPDATE SET attempt = excluded.attempt \
             WHERE {MARKER_TABLE}.row_count < 0 AND {MARKER_TABLE}.attempt < excluded.attempt"
        ),
    });
    q.build().execute(&mut *conn).await?;
    Ok(match current::<DB>(conn, m).await? {
        Some((_, rows)) if rows >= 0 => Taken::Loaded(rows as u64),
        Some((attempt, _)) if attempt > m.attempt => Taken::Later(attempt),
        // Ours (or, had the row gone since, nobody's: `record` inserts).
        _ => Taken::Mine,
    })
}

/// How many rows a statement changed: each driver's result has it, but
/// sqlx's `Database` trait does not say so.
pub(crate) trait Affected {
    fn affected(&self) -> u64;
}

impl Affected for sqlx::postgres::PgQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl Affected for sqlx::mysql::MySqlQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl Affected for sqlx::sqlite::SqliteQueryResult {
    fn affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// Writes the load's row count into the marker inside the load's
/// transaction, if the marker still names this attempt (or there is no
/// marker yet). `Ok(false)`: another attempt committed first or took the
/// marker, and this transaction must roll back.
pub(crate) async fn record<DB: sqlx::Database>(
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
    DB::QueryResult: Affected,
{
    let rows = i64::try_from(rows).unwrap_or(i64::MAX);
    // The UPDATE locks the row: a concurrent `take` or `record` waits for
    // this transaction and then finds the row committed.
    let mut q = sqlx::QueryBuilder::<DB>::new(format!("UPDATE {MARKER_TABLE} SET row_count = "));
    q.push_bind(rows)
        .push(", target = ")
        .push_bind(table.to_string())
        .push(" WHERE ");
    key(&mut q, m);
    q.push(" AND attempt = ")
        .push_bind(m.attempt)
        .push(" AND row_count < 0");
    if q.build().execute(&mut *conn).await?.affected() == 1 {
        return Ok(true);
    }
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
            .push_bind(rows);
    });
    match q.build().execute(&mut *conn).await {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
        Err(e) => Err(e),
    }
}
