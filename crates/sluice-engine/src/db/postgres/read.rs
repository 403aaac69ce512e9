//! Extraction from PostgreSQL: the query's columns are described from the
//! catalog (with their typmods, which decimals need), then the rows come
//! out through `COPY (query) TO STDOUT (FORMAT binary)` and are decoded
//! into Arrow batches of `batch_size` rows as they arrive.
//!
//! With `partitions = N` the query is split into N ranges of the
//! `partition_on` column, each read on its own connection. All of them
//! read one exported snapshot, so the parts add up to exactly what one
//! query would have returned even while the table is being written.

use super::blocks::{self, BlockSplit};
use super::decode::{self, ColumnBuilder, PgType, Tuple};
use crate::db::cancel::Running;
use crate::db::{DbTarget, KeyKind, split_ranges};
use crate::error::{Error, Result};
use crate::producers::{BatchSender, Producers};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use sluice_core::config::SqlExtract;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{AssertSqlSafe, Column as _, Connection, Executor, Row, SqlSafeStr, Statement as _};
use tokio::sync::mpsc;

/// One output column: its name and how it is read.
#[derive(Debug, Clone)]
struct Described {
    name: String,
    ty: PgType,
}

pub async fn extract(
    target: &DbTarget,
    query: &str,
    spec: &SqlExtract,
) -> Result<SendableRecordBatchStream> {
    let query = crate::db::trimmed(query);
    let mut conn = connect(target).await?;
    // A drop from here on (describing, measuring partitions, reading)
    // cancels what this connection runs on the server.
    let running = Running::postgres(target, &mut conn).await?;
    let columns = describe(target, &mut conn, query).await?;
    let schema = crate::db::schema_of(columns.iter().map(|c| (c.name.as_str(), c.ty.arrow_type())));
    let mut producers = Producers::new(schema.clone(), 2);
    if spec.partitions <= 1 {
        let reader = CopyReader {
            target: target.clone(),
            schema,
            columns,
            batch_size: spec.batch_size,
            max_batch_bytes: crate::db::MAX_BATCH_BYTES,
        };
        let statement = copy_statement(query);
        let tx = producers.sender();
        producers.spawn("the PostgreSQL reader", async move {
            if reader.copy(&mut conn, &statement, &tx).await? {
                running.finish();
            }
            Ok(())
        });
    } else {
        let parts = part_queries(target, &mut conn, query, &columns, spec).await?;
        let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| target.error("exporting a snapshot", &e))?;
        // Each part says when it has imported the snapshot; the exporting
        // transaction must stay open until then.
        let (imported_tx, mut imported) = mpsc::channel::<()>(parts.len());
        let batch_size = crate::db::reader_batch_size(spec.batch_size, parts.len());
        for (i, queries) in parts.into_iter().enumerate() {
            let reader = CopyReader {
                target: target.clone(),
                schema: schema.clone(),
                columns: columns.clone(),
                batch_size,
                max_batch_bytes: crate::db::MAX_BATCH_BYTES,
            };
            let statements: Vec<String> = queries.iter().map(|q| copy_statement(q)).collect();
            let snapshot = snapshot.clone();
            let tx = producers.sender();
            let imported = imported_tx.clone();
            producers.spawn(format!("PostgreSQL reader {}", i + 1), async move {
                let mut conn = connect(&reader.target).await?;
                begin_snapshot(&reader.target, &mut conn, &snapshot).await?;
                drop(imported);
                let running = Running::postgres(&reader.target, &mut conn).await?;
                for statement in &statements {
                    if !reader.copy(&mut conn, statement, &tx).await? {
                        // Dropped, `running` has the server cancel it.
                        return Ok(());
                    }
                }
                running.finish();
                Ok(())
            });
        }
        drop(imported_tx);
        // The snapshot's connection runs nothing more than it has.
        running.finish();
        producers.spawn("the PostgreSQL snapshot holder", async move {
            // Ends when every part has imported the snapshot or given up.
            while imported.recv().await.is_some() {}
            let _ = conn.close().await;
            Ok(())
        });
    }
    Ok(producers.into_stream())
}

