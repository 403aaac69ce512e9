//! Statements abandoned on the server. A reader's future can be dropped
//! anywhere: a task's timeout, a stop past `shutdown_grace`, a consumer
//! that stops early. Dropping it closes the connection, but a server busy
//! computing (a sort, `pg_sleep`, a long scan before its first row) does
//! not notice a closed socket until it next writes, and may run for hours
//! after the process that asked has gone. So each reader connection says
//! which server session it is while its statement runs; when the reader is
//! dropped before its statement ended, the session is queued here, and
//! [`cancel_abandoned`] cancels it from a new connection.
//!
//! The queue is the process's, as server sessions are: an abandoned
//! statement has no task left to report to.

use super::DbTarget;
use crate::error::Result;
use sqlx::{MySqlConnection, PgConnection};
use std::sync::Mutex;

/// A server session, named so that it cannot be mistaken for a later one.
#[derive(Debug, Clone)]
enum Session {
    /// PostgreSQL reuses process ids: the backend's start time tells
    /// this session from a later one with the same pid.
    Postgres {
        target: DbTarget,
        pid: i32,
        started: String,
    },
    /// MariaDB/MySQL connection ids only grow.
    MySql { target: DbTarget, id: u64 },
}

static ABANDONED: Mutex<Vec<Session>> = Mutex::new(Vec::new());

fn abandoned() -> std::sync::MutexGuard<'static, Vec<Session>> {
    // A panic while holding the lock leaves a Vec that is still valid.
    ABANDONED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Held by a reader while its statements run. Dropped without
/// [`Running::finish`], it queues its session to be cancelled.
#[derive(Debug)]
pub(crate) struct Running {
    session: Option<Session>,
}

impl Running {
    /// The session behind `conn`.
    pub(crate) async fn postgres(target: &DbTarget, conn: &mut PgConnection) -> Result<Running> {
        let (pid, started): (i32, String) = sqlx::query_as(
            "SELECT pid, backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| target.error("naming the session", &e))?;
        Ok(Running {
            session: Some(Session::Postgres {
                target: target.clone(),
                pid,
                started,
            }),
        })
    }

    /// The session behind `conn`.
    pub(crate) async fn mysql(target: &DbTarget, conn: &mut MySqlConnection) -> Result<Running> {
        let id: u64 = sqlx::query_scalar("SELECT CONNECTION_ID()")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| target.error("naming the session", &e))?;
        Ok(Running {
            session: Some(Session::MySql {
                target: target.clone(),
                id,
            }),
        })
    }

    /// Every statement ended on the server: nothing to cancel.
    pub(crate) fn finish(mut self) {
        self.session = None;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            abandoned().push(session);
        }
    }
}

/// Whether some statement waits to be cancelled.
pub fn has_abandoned() -> bool {
    !abandoned().is_empty()
}

/// Cancels every abandoned statement still running on its server, each
/// from a new connection; returns how many sessions were asked. A failure
/// is logged, not returned: the statement may have ended on its own.
pub async fn cancel_abandoned() -> usize {
    let sessions: Vec<Session> = std::mem::take(&mut *abandoned());
    let mut asked = 0;
    for session in sessions {
        let outcome = match &session {
            Session::Postgres {
                target,
                pid,
                started,
            } => cancel_postgres(target, *pid, started).await,
            Session::MySql { target, id } => cancel_mysql(target, *id).await,
        };
        match outcome {
            Ok(()) => asked += 1,
            Err(e) => tracing::warn!(error = %e, "could not cancel an abandoned statement"),
        }
    }
    asked
}

async fn cancel_postgres(target: &DbTarget, pid: i32, started: &str) -> Result<()> {
    let mut conn = target.connect::<PgConnection>().await?;
    sqlx::query(
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
         WHERE pid = $1 AND backend_start::text = $2",
    )
    .bind(pid)
    .bind(started)
    .fetch_all(&mut conn)
    .await
    .map_err(|e| target.error("cancelling an abandoned statement", &e))?;
    tracing::info!(connection = %target.name, pid, "cancelled an abandoned statement");
    Ok(())
}

async fn cancel_mysql(target: &DbTarget, id: u64) -> Result<()> {
    let mut conn = target.connect::<MySqlConnection>().await?;
    // KILL takes no bind parameter; `id` is a number the server gave.
    let kill = format!("KILL QUERY {id}");
    match sqlx::raw_sql(sqlx::AssertSqlSafe(kill))
        .execute(&mut conn)
        .await
    {
        Ok(_) => {
            tracing::info!(connection = %target.name, id, "cancelled an abandoned statement");
            Ok(())
        }
        // ER_NO_SUCH_THREAD (1094): the session has ended; nothing runs.
        Err(sqlx::Error::Database(e))
            if e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .is_some_and(|e| e.number() == 1094) =>
        {
            Ok(())
        }
        Err(e) => Err(target.error("cancelling an abandoned statement", &e)),
    }
}
