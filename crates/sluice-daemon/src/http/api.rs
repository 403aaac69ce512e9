//! The REST API under `/api/v1`, in Airflow's vocabulary: DAGs (jobs),
//! DAG runs, task instances and their logs. Every route is declared with
//! `#[utoipa::path]` and registered through `routes!`, so the OpenAPI
//! document at `/api/v1/openapi.json` lists exactly what the router
//! serves.

use super::AppState;
use super::auth::Bearer;
use crate::error::Error;
use crate::state::{RunRow, RunState, TaskInstanceRow};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sluice_core::config::Job;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// An error, as every route answers it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status: status.as_u16(),
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self)).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match e {
            Error::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
            Error::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, m),
            e @ Error::State { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A query string, or a 400 in the API's JSON error shape (axum's own
/// extractor answers in plain text, which the OpenAPI document does not
/// describe).
pub struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<ApiQuery<T>, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))
    }
}

pub(super) fn rfc3339(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(super) fn job_of(state: &AppState, dag: &str) -> ApiResult<std::sync::Arc<Job>> {
    state
        .jobs
        .get(dag)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no job named \"{dag}\"")))
}

/// A job, as the list shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DagSummary {
    pub dag_id: String,
    pub description: Option<String>,
    /// The cron expression or preset; none for a job run only by hand.
    pub schedule: Option<String>,
    pub timezone: String,
    pub is_paused: bool,
    /// Why the job file's last edit did not load (the last valid version
    /// keeps running).
    pub load_error: Option<String>,
    pub last_run: Option<DagRun>,
    /// When the scheduler next creates a run (RFC 3339).
    pub next_run_at: Option<String>,
}

/// A task of a job.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskSpec {
    pub task_id: String,
    /// extract, transform, load, sensor or check.
    pub kind: String,
    pub upstream: Vec<String>,
    pub downstream: Vec<String>,
}

/// A job with its DAG.
#[derive(Debug, Serialize, ToSchema)]
pub struct DagDetail {
    #[serde(flatten)]
    pub summary: DagSummary,
    /// In an order where each task comes after its upstream tasks.
    pub tasks: Vec<TaskSpec>,
}

/// A DAG run.
#[derive(Debug, Serialize, ToSchema)]
pub struct DagRun {
    pub dag_id: String,
    pub run_id: String,
    pub logical_date: String,
    pub data_interval_start: String,
    pub data_interval_end: String,
    /// scheduled, manual or backfill.
    pub run_type: String,
    /// queued, running, success or failed.
    pub state: String,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub sla_missed: bool,
}

impl From<&RunRow> for DagRun {
    fn from(r: &RunRow) -> DagRun {
        DagRun {
            dag_id: r.dag.clone(),
            run_id: r.run_id.clone(),
            logical_date: rfc3339(r.logical_date),
            data_interval_start: rfc3339(r.interval_start),
            data_interval_end: rfc3339(r.interval_end),
            run_type: r.run_type.clone(),
            state: r.state.as_str().to_string(),
            start_date: r.started_at.map(rfc3339),
            end_date: r.ended_at.map(rfc3339),
            sla_missed: r.sla_missed,
        }
    }
}

/// A task instance of a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskInstance {
    pub task_id: String,
    /// scheduled, running, success, failed, up_for_retry,
    /// up_for_reschedule or upstream_failed.
    pub state: String,
    /// Attempts started.
    pub try_number: i64,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    /// From the first attempt's start to the end, in seconds.
    pub duration: Option<f64>,
    pub rows_in: Option<i64>,
    pub rows_out: Option<i64>,
    pub bad_records: Option<i64>,
    pub bytes_written: Option<i64>,
    pub error: Option<String>,
    /// The replica that ended the last attempt.
    pub hostname: Option<String>,
}

impl From<&TaskInstanceRow> for TaskInstance {
    fn from(t: &TaskInstanceRow) -> TaskInstance {
        TaskInstance {
            task_id: t.task.clone(),
            state: t.state.as_str().to_string(),
            try_number: t.try_number,
            start_date: t.first_try_at.map(rfc3339),
            end_date: t.ended_at.map(rfc3339),
            duration: t
                .first_try_at
                .zip(t.ended_at)
                .map(|(s, e)| (e - s).max(0) as f64 / 1e6),
            rows_in: t.rows_in,
            rows_out: t.rows_out,
            bad_records: t.bad_records,
            bytes_written: t.bytes_written,
            error: t.error.clone(),
            hostname: t.ended_by.clone(),
        }
    }
}

