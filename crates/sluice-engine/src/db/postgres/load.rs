//! PostgreSQL's load: rows in binary COPY, each column in its target
//! type's wire form, inside the load's transaction.

use super::encode::{self as pg_encode, Target};
use crate::db::DbKind;
use crate::db::DbTarget;
use crate::db::load::{
    LoadRequest, Loaded, TablePlan, batch_error, canonical_columns, create_statement, earlier,
    ensure_marker_table_pg, finish, quote,
};
use crate::error::Result;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use sluice_core::config::LoadMode;
use sqlx::{AssertSqlSafe, Connection, Executor, Row};
use std::collections::HashMap;

pub(crate) async fn load(
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
    let taken = crate::db::load::take::<sqlx::Postgres>(&mut conn, req.marker, DbKind::Postgres)
        .await
        .map_err(fail("taking the load marker"))?;
    if let Some(done) = crate::db::load::staked(taken, req.marker)? {
        return Ok(done);
    }
    if spec.create {
        create_table(&mut conn, target, spec, plan).await?;
    }
    let mut tx = conn.begin().await.map_err(fail("starting a transaction"))?;
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
    buf.extend_from_slice(super::decode::SIGNATURE);
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
    match rows {
        Some(n) => Ok(Loaded::Before(n)),
        None => Err(crate::db::load::late(req.marker, None)),
    }
}

/// `create = true`: makes the table, when it is missing, in a short
/// transaction of its own before the load's. Two loads creating one new
/// table at once collide in the catalog (a duplicate pg_type row), IF NOT
/// EXISTS notwithstanding, so the creation takes an advisory lock; held
/// by the load's own transaction, that lock would stall every other load
/// into the table for as long as this one streams its input (a replica
/// frozen mid-load would stall them all).
async fn create_table(
    conn: &mut sqlx::PgConnection,
    target: &DbTarget,
    spec: &sluice_core::config::SqlLoad,
    plan: &TablePlan,
) -> Result<()> {
    let fail = |what: &'static str| move |e: sqlx::Error| target.error(what, &e);
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(plan.table.clone())
        .fetch_one(&mut *conn)
        .await
        .map_err(fail("looking for the table"))?;
    if exists {
        return Ok(());
    }
    let mut tx = conn.begin().await.map_err(fail("starting a transaction"))?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("sluice create {}", plan.table))
        .execute(&mut *tx)
        .await
        .map_err(fail("locking the table's creation"))?;
    (&mut *tx)
        .execute(AssertSqlSafe(create_statement(spec, plan)?))
        .await
        .map_err(fail("creating the table"))?;
    tx.commit().await.map_err(fail("creating the table"))
}
