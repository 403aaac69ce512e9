//! MySQL's and SQLite's loads: multi-row INSERTs of `batch_size` rows,
//! every value a bind parameter, batched under the server's limit on
//! parameters per statement.

use super::{DbKind, DbTarget, create_statement, earlier, ensure_marker_table, take};
use super::{LoadRequest, Loaded, TablePlan, batch_error, canonical_columns, finish, quote};
use crate::error::Result;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimeUnit, TimestampMicrosecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use sluice_core::config::LoadMode;
use sqlx::{AssertSqlSafe, Connection, Executor};

pub(crate) async fn insert_rows<DB>(
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
    DB::QueryResult: super::Affected,
{
    let spec = req.spec;
    let fail = |what: &'static str| move |e: sqlx::Error| target.error(what, &e);
    // MySQL commits the open transaction at any DDL, so the tables are
    // made before the transaction starts (SQLite could do either).
    ensure_marker_table::<DB>(conn, plan.kind)
        .await
        .map_err(fail("creating the load markers table"))?;
    // The marker row exists before the transaction (see `staked`), so the
    // commit's UPDATE locks that row alone: on MySQL an UPDATE that finds
    // no row locks the gap, and two loads inserting there deadlock.
    if let Some(done) = super::staked(
        take::<DB>(conn, req.marker, plan.kind)
            .await
            .map_err(fail("taking the load marker"))?,
        req.marker,
    )? {
        return Ok(done);
    }
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
    match rows {
        Some(n) => Ok(Loaded::Before(n)),
        None => Err(super::late(req.marker, None)),
    }
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