/// A run with its task instances.
#[derive(Debug, Serialize, ToSchema)]
pub struct DagRunDetail {
    #[serde(flatten)]
    pub run: DagRun,
    pub task_instances: Vec<TaskInstance>,
}

/// A page of runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct DagRunPage {
    pub dag_runs: Vec<DagRun>,
    /// Runs matching the filter, on every page.
    pub total_entries: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only runs in this state (queued, running, success, failed).
    pub state: Option<String>,
    /// At most this many (1 to 1000; default 100).
    pub limit: Option<i64>,
    /// Skip this many, newest first.
    pub offset: Option<i64>,
}

/// What a trigger may carry.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRun {
    /// The logical date (YYYY-MM-DD) of the interval to run; default today
    /// in the job's timezone.
    pub logical_date: Option<String>,
    /// Values for `{{ params.* }}` over the job's own.
    pub params: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What a clear may carry.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearTask {
    /// Clear the tasks below it too.
    #[serde(default)]
    pub downstream: bool,
}

/// The tasks a clear set to run again.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cleared {
    pub task_ids: Vec<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// The attempt (1 for the first); default the latest.
    pub try_number: Option<i64>,
}

/// One line of a task attempt's log.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogLine {
    pub timestamp: String,
    pub level: String,
    pub message: String,
}

/// A task attempt's log.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskLog {
    pub try_number: i64,
    pub lines: Vec<LogLine>,
}

/// A JSON body, or a 400 saying what is wrong with it; an empty body is
/// the type's default.
fn body<T: serde::de::DeserializeOwned + Default>(bytes: &Bytes) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

/// The store's row of every job: (name, paused, load error).
type JobRows = [(String, bool, Option<String>)];

/// `job` as the list shows it; `rows` is [`StateStore::jobs`], read once
/// per request however many jobs it summarises.
///
/// [`StateStore::jobs`]: crate::state::StateStore::jobs
pub(super) async fn summary(state: &AppState, job: &Job, rows: &JobRows) -> ApiResult<DagSummary> {
    let row = rows.iter().find(|(name, _, _)| name == &job.name);
    let last = state.store.recent_runs(&job.name, 1).await?;
    let next_run_at = job.schedule.as_ref().and_then(|s| {
        s.next_after(&Utc::now().with_timezone(&job.timezone))
            .map(|t| {
                t.with_timezone(&Utc)
                    .to_rfc3339_opts(SecondsFormat::Secs, true)
            })
    });
    Ok(DagSummary {
        dag_id: job.name.clone(),
        description: job.description.clone(),
        schedule: job.schedule.as_ref().map(|s| s.expr.clone()),
        timezone: job.timezone.to_string(),
        is_paused: row.is_some_and(|r| r.1),
        load_error: row.and_then(|r| r.2.clone()),
        last_run: last.first().map(DagRun::from),
        next_run_at,
    })
}

/// The jobs the daemon runs.
#[utoipa::path(get, path = "/dags", tag = "dags",
    responses((status = 200, body = [DagSummary]), (status = 401, body = ApiError)),
    security(("bearer" = [])))]
async fn list_dags(_: Bearer, State(state): State<AppState>) -> ApiResult<Json<Vec<DagSummary>>> {
    let rows = state.store.jobs().await?;
    let mut out = Vec::new();
    for job in state.jobs.all() {
        out.push(summary(&state, &job, &rows).await?);
    }
    Ok(Json(out))
}

/// One job and its DAG.
#[utoipa::path(get, path = "/dags/{dag}", tag = "dags",
    params(("dag" = String, Path, description = "The job's name")),
    responses((status = 200, body = DagDetail), (status = 401, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = [])))]
