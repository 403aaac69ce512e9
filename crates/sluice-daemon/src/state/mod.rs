//! The state store: jobs, DAG runs, task instances, task logs and
//! watermarks, in SQLite (the embedded default, one file in WAL mode) or
//! PostgreSQL (shared by several replicas). One set of statements serves
//! both through sqlx's `Any` driver; where the two differ (row locking),
//! [`Backend`] says which is in use.

mod migrations;
mod runs;
mod states;
mod streams;

pub use runs::{Claim, NewRun, Op, Pick, RunRow, TaskInstanceRow, TiUpdate};
pub use states::{RunState, TaskState, UnknownState};
pub use streams::StreamRow;

use crate::clock::micros;
use crate::error::{Error, Result};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor, Row};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct StateStore {
    pool: AnyPool,
    backend: Backend,
    /// The URL without credentials, for messages.
    name: String,
    /// The database file of a SQLite store.
    sqlite_file: Option<std::path::PathBuf>,
}

/// Holds a SQLite state store for one process (see
/// [`StateStore::sole_replica`]) until dropped or the process ends,
/// however it ends: the operating system releases the lock.
#[derive(Debug)]
pub struct SoleReplica {
    _lock: std::fs::File,
}

impl StateStore {
    /// Connects to `url` (`sqlite://path`, `sqlite::memory:` or
    /// `postgres://…`) and applies the migrations it lacks. A SQLite file
    /// is created when missing.
    pub async fn connect(url: &str) -> Result<StateStore> {
        install_default_drivers();
        let name = redacted(url);
        let mut sqlite_file = None;
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.trim_start_matches("//");
            if let Some(parent) = std::path::Path::new(path).parent()
                && !parent.as_os_str().is_empty()
                && !path.starts_with(':')
            {
                std::fs::create_dir_all(parent).map_err(|e| {
                    Error::StateUrl(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
            let file = path.split('?').next().unwrap_or(path);
            if !file.starts_with(':') && !path.contains("mode=memory") {
                sqlite_file = Some(std::path::PathBuf::from(file));
            }
            let sep = if path.contains('?') { '&' } else { '?' };
            let mode = if path.contains("mode=") {
                ""
            } else {
                "mode=rwc"
            };
            (Backend::Sqlite, format!("sqlite://{path}{sep}{mode}"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(Error::StateUrl(format!(
                "unsupported state URL \"{name}\"; expected sqlite://PATH or postgres://…"
            )));
        };
        let options = match backend {
            // One connection: SQLite has one writer at a time, and a
            // single connection never meets its lock-upgrade deadlock.
            Backend::Sqlite => AnyPoolOptions::new()
                .max_connections(1)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        Ok(())
                    })
                }),
            Backend::Postgres => AnyPoolOptions::new().max_connections(8),
        };
        let pool = options
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await
            .map_err(|source| Error::State {
                store: name.clone(),
                source,
            })?;
        let store = StateStore {
            pool,
            backend,
            name,
            sqlite_file,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Makes this process the only one that schedules and runs tasks on a
    /// SQLite state store, or says which process already does. SQLite
    /// takes one writer at a time and its file lives on one machine, so
    /// a second `sluice serve` (or `backfill`) on it would only contend
    /// for the lock; several replicas need PostgreSQL. The lock is an
    /// advisory lock on `<database>.lock`; `None` on PostgreSQL.
    pub fn sole_replica(&self) -> Result<Option<SoleReplica>> {
        use std::io::Write;
        let Some(db) = &self.sqlite_file else {
            return Ok(None);
        };
        let mut path = db.clone().into_os_string();
        path.push(".lock");
        let path = std::path::PathBuf::from(path);
        let cannot = |e: std::io::Error| Error::StateUrl(format!("{}: {e}", path.display()));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(cannot)?;
        match file.try_lock() {
            Ok(()) => {
                // Who holds it, for the message a second process gets.
                file.set_len(0).map_err(cannot)?;
                write!(file, "{}", std::process::id()).map_err(cannot)?;
                Ok(Some(SoleReplica { _lock: file }))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                Err(Error::Invalid(format!(
                    "the SQLite state store {} is in use by another sluice serve or backfill{}; \
                     SQLite serves one replica: to run several, point `state` at PostgreSQL",
                    db.display(),
                    if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {holder})")
                    }
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(cannot(e)),
        }
    }

    /// The store's URL without credentials.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_postgres(&self) -> bool {
        self.backend == Backend::Postgres
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Wraps a sqlx error with the store's (password-free) name.
    pub(crate) fn err(&self, source: sqlx::Error) -> Error {
        Error::State {
            store: self.name.clone(),
            source,
        }
    }

    /// Applies the migrations not yet recorded, in one transaction. On
    /// PostgreSQL an advisory lock keeps replicas starting together from
    /// applying the same migration twice.
    async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(|e| self.err(e))?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT 1 FROM pg_advisory_xact_lock(7301962)")
                .execute(&mut *tx)
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.execute(
            "CREATE TABLE IF NOT EXISTS sluice_migrations (
                version BIGINT PRIMARY KEY,
                name TEXT NOT NULL,
                applied_at BIGINT NOT NULL
            )",
        )
        .await
        .map_err(|e| self.err(e))?;
        let applied: Vec<i64> = sqlx::query("SELECT version FROM sluice_migrations")
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.err(e))?
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        let known = migrations::MIGRATIONS.last().map_or(0, |m| m.version);
        if let Some(newer) = applied.iter().find(|v| **v > known) {
            return Err(Error::StateUrl(format!(
                "the state store {} has schema version {newer}, newer than this sluice knows ({known}); upgrade sluice",
                self.name
            )));
        }
        for m in migrations::MIGRATIONS {
            if applied.contains(&m.version) {
                continue;
            }
            let postgres = if self.is_postgres() { m.postgres } else { &[] };
            for statement in m.statements.iter().chain(postgres) {
                tx.execute(*statement).await.map_err(|e| self.err(e))?;
            }
            sqlx::query(
                "INSERT INTO sluice_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(micros(chrono::Utc::now()))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
            tracing::info!(version = m.version, name = m.name, "state store migrated");
        }
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// The schema versions applied, oldest first.
    pub async fn schema_versions(&self) -> Result<Vec<i64>> {
        let rows = sqlx::query("SELECT version FROM sluice_migrations ORDER BY version")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.err(e))?;
        rows.iter()
            .map(|r| r.try_get::<i64, _>(0).map_err(|e| self.err(e)))
            .collect()
    }
}

/// `url` without its user and password.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}{}", &url[..scheme_end + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// Incremental extracts read their marks from the state store.
impl sluice_engine::MarkSource for StateStore {
    fn mark(
        &self,
        job: &str,
        task: &str,
    ) -> futures::future::BoxFuture<'_, std::result::Result<Option<String>, String>> {
        let (job, task) = (job.to_string(), task.to_string());
        Box::pin(async move { self.watermark(&job, &task).await.map_err(|e| e.to_string()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_not_shown() {
        assert_eq!(
            redacted("postgres://etl:s3cret@db:5432/app"),
            "postgres://db:5432/app"
        );
        assert_eq!(redacted("sqlite://state.db"), "sqlite://state.db");
    }

    /// Batched writes: claims with their "started" lines, ends of attempts
    /// through one UPDATE (the last end of a task wins), a state set
    /// outright, and log lines through one INSERT that skips duplicates.
    #[tokio::test]
    async fn batched_ops_and_claims_land_as_written_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::connect(&format!("sqlite://{}/s.db", dir.path().display()))
            .await
            .unwrap();
        batched_ops_and_claims_land_as_written(&store).await;
    }

    /// Needs the PostgreSQL at 127.0.0.1:5432 (`scripts/test-env.sh`
    /// starts it); fails when it is not there.
    #[tokio::test]
    async fn batched_ops_and_claims_land_as_written_on_postgres() {
        let name = format!("sluice_state_unit_{}", std::process::id());
        let admin = "postgres://postgres@127.0.0.1:5432/test";
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin)
            .await
            .expect("PostgreSQL at 127.0.0.1:5432");
        for statement in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        let store = StateStore::connect(&format!("postgres://postgres@127.0.0.1:5432/{name}"))
            .await
            .unwrap();
        assert_eq!(
            store.schema_versions().await.unwrap(),
            vec![1, 2, 3, 4, 5, 6, 7]
        );
        batched_ops_and_claims_land_as_written(&store).await;
        the_store_picks_disjoint_units(&store).await;
        streams_are_committed_by_their_owner_alone(&store).await;
        store.pool().close().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
    }

    /// A stream's lease goes to one replica at a time, and only the holder
    /// commits: a replica whose lease ran out and was taken commits
    /// nothing.
    async fn streams_are_committed_by_their_owner_alone(store: &StateStore) {
        assert!(store.lease_stream("tail", "a", 100, 200).await.unwrap());
        assert!(!store.lease_stream("tail", "b", 150, 250).await.unwrap());
        assert!(store.lease_stream("tail", "a", 150, 250).await.unwrap());
        assert!(
            store
                .commit_stream("tail", "a", "{\"n\":1}", 160)
                .await
                .unwrap()
        );
        assert!(
            !store
                .commit_stream("tail", "b", "{\"n\":2}", 160)
                .await
                .unwrap()
        );
        // a is frozen past its lease; b takes the stream.
        assert!(store.lease_stream("tail", "b", 300, 400).await.unwrap());
        assert!(
            !store
                .commit_stream("tail", "a", "{\"n\":3}", 260)
                .await
                .unwrap()
        );
        assert_eq!(
            store.stream_checkpoint("tail").await.unwrap().as_deref(),
            Some("{\"n\":1}")
        );
        store.release_stream("tail", "b").await.unwrap();
        assert!(store.lease_stream("tail", "c", 301, 500).await.unwrap());
        let rows = store.streams().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].owner.as_deref(), Some("c"));
        assert_eq!(rows[0].committed_at, Some(160));
    }

    /// Run "r" of `dag`, with these tasks.
    fn manual_run(dag: &str, tasks: &[String]) -> NewRun {
        NewRun {
            dag: dag.into(),
            run_id: "r".into(),
            logical_date: 0,
            interval_start: 0,
            interval_end: 1,
            run_type: "manual".into(),
            params: None,
            tasks: tasks.to_vec(),
            created_at: 0,
        }
    }

    /// Two replicas offered the same 20 ready units with room for 4 each
    /// get 4 each, none twice, every member of a unit with its head; a
    /// re-run goes first.
    async fn the_store_picks_disjoint_units(store: &StateStore) {
        let heads: Vec<String> = (0..20).map(|i| format!("l{i:02}")).collect();
        let mut tasks: Vec<String> = heads.iter().map(|h| format!("e{}", &h[1..])).collect();
        tasks.extend(heads.iter().cloned());
        assert!(store.create_run(&manual_run("pick", &tasks)).await.unwrap());
        let units: Vec<(String, Vec<String>)> = heads
            .iter()
            .map(|h| (h.clone(), vec![format!("e{}", &h[1..]), h.clone()]))
            .collect();
        // l07 ran before and was put back: it goes first.
        sqlx::query("UPDATE task_instances SET try_number = 1 WHERE dag = 'pick' AND task = 'l07'")
            .execute(store.pool())
            .await
            .unwrap();
        let claim = |worker: &'static str| Claim {
            dag: "pick",
            run_id: "r",
            tasks: &tasks,
            announce: &tasks,
            worker,
            now: 5,
            seq: 1,
            pick: Some(Pick {
                limit: 4,
                units: &units,
            }),
        };
        let (a, b) = (claim("wa"), claim("wb"));
        let (ga, gb) = tokio::join!(
            store.apply_and_claim(&[], &a),
            store.apply_and_claim(&[], &b)
        );
        let (ga, gb) = (ga.unwrap(), gb.unwrap());
        for got in [&ga, &gb] {
            assert_eq!(got.len(), 8, "{got:?}");
            for t in got {
                let twin = if let Some(n) = t.strip_prefix('l') {
                    format!("e{n}")
                } else {
                    format!("l{}", &t[1..])
                };
                assert!(got.contains(&twin), "{t} without {twin}: {got:?}");
            }
        }
        assert!(ga.iter().all(|t| !gb.contains(t)), "{ga:?} {gb:?}");
        assert!(ga.contains(&"l07".to_string()) || gb.contains(&"l07".to_string()));
    }

    /// Values that would break a statement built by splicing text: task
    /// errors quote bad records, which may hold anything.
    const HOSTILE: &str = "it's $1 ?2 \\' \"); DROP TABLE task_instances; -- \u{0} é 🦀";

    async fn batched_ops_and_claims_land_as_written(store: &StateStore) {
        let tasks: Vec<String> = ["a", "b", "c"].iter().map(|t| t.to_string()).collect();
        let run = manual_run("d", &tasks);
        assert!(store.create_run(&run).await.unwrap());
        let claim = Claim {
            dag: "d",
            run_id: "r",
            tasks: &tasks[..2],
            announce: &tasks[..1],
            worker: "w1",
            now: 10,
            seq: 1,
            pick: None,
        };
        let mut got = store.apply_and_claim(&[], &claim).await.unwrap();
        got.sort();
        assert_eq!(got, vec!["a", "b"]);
        // Claimed already: a second claim gets nothing.
        assert!(store.apply_and_claim(&[], &claim).await.unwrap().is_empty());
        let finish = |task: &str, state: &str, error: Option<&str>, rows: Option<i64>| Op::Finish {
            dag: "d".into(),
            run_id: "r".into(),
            task: task.into(),
            update: TiUpdate {
                failures: 1,
                ended_at: Some(20),
                rows_out: rows,
                error: error.map(str::to_string),
                watermark: Some("int:7".into()),
                ..TiUpdate::to(state.parse().unwrap())
            },
            worker: "w1".into(),
            attempt: 1,
        };
        let log = |seq: i64, message: &str| Op::Log {
            dag: "d".into(),
            run_id: "r".into(),
            task: "a".into(),
            attempt: 1,
            seq,
            at: 20,
            level: "info".into(),
            message: message.into(),
        };
        store
            .apply(&[
                finish("a", "up_for_retry", Some("it's broken"), None),
                log(2, "failed"),
                finish("a", "success", None, Some(5)),
                log(2, "a duplicate, skipped"),
                finish("b", "failed", Some(HOSTILE), None),
                Op::SetState {
                    dag: "d".into(),
                    run_id: "r".into(),
                    task: "c".into(),
                    state: TaskState::UpstreamFailed,
                },
                log(3, "done"),
                log(4, HOSTILE),
            ])
            .await
            .unwrap();
        let tis = store.task_instances("d", "r").await.unwrap();
        let ti = |t: &str| tis.iter().find(|x| x.task == t).unwrap();
        assert_eq!(ti("a").state.as_str(), "success");
        assert_eq!(ti("a").rows_out, Some(5));
        assert_eq!(ti("a").error, None);
        assert_eq!(ti("a").try_number, 1);
        assert_eq!(ti("a").ended_at, Some(20));
        assert_eq!(ti("b").state.as_str(), "failed");
        // NUL, which PostgreSQL text cannot hold, is dropped on both.
        assert_eq!(ti("b").error, Some(HOSTILE.replace('\0', "")));
        assert_eq!(ti("c").state.as_str(), "upstream_failed");
        assert_eq!(store.watermark("d", "a").await.unwrap(), None);
        let lines: Vec<String> = store
            .logs("d", "r", "a", 1)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, _, m)| m)
            .collect();
        assert_eq!(
            lines,
            vec![
                "attempt 1 started".to_string(),
                "failed".to_string(),
                "done".to_string(),
                HOSTILE.replace('\0', "")
            ]
        );
        // b was claimed but not announced: no line of its own.
        assert!(store.logs("d", "r", "b", 1).await.unwrap().is_empty());