/// The queries each connection of a partitioned read runs, by block range
/// or else by key range. Leaves `conn` in the repeatable-read transaction
/// whose snapshot the parts then share.
async fn part_queries(
    target: &DbTarget,
    conn: &mut PgConnection,
    query: &str,
    columns: &[Described],
    spec: &SqlExtract,
) -> Result<Vec<Vec<String>>> {
    let on = spec.partition_on.as_deref().unwrap_or_default();
    let kind = key_kind(columns, on)?;
    // Before the transaction: a rewritten query the server rejects must
    // not abort it. The table's size is not transactional anyway.
    let blocks = block_ranges(target, conn, query, spec.partitions).await?;
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| target.error("starting a transaction", &e))?;
    if let Some(parts) = blocks {
        return Ok(parts);
    }
    let ranges = partition_ranges(target, conn, query, kind, on, spec.partitions).await?;
    Ok(crate::db::range_queries(query, ranges))
}

fn copy_statement(query: &str) -> String {
    format!("COPY ({query}) TO STDOUT (FORMAT binary)")
}

async fn connect(target: &DbTarget) -> Result<PgConnection> {
    target.connect::<PgConnection>().await
}

async fn begin_snapshot(target: &DbTarget, conn: &mut PgConnection, snapshot: &str) -> Result<()> {
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| target.error("starting a transaction", &e))?;
    let set = format!(
        "SET TRANSACTION SNAPSHOT '{}'",
        snapshot.replace('\'', "''")
    );
    conn.execute(AssertSqlSafe(set))
        .await
        .map_err(|e| target.error("importing the snapshot", &e))?;
    Ok(())
}

/// Finds the query's columns and types. A temporary view (created in a
/// transaction that is rolled back) gives every column's typmod, which
/// the protocol's row description carries but sqlx does not expose; on a
/// read-only server the prepared statement's columns are used instead,
/// with typmods for columns that come straight from a table.
async fn describe(
    target: &DbTarget,
    conn: &mut PgConnection,
    query: &str,
) -> Result<Vec<Described>> {
    let raw = match view_columns(conn, query).await {
        Ok(cols) => cols,
        Err(e) if sqlstate(&e).as_deref() == Some("25006") => {
            let _ = conn.execute("ROLLBACK").await;
            statement_columns(conn, query)
                .await
                .map_err(|e| target.error("describing the query", &e))?
        }
        Err(e) => {
            let _ = conn.execute("ROLLBACK").await;
            return Err(target.error("describing the query", &e));
        }
    };
    let mut out = Vec::with_capacity(raw.len());
    for (name, oid, typmod) in raw {
        let ty = resolve(target, conn, &name, oid, typmod, 0).await?;
        out.push(Described { name, ty });
    }
    Ok(out)
}

fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

async fn view_columns(
    conn: &mut PgConnection,
    query: &str,
) -> std::result::Result<Vec<(String, u32, i32)>, sqlx::Error> {
    conn.execute("BEGIN").await?;
    conn.execute(AssertSqlSafe(format!(
        "CREATE TEMPORARY VIEW sluice_describe AS {query}"
    )))
    .await?;
    let rows: Vec<PgRow> = sqlx::query(
        "SELECT attname::text, atttypid::int8, atttypmod FROM pg_attribute \
         WHERE attrelid = 'pg_temp.sluice_describe'::regclass AND attnum > 0 \
         AND NOT attisdropped ORDER BY attnum",
    )
    .fetch_all(&mut *conn)
    .await?;
    conn.execute("ROLLBACK").await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get::<i64, _>(1)? as u32, r.try_get(2)?)))
        .collect()
}

async fn statement_columns(
    conn: &mut PgConnection,
    query: &str,
) -> std::result::Result<Vec<(String, u32, i32)>, sqlx::Error> {
    let statement = conn
        .prepare(AssertSqlSafe(query.to_string()).into_sql_str())
        .await?;
    let mut out = Vec::new();
    for col in statement.columns() {
        let oid = col.type_info().oid().map(|o| o.0).unwrap_or(0);
        let typmod = match (col.relation_id(), col.relation_attribute_no()) {
            (Some(rel), Some(attno)) => sqlx::query_scalar::<_, i32>(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = $1::int8::oid AND attnum = $2",
            )
            .bind(i64::from(rel.0))
            .bind(attno)
            .fetch_optional(&mut *conn)
            .await?
            .unwrap_or(-1),
            _ => -1,
        };
        out.push((col.name().to_string(), oid, typmod));
    }
    Ok(out)
}