async fn get_dag(
    _: Bearer,
    State(state): State<AppState>,
    Path(dag): Path<String>,
) -> ApiResult<Json<DagDetail>> {
    let job = job_of(&state, &dag)?;
    let tasks = job
        .dag
        .order
        .iter()
        .map(|id| TaskSpec {
            task_id: id.clone(),
            kind: job.task(id).map_or("", |t| t.kind.key()).to_string(),
            upstream: job.dag.upstream.get(id).cloned().unwrap_or_default(),
            downstream: job.dag.downstream.get(id).cloned().unwrap_or_default(),
        })
        .collect();
    Ok(Json(DagDetail {
        summary: summary(&state, &job, &state.store.jobs().await?).await?,
        tasks,
    }))
}

/// A job's runs, newest first.
#[utoipa::path(get, path = "/dags/{dag}/runs", tag = "runs",
    params(("dag" = String, Path, description = "The job's name"), RunsQuery),
    responses((status = 200, body = DagRunPage), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = [])))]
async fn list_runs(
    _: Bearer,
    State(state): State<AppState>,
    Path(dag): Path<String>,
    ApiQuery(q): ApiQuery<RunsQuery>,
) -> ApiResult<Json<DagRunPage>> {
    job_of(&state, &dag)?;
    let run_state = match q.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<RunState>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("state \"{s}\": expected queued, running, success or failed"),
            )
        })?),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "limit: between 1 and 1000",
        ));
    }
    let offset = q.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "offset: 0 or more"));
    }
    let (rows, total) = state
        .store
        .runs_page(&dag, run_state, limit, offset)
        .await?;
    Ok(Json(DagRunPage {
        dag_runs: rows.iter().map(DagRun::from).collect(),
        total_entries: total,
    }))
}

/// Queues a manual run of the interval whose logical date is given.
#[utoipa::path(post, path = "/dags/{dag}/runs", tag = "runs",
    params(("dag" = String, Path, description = "The job's name")),
    request_body(content = TriggerRun, content_type = "application/json"),
    responses((status = 201, body = DagRun), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError, description = "The job already has a run for that logical date")),
    security(("bearer" = [])))]
async fn trigger_run(
    _: Bearer,
    State(state): State<AppState>,
    Path(dag): Path<String>,
    bytes: Bytes,
) -> ApiResult<(StatusCode, Json<DagRun>)> {
    let job = job_of(&state, &dag)?;
    let req: TriggerRun = body(&bytes)?;
    let date = match req.logical_date.as_deref() {
        None => Utc::now().with_timezone(&job.timezone).date_naive(),
        Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("logical_date \"{d}\": {e}; expected YYYY-MM-DD"),
            )
        })?,
    };
    let params = req.params.map(serde_json::Value::Object);
    let (run_id, created) = crate::service::trigger(&state.store, &job, date, params).await?;
    if !created {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{dag} already has a run for {date}: {run_id}"),
        ));
    }
    let run =
        state.store.run(&dag, &run_id).await?.ok_or_else(|| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the new run vanished")
        })?;
    Ok((StatusCode::CREATED, Json(DagRun::from(&run))))
}

/// One run with its task instances.
#[utoipa::path(get, path = "/dags/{dag}/runs/{run_id}", tag = "runs",
    params(("dag" = String, Path, description = "The job's name"), ("run_id" = String, Path, description = "The run")),
    responses((status = 200, body = DagRunDetail), (status = 401, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = [])))]
async fn get_run(
    _: Bearer,
    State(state): State<AppState>,
    Path((dag, run_id)): Path<(String, String)>,
) -> ApiResult<Json<DagRunDetail>> {
    let run = find_run(&state, &dag, &run_id).await?;
    let tis = state.store.task_instances(&dag, &run_id).await?;
    // In the DAG's order where the job is known.
    let order = state
        .jobs
        .get(&dag)
        .map(|j| j.dag.order.clone())
        .unwrap_or_default();
    let mut task_instances: Vec<TaskInstance> = tis.iter().map(TaskInstance::from).collect();
    task_instances.sort_by_key(|t| {
        order
            .iter()
            .position(|o| o == &t.task_id)
            .unwrap_or(usize::MAX)
    });
    Ok(Json(DagRunDetail {
        run: DagRun::from(&run),
        task_instances,
    }))
}

pub(super) async fn find_run(state: &AppState, dag: &str, run_id: &str) -> ApiResult<RunRow> {
    state.store.run(dag, run_id).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("job \"{dag}\" has no run \"{run_id}\""),
        )
    })
}

