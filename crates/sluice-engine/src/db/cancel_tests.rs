//! A task stopped mid-statement (its timeout, a shutdown past the grace)
//! must not leave the statement running on the server: dropping the
//! connection is not enough while the server computes and sends nothing.
//! Each test starts an extract whose query sleeps for a minute, drops the
//! task once the server runs it, cancels what was abandoned, and expects
//! the server's session idle within seconds.

use crate::runner::{Engine, TaskAttempt, Units};
use sluice_core::config::{DaemonConfig, parse_job};
use sqlx::Connection;
use std::path::Path;
use std::time::{Duration, Instant};

/// Runs the extract of `query` (fused with a Parquet load) until `running`
/// says the server has it, then drops it and cancels what it left; returns
/// once `running` says it is gone, failing if it is still there after
/// `limit`.
async fn dropped_statement_stops<F, Fut>(connection: &str, query: &str, running: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let config = DaemonConfig::parse(
        &format!("staging = \"file://{d}/staging\"\ndead_letter = \"file://{d}/dead\"\n"),
        Path::new("sluice.toml"),
        &|_| None,
    )
    .unwrap();
    let job = format!(
        "[tasks.src]\nextract = \"sql\"\nconnection = \"{connection}\"\nquery = \"{query}\"\n\
         [tasks.out]\nload = \"parquet\"\ninput = \"src\"\nurl = \"file://{d}/out/\"\n"
    );
    let job = parse_job(&job, &dir.path().join("sleepy.toml"), &|_| None).unwrap();
    let ctx = job.manual_context(chrono::NaiveDate::from_ymd_opt(2026, 11, 24).unwrap());
    let engine = Engine::new(config).unwrap();
    let units = Units::all(&job);
    let attempt = TaskAttempt {
        generation: 1,
        attempt: 1,
    };
    let mut task =
        Box::pin(engine.run_unit(&job, &ctx, &units, "out", attempt, &crate::fence::Sole));
    let t0 = Instant::now();
    loop {
        tokio::select! {
            r = &mut task => panic!("the sleeping query ended: {:?}", r.map(|_| ())),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        if running().await {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the query never started"
        );
    }
    drop(task);
    // The readers unwind on the runtime's threads.
    let t0 = Instant::now();
    while !super::has_abandoned() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the dropped reader left nothing to cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(super::cancel_abandoned().await >= 1);
    let t0 = Instant::now();
    while running().await {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the statement still runs on the server"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tag() -> String {
    format!("sluice_cancel_{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_postgres_statement_is_cancelled_on_the_server() {
    let url = "postgres://postgres@127.0.0.1:5432/test";
    let tag = tag();
    let query = format!("SELECT pg_sleep(60)::text AS slept, '{tag}' AS tag");
    let running = || {
        let tag = tag.clone();
        async move {
            let mut conn = sqlx::PgConnection::connect(url)
                .await
                .expect("PostgreSQL at 127.0.0.1:5432 (the tests need it)");
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                 AND query LIKE '%pg_sleep(60)%' AND query LIKE '%' || $1 || '%' \
                 AND pid <> pg_backend_pid()",
            )
            .bind(&tag)
            .fetch_one(&mut conn)
            .await
            .unwrap();
            n > 0
        }
    };
    dropped_statement_stops(url, &query, running).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_mariadb_statement_is_cancelled_on_the_server() {
    let url = "mysql://root@127.0.0.1:3306/test";
    let tag = tag();
    let query = format!("SELECT SLEEP(60) AS slept, '{tag}' AS tag");
    let running = || {
        let tag = tag.clone();
        async move {
            let mut conn = sqlx::MySqlConnection::connect(url)
                .await
                .expect("MariaDB at 127.0.0.1:3306 (the tests need it)");
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM information_schema.processlist \
                 WHERE command = 'Query' AND info LIKE CONCAT('%SLEEP(60)%', ?, '%') \
                 AND id <> CONNECTION_ID()",
            )
            .bind(&tag)
            .fetch_one(&mut conn)
            .await
            .unwrap();
            n > 0
        }
    };
    dropped_statement_stops(url, &query, running).await;
}