/// Maps a type OID to how Sluice reads it. Built-in types are known by
/// OID; others (enums, domains, arrays of those, extension types) are
/// looked up in `pg_type`.
async fn resolve(
    target: &DbTarget,
    conn: &mut PgConnection,
    column: &str,
    oid: u32,
    typmod: i32,
    depth: u8,
) -> Result<PgType> {
    let builtin = |oid: u32| -> Option<std::result::Result<PgType, String>> {
        Some(Ok(match oid {
            16 => PgType::Bool,
            17 => PgType::Bytea,
            18 | 19 | 25 | 142 | 1042 | 1043 => PgType::Text,
            20 => PgType::Int8,
            21 => PgType::Int2,
            23 => PgType::Int4,
            26 => PgType::Oid,
            114 => PgType::Json,
            700 => PgType::Float4,
            701 => PgType::Float8,
            1082 => PgType::Date,
            1083 => PgType::Time,
            1114 => PgType::Timestamp,
            1184 => PgType::Timestamptz,
            1186 => PgType::Interval,
            1700 => return Some(decode::numeric_type(typmod)),
            2950 => PgType::Uuid,
            3802 => PgType::Jsonb,
            _ => return None,
        }))
    };
    if let Some(found) = builtin(oid) {
        return found.map_err(|m| target.column_error(column, &m));
    }
    let row: Option<PgRow> = sqlx::query(
        "SELECT typname::text, typtype::text, typcategory::text, typelem::int8, \
         typbasetype::int8, typtypmod, format_type(oid, $2) \
         FROM pg_type WHERE oid = $1::int8::oid",
    )
    .bind(i64::from(oid))
    .bind(typmod)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| target.error("looking up a column type", &e))?;
    let Some(row) = row else {
        return Err(target.column_error(column, &format!("unknown type OID {oid}")));
    };
    let get = |i: usize| -> Result<String> {
        row.try_get::<String, _>(i)
            .map_err(|e| target.error("looking up a column type", &e))
    };
    let (name, kind, category, shown) = (get(0)?, get(1)?, get(2)?, get(6)?);
    let elem: i64 = row.try_get(3).unwrap_or(0);
    let base: i64 = row.try_get(4).unwrap_or(0);
    let base_typmod: i32 = row.try_get(5).unwrap_or(-1);
    if depth > 4 {
        return Err(target.column_error(column, &format!("type {shown} nests too deeply")));
    }
    match (kind.as_str(), category.as_str()) {
        ("e", _) => Ok(PgType::Text),
        ("d", _) => {
            Box::pin(resolve(target, conn, column, base as u32, base_typmod, depth + 1)).await
        }
        (_, "A") if elem != 0 => {
            let item = Box::pin(resolve(target, conn, column, elem as u32, typmod, depth + 1)).await?;
            if matches!(item, PgType::Array(_)) {
                return Err(target.column_error(column, "arrays of arrays are not supported"));
            }
            Ok(PgType::Array(Box::new(item)))
        }
        _ if name == "citext" => Ok(PgType::Text),
        _ => Err(target.column_error(
            column,
            &format!(
                "type {shown} has no Arrow mapping in Sluice; cast it in the query, e.g. {column}::text"
            ),
        )),
    }
}

/// How the values of partition column `on` are measured; an error if the
/// query has no such column or its type cannot be split.
fn key_kind(columns: &[Described], on: &str) -> Result<KeyKind> {
    let col = crate::db::partition_column(columns.iter().map(|c| c.name.as_str()), on)
        .map(|i| &columns[i])?;
    match col.ty {
        PgType::Int2 | PgType::Int4 | PgType::Int8 => Ok(KeyKind::Int),
        PgType::Date => Ok(KeyKind::Date),
        PgType::Timestamp => Ok(KeyKind::Timestamp { utc: false }),
        PgType::Timestamptz => Ok(KeyKind::Timestamp { utc: true }),
        _ => Err(crate::db::unsplittable(on, &col.ty.arrow_type())),
    }
}