/// Marks a run that has not ended as failed, with its unfinished tasks.
#[utoipa::path(post, path = "/dags/{dag}/runs/{run_id}/fail", tag = "runs",
    params(("dag" = String, Path, description = "The job's name"), ("run_id" = String, Path, description = "The run")),
    responses((status = 200, body = DagRun), (status = 401, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError, description = "The run has ended already")),
    security(("bearer" = [])))]
async fn fail_run(
    _: Bearer,
    State(state): State<AppState>,
    Path((dag, run_id)): Path<(String, String)>,
) -> ApiResult<Json<DagRun>> {
    find_run(&state, &dag, &run_id).await?;
    let now = crate::clock::micros(Utc::now());
    if !state.store.fail_run(&dag, &run_id, now).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("run {run_id} has ended already"),
        ));
    }
    Ok(Json(DagRun::from(&find_run(&state, &dag, &run_id).await?)))
}

/// Sets a task instance (and with `downstream` the tasks below it) to
/// run again, under a new load generation.
#[utoipa::path(post, path = "/dags/{dag}/runs/{run_id}/tasks/{task}/clear", tag = "tasks",
    params(("dag" = String, Path, description = "The job's name"), ("run_id" = String, Path, description = "The run"),
        ("task" = String, Path, description = "The task")),
    request_body(content = ClearTask, content_type = "application/json"),
    responses((status = 200, body = Cleared), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError, description = "The task has not ended")),
    security(("bearer" = [])))]
async fn clear_task(
    _: Bearer,
    State(state): State<AppState>,
    Path((dag, run_id, task)): Path<(String, String, String)>,
    bytes: Bytes,
) -> ApiResult<Json<Cleared>> {
    let job = job_of(&state, &dag)?;
    let req: ClearTask = body(&bytes)?;
    let cleared = crate::service::clear(&state.store, &job, &run_id, &task, req.downstream).await?;
    if cleared.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("{task} of {run_id} has not ended; nothing to clear"),
        ));
    }
    Ok(Json(Cleared { task_ids: cleared }))
}

/// A task attempt's log lines.
#[utoipa::path(get, path = "/dags/{dag}/runs/{run_id}/tasks/{task}/logs", tag = "tasks",
    params(("dag" = String, Path, description = "The job's name"), ("run_id" = String, Path, description = "The run"),
        ("task" = String, Path, description = "The task"), LogQuery),
    responses((status = 200, body = TaskLog), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = [])))]
async fn task_log(
    _: Bearer,
    State(state): State<AppState>,
    Path((dag, run_id, task)): Path<(String, String, String)>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> ApiResult<Json<TaskLog>> {
    find_run(&state, &dag, &run_id).await?;
    let tis = state.store.task_instances(&dag, &run_id).await?;
    let ti = tis.iter().find(|t| t.task == task).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("run {run_id} has no task \"{task}\""),
        )
    })?;
    let try_number = q.try_number.unwrap_or(ti.try_number.max(1));
    let lines = state.store.logs(&dag, &run_id, &task, try_number).await?;
    Ok(Json(TaskLog {
        try_number,
        lines: lines
            .into_iter()
            .map(|(at, level, message)| LogLine {
                timestamp: rfc3339(at),
                level,
                message,
            })
            .collect(),
    }))
}

async fn set_paused(state: &AppState, dag: &str, paused: bool) -> ApiResult<Json<DagSummary>> {
    let job = job_of(state, dag)?;
    state.store.set_paused(dag, paused).await?;
    Ok(Json(
        summary(state, &job, &state.store.jobs().await?).await?,
    ))
}

/// Stops creating and starting runs of a job (running tasks finish).
#[utoipa::path(post, path = "/dags/{dag}/pause", tag = "dags",
    params(("dag" = String, Path, description = "The job's name")),
    responses((status = 200, body = DagSummary), (status = 401, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = [])))]
async fn pause(
    _: Bearer,
    State(state): State<AppState>,
    Path(dag): Path<String>,
) -> ApiResult<Json<DagSummary>> {
    set_paused(&state, &dag, true).await
}

/// Schedules a paused job again.
#[utoipa::path(post, path = "/dags/{dag}/unpause", tag = "dags",
    params(("dag" = String, Path, description = "The job's name")),
    responses((status = 200, body = DagSummary), (status = 401, body = ApiError), (status = 404, body = ApiError)),
    security(("bearer" = [])))]