        // Fencing: w1's claim lapses (its heartbeat stopped) and w2 claims
        // the task again; w1's late end changes nothing, w2's lands.
        let x = vec!["x".to_string()];
        let run = NewRun {
            run_id: "r2".into(),
            logical_date: 1,
            tasks: x.clone(),
            ..run
        };
        assert!(store.create_run(&run).await.unwrap());
        let claim_by = |worker: &'static str, now: i64| Claim {
            dag: "d",
            run_id: "r2",
            tasks: &x,
            announce: &[],
            worker,
            now,
            seq: now,
            pick: None,
        };
        assert_eq!(
            store
                .apply_and_claim(&[], &claim_by("w1", 30))
                .await
                .unwrap(),
            x
        );
        assert_eq!(store.requeue_abandoned(31).await.unwrap(), 1);
        assert_eq!(
            store
                .apply_and_claim(&[], &claim_by("w2", 40))
                .await
                .unwrap(),
            x
        );
        let end = |worker: &str, attempt: i64, rows: i64| Op::Finish {
            dag: "d".into(),
            run_id: "r2".into(),
            task: "x".into(),
            update: TiUpdate {
                ended_at: Some(50),
                rows_out: Some(rows),
                ..TiUpdate::to(TaskState::Success)
            },
            worker: worker.into(),
            attempt,
        };
        store.apply(&[end("w1", 1, 111)]).await.unwrap();
        let x_now = |tis: Vec<TaskInstanceRow>| tis.into_iter().find(|t| t.task == "x").unwrap();
        let ti = x_now(store.task_instances("d", "r2").await.unwrap());
        assert_eq!(
            (ti.state, ti.try_number, ti.rows_out),
            (TaskState::Running, 2, None)
        );
        // Nor may that replica, believing x ended, close the run.
        assert!(
            store
                .move_run("d", "r2", RunState::Queued, RunState::Running, 51)
                .await
                .unwrap()
        );
        for to in [RunState::Success, RunState::Failed] {
            assert!(
                !store
                    .move_run("d", "r2", RunState::Running, to, 52)
                    .await
                    .unwrap()
            );
        }
        // Nor may an end claim an attempt number that is not the current one.
        store.apply(&[end("w2", 1, 222)]).await.unwrap();
        let ti = x_now(store.task_instances("d", "r2").await.unwrap());
        assert_eq!(ti.state, TaskState::Running);
        store.apply(&[end("w2", 2, 333)]).await.unwrap();
        let ti = x_now(store.task_instances("d", "r2").await.unwrap());
        assert_eq!((ti.state, ti.rows_out), (TaskState::Success, Some(333)));
        assert_eq!(ti.ended_by.as_deref(), Some("w2"));
        // An end after the task ended (cleared, or marked failed) is
        // dropped too.
        store.apply(&[end("w2", 2, 444)]).await.unwrap();
        let ti = x_now(store.task_instances("d", "r2").await.unwrap());
        assert_eq!(ti.rows_out, Some(333));
        assert!(
            store
                .move_run("d", "r2", RunState::Running, RunState::Success, 53)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn sqlite_file_is_created_and_migrated_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/state.db", dir.path().display());
        let store = StateStore::connect(&url).await.unwrap();
        assert_eq!(
            store.schema_versions().await.unwrap(),
            vec![1, 2, 3, 4, 5, 6, 7]
        );
        streams_are_committed_by_their_owner_alone(&store).await;
        drop(store);
        // A second start finds the schema in place.
        let again = StateStore::connect(&url).await.unwrap();
        assert_eq!(
            again.schema_versions().await.unwrap(),
            vec![1, 2, 3, 4, 5, 6, 7]
        );
        assert!(dir.path().join("sub/state.db").exists());
    }
}