/// The queries that read a row-for-row query of one table (see
/// [`BlockSplit`]) in `n` block ranges, one list per part; `None` when the
/// query is not such a read, the relation is not a plain table or
/// materialized view, or the server is older than PostgreSQL 14, which
/// has no TID range scan. The rewritten query is prepared first and must
/// give the same columns as the user's, so SQL the parser reads or prints
/// differently from PostgreSQL falls back to the key instead of failing.
async fn block_ranges(
    target: &DbTarget,
    conn: &mut PgConnection,
    query: &str,
    n: usize,
) -> Result<Option<Vec<Vec<String>>>> {
    let Some(split) = BlockSplit::of(query) else {
        return Ok(None);
    };
    if conn.server_version_num().is_none_or(|v| v < 140_000) {
        return Ok(None);
    }
    let wanted = statement_columns(conn, query)
        .await
        .map_err(|e| target.error("describing the query", &e))?;
    match statement_columns(conn, &split.with_range(Some(0), None)).await {
        Ok(got) if got == wanted => {}
        Ok(_) => {
            tracing::debug!("the query split by blocks has other columns; splitting by key");
            return Ok(None);
        }
        Err(e) => {
            tracing::debug!(error = %e, "the query split by blocks failed to prepare; splitting by key");
            return Ok(None);
        }
    }
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT c.relkind::text, pg_relation_size(c.oid) / current_setting('block_size')::int8 \
         FROM pg_class c WHERE c.oid = to_regclass($1)",
    )
    .bind(&split.table)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| target.error("measuring the table", &e))?;
    match row {
        Some((kind, blocks)) if matches!(kind.as_str(), "r" | "m") => {
            let parts: Vec<Vec<String>> = blocks::ranges(blocks.max(0) as u64, n)
                .into_iter()
                .map(|(from, to)| vec![split.with_range(from, to)])
                .collect();
            tracing::debug!(table = %split.table, blocks, parts = parts.len(), "reading in block ranges");
            Ok(Some(parts))
        }
        _ => Ok(None),
    }
}

/// The WHERE conditions that split the query into `n` ranges of column
/// `on`. Runs in the snapshot the ranges are then read in.
async fn partition_ranges(
    target: &DbTarget,
    conn: &mut PgConnection,
    query: &str,
    kind: KeyKind,
    on: &str,
    n: usize,
) -> Result<Vec<Vec<String>>> {
    let quoted = format!("\"{}\"", on.replace('"', "\"\""));
    // The extremes of the column itself, measured afterwards: an index on
    // the key answers `min(key)` at once, but not `min(key::int8)`.
    let measure = |extreme: &str| match kind {
        KeyKind::Int => format!("{extreme}({quoted})::int8"),
        KeyKind::Date => format!("({extreme}({quoted}) - date '1970-01-01')::int8"),
        KeyKind::Timestamp { .. } => {
            format!("(extract(epoch from {extreme}({quoted})) * 1000000)::int8")
        }
    };
    let bounds: (Option<i64>, Option<i64>) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {}, {} FROM ({query}) AS sluice_q",
        measure("min"),
        measure("max")
    )))
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| target.error("finding the partition bounds", &e))?;
    let literal = |v: i64| match kind {
        KeyKind::Int => v.to_string(),
        KeyKind::Date => format!("date '{}'", crate::db::date_literal(v)),
        KeyKind::Timestamp { utc: false } => {
            format!("timestamp '{}'", crate::db::timestamp_literal(v))
        }
        KeyKind::Timestamp { utc: true } => {
            format!("timestamptz '{}+00'", crate::db::timestamp_literal(v))
        }
    };
    Ok(split_ranges(bounds.0.zip(bounds.1), n, &quoted, literal))
}

/// Reads one COPY stream into batches.
struct CopyReader {
    target: DbTarget,
    schema: SchemaRef,
    columns: Vec<Described>,
    batch_size: usize,
    /// A batch ends early once its rows take this many bytes on the
    /// wire, so no text column outgrows one Arrow array (2 GiB).
    max_batch_bytes: usize,
}