async fn unpause(
    _: Bearer,
    State(state): State<AppState>,
    Path(dag): Path<String>,
) -> ApiResult<Json<DagSummary>> {
    set_paused(&state, &dag, false).await
}

/// The replica that answers, and the store it shares with the others.
#[derive(Debug, Serialize, ToSchema)]
pub struct Replica {
    /// Host name and process id; task instances name the replica that
    /// ran them with the same id (`hostname`).
    pub replica_id: String,
    pub version: String,
    /// The state store's URL, without credentials.
    pub state_store: String,
}

/// Which replica answers (behind a load balancer, any of them).
#[utoipa::path(get, path = "/replica", tag = "dags",
    responses((status = 200, body = Replica), (status = 401, body = ApiError)),
    security(("bearer" = [])))]
async fn replica(_: Bearer, State(state): State<AppState>) -> Json<Replica> {
    Json(Replica {
        replica_id: state.replica.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        state_store: state.store.name().to_string(),
    })
}

/// A stream job as the state store knows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stream {
    /// The job's name.
    pub dag: String,
    /// The replica holding its lease; null when none does (its lease
    /// lapsed or was given up).
    pub owner: Option<String>,
    /// When it last committed, RFC 3339; null before its first commit.
    pub committed_at: Option<String>,
    /// The files it follows, as of its last commit.
    pub files: Vec<StreamFile>,
}

/// Where reading one file stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamFile {
    /// Where the file was last seen.
    pub path: String,
    /// Its identity: a hash of its first line, the same across renames.
    pub fingerprint: String,
    /// Bytes read and committed.
    pub offset: u64,
    /// Bytes not yet read when last looked at.
    pub lag_bytes: u64,
}

/// Stream jobs: their owners, files, offsets and lag.
#[utoipa::path(get, path = "/streams", tag = "dags",
    responses((status = 200, body = [Stream]), (status = 401, body = ApiError)),
    security(("bearer" = [])))]
async fn list_streams(_: Bearer, State(state): State<AppState>) -> ApiResult<Json<Vec<Stream>>> {
    Ok(Json(streams(&state).await?))
}

/// The stream jobs the state store knows, for the API and the UI.
pub(super) async fn streams(state: &AppState) -> ApiResult<Vec<Stream>> {
    let now = crate::clock::micros(Utc::now());
    let mut out = Vec::new();
    for row in state.store.streams().await? {
        let cp: sluice_engine::stream::Checkpoint = match &row.checkpoint {
            Some(text) => serde_json::from_str(text).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the checkpoint of stream {} does not read: {e}", row.job),
                )
            })?,
            None => Default::default(),
        };
        out.push(Stream {
            owner: row.owner.filter(|_| row.lease_until >= now),
            committed_at: row.committed_at.map(rfc3339),
            files: cp
                .cursors
                .iter()
                .map(|(fp, c)| StreamFile {
                    path: c.path.display().to_string(),
                    fingerprint: fp.to_string(),
                    offset: c.offset,
                    lag_bytes: c.size.saturating_sub(c.offset),
                })
                .collect(),
            dag: row.job,
        });
    }
    Ok(out)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice API", description = "Jobs (DAGs), their runs, task instances and logs."),
    modifiers(&BearerScheme),
)]
struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's routes under `/api/v1`, and `/api/v1/openapi.json`.
pub fn router() -> axum::Router<AppState> {
    let (api_routes, mut doc) = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
        .routes(routes!(list_dags))
        .routes(routes!(get_dag))
        .routes(routes!(list_runs, trigger_run))
        .routes(routes!(get_run))
        .routes(routes!(fail_run))
        .routes(routes!(clear_task))
        .routes(routes!(task_log))
        .routes(routes!(pause))
        .routes(routes!(unpause))
        .routes(routes!(replica))
        .routes(routes!(list_streams))
        .split_for_parts();
    doc.servers = Some(vec![utoipa::openapi::Server::new("/api/v1")]);
    let doc = std::sync::Arc::new(doc);
    let api_routes = api_routes.route(
        "/openapi.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { Json((*doc).clone()) }
        }),
    );
    axum::Router::new().nest("/api/v1", api_routes)
}
