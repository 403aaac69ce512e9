//! `sensor = "sql"`: one poke runs the query and reads its first value.
//! True (or a non-zero integer, which is how MySQL and SQLite write
//! booleans) means the condition holds; false, NULL or no row means not
//! yet. Any other value is an error: a sensor that can never be true
//! should fail at once, not wait for its timeout.

use super::{DbKind, DbTarget};
use crate::error::Result;
use sluice_core::config::DaemonConfig;
use sqlx::{AssertSqlSafe, Connection, Row, ValueRef};

/// What a poke's first value said.
enum Answer {
    Bool(Option<bool>),
    Int(Option<i64>),
    Other(String),
}

pub async fn poke(config: &DaemonConfig, connection: &str, query: &str) -> Result<bool> {
    let target = DbTarget::resolve(config, connection)?;
    let query = super::trimmed(query).to_string();
    let fail = |e: sqlx::Error| target.error("running the sensor query", &e);
    let answer = match target.kind()? {
        DbKind::Postgres => {
            let mut conn = target.connect::<sqlx::PgConnection>().await?;
            let row = sqlx::query(AssertSqlSafe(query))
                .fetch_optional(&mut conn)
                .await
                .map_err(fail)?;
            let _ = conn.close().await;
            match row {
                None => Answer::Bool(None),
                Some(r) => match (
                    r.try_get::<Option<bool>, _>(0),
                    r.try_get::<Option<i64>, _>(0),
                    r.try_get::<Option<i32>, _>(0),
                ) {
                    (Ok(b), _, _) => Answer::Bool(b),
                    (_, Ok(i), _) => Answer::Int(i),
                    (_, _, Ok(i)) => Answer::Int(i.map(i64::from)),
                    _ => Answer::Other(type_name(&r)),
                },
            }
        }
        DbKind::MySql => {
            let mut conn = target.connect::<sqlx::MySqlConnection>().await?;
            let row = sqlx::raw_sql(AssertSqlSafe(query))
                .fetch_optional(&mut conn)
                .await
                .map_err(fail)?;
            let _ = conn.close().await;
            match row {
                None => Answer::Bool(None),
                Some(r) => {
                    let v: Option<&[u8]> = r.try_get_unchecked(0).map_err(fail)?;
                    match v.map(|b| String::from_utf8_lossy(b).parse::<i64>()) {
                        None => Answer::Int(None),
                        Some(Ok(i)) => Answer::Int(Some(i)),
                        Some(Err(_)) => Answer::Other(type_name(&r)),
                    }
                }
            }
        }
        DbKind::Sqlite => {
            let mut conn = target.connect::<sqlx::SqliteConnection>().await?;
            let row = sqlx::query(AssertSqlSafe(query))
                .fetch_optional(&mut conn)
                .await
                .map_err(fail)?;
            let _ = conn.close().await;
            match row {
                None => Answer::Bool(None),
                Some(r) => match r.try_get::<Option<i64>, _>(0) {
                    Ok(i) => Answer::Int(i),
                    Err(_) => Answer::Other(type_name(&r)),
                },
            }
        }
    };
    match answer {
        Answer::Bool(b) => Ok(b.unwrap_or(false)),
        Answer::Int(i) => Ok(i.is_some_and(|i| i != 0)),
        Answer::Other(ty) => Err(target.error_msg(
            "running the sensor query",
            &format!("its first value is {ty}; a sql sensor needs a boolean, e.g. SELECT count(*) > 0 FROM …"),
        )),
    }
}

fn type_name<R: Row>(row: &R) -> String
where
    usize: sqlx::ColumnIndex<R>,
{
    use sqlx::TypeInfo;
    row.try_get_raw(0)
        .map(|v| v.type_info().name().to_string())
        .unwrap_or_else(|_| "not readable".into())
}
