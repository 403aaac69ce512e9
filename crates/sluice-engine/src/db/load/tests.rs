use super::*;
use arrow::array::Int64Array;
use arrow::datatypes::DataType;
use arrow::datatypes::{Field, Schema};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use sqlx::AssertSqlSafe;
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
    let config = DaemonConfig::parse("", std::path::Path::new("sluice.toml"), &|_| None).unwrap();
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
    let config = DaemonConfig::parse("", std::path::Path::new("sluice.toml"), &|_| None).unwrap();
    let spec = SqlLoad {
        input: "a".into(),
        connection: url.into(),
        table: table.into(),
        mode: LoadMode::Append,
        create: true,
        batch_size: 7,
    };
    let first = marker(table, "load", 1);
    assert_eq!(take_load(&config, &spec, &first).await.unwrap(), None);
    let (ra, rb) = tokio::join!(
        load(&config, request(&spec, table, &first), rows(0, 100)),
        load(&config, request(&spec, table, &first), rows(0, 100))
    );
    let mut outcomes = [ra.unwrap(), rb.unwrap()];
    outcomes.sort_by_key(|o| matches!(o, Loaded::Before(_)));
    assert_eq!(outcomes, [Loaded::Now(100), Loaded::Before(100)]);
    assert_eq!(count(&config, url, table).await, 100);
    assert_eq!(take_load(&config, &spec, &first).await.unwrap(), Some(100));
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
    assert_eq!(count(&config, url, table).await, 100);
    let rerun = marker(table, "load", 2);
    assert_eq!(
        load(&config, request(&spec, table, &rerun), rows(0, 100))
            .await
            .unwrap(),
        Loaded::Now(100)
    );
    assert_eq!(count(&config, url, table).await, 200);
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

async fn count(config: &DaemonConfig, url: &str, table: &str) -> i64 {
    let target = DbTarget::resolve(config, url).unwrap();
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
        fence: &crate::fence::Sole,
    }
}

/// The fence in the target: once a later attempt took the marker, the
/// earlier one (a replica that stalled past its claim and woke up) can
/// neither take it back nor commit, whatever it wrote; and a load whose
/// state-store fence says the claim is lost rolls back.
async fn late_attempts_do_not_load(url: &str, table: &str) {
    let config = DaemonConfig::parse("", std::path::Path::new("sluice.toml"), &|_| None).unwrap();
    let spec = SqlLoad {
        input: "a".into(),
        connection: url.into(),
        table: table.into(),
        mode: LoadMode::Append,
        create: true,
        batch_size: 50,
    };
    let first = marker(table, "load", 1);
    let second = LoadMarker {
        attempt: 2,
        ..first.clone()
    };
    assert_eq!(take_load(&config, &spec, &first).await.unwrap(), None);
    assert_eq!(take_load(&config, &spec, &second).await.unwrap(), None);
    let late = take_load(&config, &spec, &first).await.unwrap_err();
    assert!(
        matches!(late, Error::Fenced(_)) && late.to_string().contains("attempt 2"),
        "{late}"
    );
    let late = load(&config, request(&spec, table, &first), rows(0, 100))
        .await
        .unwrap_err();
    assert!(matches!(late, Error::Fenced(_)), "{late}");
    assert_eq!(
        load(&config, request(&spec, table, &second), rows(0, 100))
            .await
            .unwrap(),
        Loaded::Now(100)
    );
    // Woken up after the commit: it finds the rows in and loads nothing.
    assert_eq!(
        load(&config, request(&spec, table, &first), rows(0, 100))
            .await
            .unwrap(),
        Loaded::Before(100)
    );
    assert_eq!(count(&config, url, table).await, 100);

    struct Lost;
    impl crate::fence::Fence for Lost {
        fn check(&self) -> futures::future::BoxFuture<'_, Result<()>> {
            Box::pin(async { Err(Error::Fenced("the claim was taken".into())) })
        }
    }
    let rerun = marker(table, "load", 2);
    let fenced = LoadRequest {
        fence: &Lost,
        ..request(&spec, table, &rerun)
    };
    let err = load(&config, fenced, rows(0, 100)).await.unwrap_err();
    assert!(matches!(err, Error::Fenced(_)), "{err}");
    assert_eq!(count(&config, url, table).await, 100);
}

#[tokio::test]
async fn late_attempts_do_not_load_on_postgres() {
    late_attempts_do_not_load("postgres://postgres@127.0.0.1:5432/test", &unique("late")).await;
}

#[tokio::test]
async fn late_attempts_do_not_load_on_mysql() {
    late_attempts_do_not_load("mysql://root@127.0.0.1:3306/test", &unique("late")).await;
}

#[tokio::test]
async fn late_attempts_do_not_load_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.db");
    std::fs::File::create(&file).unwrap();
    late_attempts_do_not_load(&format!("sqlite://{}", file.display()), "late").await;
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