impl CopyReader {
    /// Returns whether the statement was read to its end (false: the
    /// consumer went away first).
    async fn copy(
        &self,
        conn: &mut PgConnection,
        statement: &str,
        tx: &BatchSender,
    ) -> Result<bool> {
        let mut stream = conn
            .copy_out_raw(statement)
            .await
            .map_err(|e| self.target.error("running the query", &e))?;
        let mut cols: Vec<ColumnBuilder> = self
            .columns
            .iter()
            .map(|c| ColumnBuilder::new(&c.ty, self.batch_size))
            .collect();
        let mut state = Progress {
            header_read: false,
            ended: false,
            in_batch: 0,
            batch_bytes: 0,
            rows: 0,
        };
        #[cfg(test)]
        let mut sent = 0usize;
        let mut pending: Vec<u8> = Vec::new();
        let mut ready: Vec<RecordBatch> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.target.error("reading rows", &e))?;
            if pending.is_empty() {
                let used = self.read(&chunk, &mut cols, &mut state, &mut ready)?;
                pending.extend_from_slice(&chunk[used..]);
            } else {
                pending.extend_from_slice(&chunk);
                let used = self.read(&pending, &mut cols, &mut state, &mut ready)?;
                pending.drain(..used);
            }
            for batch in ready.drain(..) {
                #[cfg(test)]
                {
                    crate::producers::injected_panic(&self.schema, sent);
                    sent += 1;
                }
                if tx.send(Ok(batch)).await.is_err() {
                    // The consumer is gone (cancelled): stop reading.
                    return Ok(false);
                }
            }
        }
        if !state.ended || !pending.is_empty() {
            // The connection went away mid-stream: worth another try.
            return Err(Error::Database {
                connection: self.target.name.clone(),
                message: "reading rows: the COPY stream ended early".into(),
                retryable: true,
            });
        }
        if state.in_batch > 0 {
            let batch = self.batch(&mut cols)?;
            let _ = tx.send(Ok(batch)).await;
        }
        Ok(true)
    }

    /// Decodes the whole tuples at the start of `buf`; returns the bytes used.
    fn read(
        &self,
        buf: &[u8],
        cols: &mut [ColumnBuilder],
        state: &mut Progress,
        ready: &mut Vec<RecordBatch>,
    ) -> Result<usize> {
        let mut at = 0;
        if !state.header_read {
            match decode::header_len(buf).map_err(|m| self.target.error_msg("reading rows", &m))? {
                None => return Ok(0),
                Some(n) => {
                    at = n;
                    state.header_read = true;
                }
            }
        }
        while !state.ended {
            match decode::read_tuple(&buf[at..], cols) {
                Ok(Tuple::Row(n)) => {
                    at += n;
                    state.rows += 1;
                    state.in_batch += 1;
                    state.batch_bytes += n;
                    if state.in_batch == self.batch_size
                        || state.batch_bytes >= self.max_batch_bytes
                    {
                        ready.push(self.batch(cols)?);
                        state.in_batch = 0;
                        state.batch_bytes = 0;
                    }
                }
                Ok(Tuple::End) => {
                    at += 2;
                    state.ended = true;
                }
                Ok(Tuple::Partial) => break,
                Err((col, message)) => {
                    let what = match col {
                        Some(i) => format!(
                            "row {}, column {}: {message}",
                            state.rows + 1,
                            self.columns[i].name
                        ),
                        None => format!("row {}: {message}", state.rows + 1),
                    };
                    return Err(self.target.error_msg("reading rows", &what));
                }
            }
        }
        Ok(at)
    }

    fn batch(&self, cols: &mut [ColumnBuilder]) -> Result<RecordBatch> {
        let arrays = cols
            .iter_mut()
            .map(|c| c.finish())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|m| self.target.error_msg("building a batch", &m))?;
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }
}

struct Progress {
    header_read: bool,
    ended: bool,
    in_batch: usize,
    /// Bytes of the rows in the batch being built.
    batch_bytes: usize,
    rows: u64,
}
