//! The web UI at `/`: server-rendered pages (minijinja templates compiled
//! into the binary) and a vendored htmx, so the daemon serves everything
//! itself and a browser fetches nothing from the internet.
//!
//! Each page has one live region that htmx fetches again every two
//! seconds, and at once after a button did something, swapping in the
//! same region of the fresh page: runs appear and change colour without
//! a reload, while the trigger form (outside the region) keeps what the
//! user typed. Buttons post to `/ui/...` and answer with a one-line
//! message for the page's message area.

mod graph;
mod session;

use super::AppState;
use super::api::{self, ApiError, DagRun, TaskInstance};
use crate::error::Error;
use crate::state::{TaskInstanceRow, TaskState};
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{NaiveDate, Utc};
use minijinja::{Environment, Value, context};
use serde::{Deserialize, Serialize};
use session::Access;
use std::collections::HashMap;
use std::sync::OnceLock;

/// Runs shown in a job's grid, newest on the right.
const GRID_RUNS: i64 = 25;
/// The vendored htmx (from npm's `htmx.org`; its licence is beside it).
const HTMX_FILE: &str = "htmx-2.0.11.min.js";
const HTMX: &str = include_str!("assets/htmx-2.0.11.min.js");
const CSS: &str = include_str!("assets/sluice.css");

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("jobs.html", include_str!("templates/jobs.html")),
    ("dag.html", include_str!("templates/dag.html")),
    ("run.html", include_str!("templates/run.html")),
    ("log.html", include_str!("templates/log.html")),
    ("login.html", include_str!("templates/login.html")),
    ("error.html", include_str!("templates/error.html")),
    ("flash.html", include_str!("templates/flash.html")),
];

/// The templates, parsed once. Names end in `.html`, so every value is
/// HTML-escaped unless a template says otherwise (none does).
fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            // A template that does not parse fails the unit test below.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!("UI template {name}: {e}");
            }
        }
        env.add_filter("when", when);
        env.add_filter("dur", dur);
        env.add_filter("num", num);
        env.add_global("htmx", format!("/ui/static/{HTMX_FILE}"));
        env.add_global(
            "css",
            format!("/ui/static/sluice.css?v={}", env!("CARGO_PKG_VERSION")),
        );
        env.add_global("version", env!("CARGO_PKG_VERSION"));
        env
    })
}

/// An RFC 3339 time as the pages show it: `2026-11-24 02:00:00` (UTC).
fn when(s: Option<String>) -> String {
    let Some(s) = s else { return String::new() };
    s.replace('T', " ").trim_end_matches('Z').to_string()
}

/// Seconds, the way a person reads a duration.
fn dur(secs: Option<f64>) -> String {
    let Some(s) = secs else { return String::new() };
    if s < 1.0 {
        format!("{} ms", (s * 1000.0).round())
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{} m {:02} s", (s / 60.0).floor(), (s % 60.0).floor())
    } else {
        format!(
            "{} h {:02} m",
            (s / 3600.0).floor(),
            ((s % 3600.0) / 60.0).floor()
        )
    }
}

/// A count with thousands separated.
fn num(n: Option<i64>) -> String {
    let Some(n) = n else { return String::new() };
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Why a page cannot be shown.
#[derive(Debug)]
enum UiError {
    /// Reads need the token: go sign in.
    SignIn,
    Status(StatusCode, String),
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> UiError {
        UiError::Status(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.message,
        )
    }
}

impl From<Error> for UiError {
    fn from(e: Error) -> UiError {
        ApiError::from(e).into()
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        match self {
            UiError::SignIn => Redirect::to("/ui/login").into_response(),
            UiError::Status(status, message) => {
                let page = render(
                    "error.html",
                    context! { status => status.as_u16(), message, access => Value::UNDEFINED },
                );
                (status, page).into_response()
            }
        }
    }
}

type UiResult<T> = Result<T, UiError>;

/// A page rendered, with what every page shows (the replica that
/// answered).
fn page(state: &AppState, name: &str, ctx: Value) -> Html<String> {
    render(name, context! { replica => state.replica.as_ref(), ..ctx })
}

/// A template rendered; a rendering error (a bug) is shown, not hidden.
fn render(name: &str, ctx: Value) -> Html<String> {
    match templates().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => Html(html),
        Err(e) => {
            tracing::error!("rendering {name}: {e:#}");
            Html(format!(
                "<!doctype html><p>Sluice could not render this page ({}).</p>",
                minijinja::HtmlEscape(&e.to_string())
            ))
        }
    }
}

fn readable(headers: &HeaderMap, state: &AppState) -> UiResult<Access> {
    let access = session::access(headers, state);
    if access.read {
        Ok(access)
    } else {
        Err(UiError::SignIn)
    }
}

/// The UI's routes.
pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/", get(jobs_page))
        .route("/ui/dags/{dag}", get(dag_page))
        .route("/ui/dags/{dag}/runs/{run_id}", get(run_page))
        .route(
            "/ui/dags/{dag}/runs/{run_id}/tasks/{task}/log",
            get(log_page),
        )
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/dags/{dag}/trigger", post(trigger))
        .route("/ui/dags/{dag}/pause", post(pause))
        .route("/ui/dags/{dag}/unpause", post(unpause))
        .route("/ui/dags/{dag}/runs/{run_id}/fail", post(fail_run))
        .route(
            "/ui/dags/{dag}/runs/{run_id}/tasks/{task}/clear",
            post(clear_task),
        )
        .route("/ui/static/{file}", get(asset))
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind, cache) = match file.as_str() {
        // Versioned by name: a new htmx is a new file.
        HTMX_FILE => (
            HTMX,
            "text/javascript",
            "public, max-age=31536000, immutable",
        ),
        "sluice.css" => (CSS, "text/css", "public, max-age=3600"),
        _ => return (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        body,
    )
        .into_response()
}

async fn jobs_page(headers: HeaderMap, State(state): State<AppState>) -> UiResult<Html<String>> {
    let access = readable(&headers, &state)?;
    let rows = state.store.jobs().await?;
    let mut jobs = Vec::new();
    let mut stream_jobs = Vec::new();
    for job in state.jobs.all() {
        if job.is_stream() {
            stream_jobs.push(job.name.clone());
        }
        jobs.push(api::summary(&state, &job, &rows).await?);
    }
    // Streams whose job is still loaded, with where each file stands.
    let streams: Vec<api::Stream> = api::streams(&state)
        .await?
        .into_iter()
        .filter(|s| stream_jobs.contains(&s.dag))
        .collect();
    Ok(page(
        &state,
        "jobs.html",
        context! { access, jobs, stream_jobs, streams, path => "/", today => today() },
    ))
}

fn today() -> String {
    Utc::now().date_naive().to_string()
}

/// One square of the grid.
#[derive(Debug, Serialize)]
struct Cell {
    run_id: String,
    /// `none` when the run has no instance of the task.
    state: String,
    try_number: i64,
}

#[derive(Debug, Serialize)]
struct GridRow {
    task: String,
    kind: String,
    cells: Vec<Cell>,
}

async fn dag_page(
    headers: HeaderMap,
    State(state): State<AppState>,
    Path(dag): Path<String>,
) -> UiResult<Html<String>> {
    let access = readable(&headers, &state)?;
    let job = api::job_of(&state, &dag)?;
    let summary = api::summary(&state, &job, &state.store.jobs().await?).await?;
    let mut runs = state.store.recent_runs(&dag, GRID_RUNS).await?;
    runs.reverse();
    let mut instances: HashMap<(String, String), TaskInstanceRow> = HashMap::new();
    for run in &runs {
        for ti in state.store.task_instances(&dag, &run.run_id).await? {
            instances.insert((run.run_id.clone(), ti.task.clone()), ti);
        }
    }
    let kind = |t: &str| job.task(t).map_or("", |t| t.kind.key()).to_string();
    let grid: Vec<GridRow> = job
        .dag
        .order
        .iter()
        .map(|task| GridRow {
            task: task.clone(),
            kind: kind(task),
            cells: runs
                .iter()
                .map(|r| {
                    let ti = instances.get(&(r.run_id.clone(), task.clone()));
                    Cell {
                        run_id: r.run_id.clone(),
                        state: ti.map_or("none", |t| t.state.as_str()).to_string(),
                        try_number: ti.map_or(0, |t| t.try_number),
                    }
                })
                .collect(),
        })
        .collect();
    let latest = runs.last().map(|r| r.run_id.clone());
    let graph = graph::layout(&job.dag, kind, |task| {
        let run = latest.as_ref()?;
        instances
            .get(&(run.clone(), task.to_string()))
            .map(|t| t.state.as_str().to_string())
    });
    let runs: Vec<DagRun> = runs.iter().map(DagRun::from).collect();
    Ok(page(
        &state,
        "dag.html",
        context! {
            access, dag, job => summary, runs, grid, graph, latest,
            path => format!("/ui/dags/{dag}"), today => today(),
        },
    ))
}

/// A task's bar in the run's timeline, in percent of the run's span.
#[derive(Debug, Serialize)]
struct Bar {
    task: String,
    state: String,
    left: f64,
    width: f64,
    seconds: Option<f64>,
}

/// The Gantt chart: each task from its first attempt's start to its end
/// (now, while it runs), on the span from the first start to the last end.
fn bars(tis: &[TaskInstanceRow], now: i64) -> Vec<Bar> {
    let span = |t: &TaskInstanceRow| {
        t.first_try_at.map(|s| {
            let end = t.ended_at.unwrap_or(if t.state == TaskState::Running {
                now
            } else {
                s
            });
            (s, end.max(s))
        })
    };
    let spans: Vec<_> = tis.iter().filter_map(span).collect();
    let (Some(t0), Some(t1)) = (
        spans.iter().map(|s| s.0).min(),
        spans.iter().map(|s| s.1).max(),
    ) else {
        return Vec::new();
    };
    let total = (t1 - t0).max(1) as f64;
    tis.iter()
        .map(|t| match span(t) {
            Some((s, e)) => Bar {
                task: t.task.clone(),
                state: t.state.as_str().to_string(),
                left: ((s - t0) as f64 / total * 100.0).clamp(0.0, 99.5),
                width: ((e - s) as f64 / total * 100.0).clamp(0.5, 100.0),
                seconds: Some((e - s) as f64 / 1e6),
            },
            None => Bar {
                task: t.task.clone(),
                state: t.state.as_str().to_string(),
                left: 0.0,
                width: 0.0,
                seconds: None,
            },
        })
        .collect()
}

async fn run_page(
    headers: HeaderMap,
    State(state): State<AppState>,
    Path((dag, run_id)): Path<(String, String)>,
) -> UiResult<Html<String>> {
    let access = readable(&headers, &state)?;
    let run = api::find_run(&state, &dag, &run_id).await?;
    let mut tis = state.store.task_instances(&dag, &run_id).await?;
    let order = state
        .jobs
        .get(&dag)
        .map(|j| j.dag.order.clone())
        .unwrap_or_default();
    tis.sort_by_key(|t| {
        order
            .iter()
            .position(|o| o == &t.task)
            .unwrap_or(usize::MAX)
    });
    let bars = bars(&tis, crate::clock::micros(Utc::now()));
    let tasks: Vec<TaskInstance> = tis.iter().map(TaskInstance::from).collect();
    Ok(page(
        &state,
        "run.html",
        context! {
            access, dag, run => DagRun::from(&run), tasks, bars,
            ended => run.ended_at.is_some(),
            path => format!("/ui/dags/{dag}/runs/{run_id}"),
        },
    ))
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    try_number: Option<i64>,
}

async fn log_page(
    headers: HeaderMap,
    State(state): State<AppState>,
    Path((dag, run_id, task)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
) -> UiResult<Html<String>> {
    let access = readable(&headers, &state)?;
    api::find_run(&state, &dag, &run_id).await?;
    let tis = state.store.task_instances(&dag, &run_id).await?;
    let ti = tis.iter().find(|t| t.task == task).ok_or_else(|| {
        UiError::Status(
            StatusCode::NOT_FOUND,
            format!("run {run_id} has no task \"{task}\""),
        )
    })?;
    let tries = ti.try_number.max(1);
    let try_number = q.try_number.unwrap_or(tries).clamp(1, tries);
    let lines: Vec<_> = state
        .store
        .logs(&dag, &run_id, &task, try_number)
        .await?
        .into_iter()
        .map(|(at, level, message)| context! { at => when(Some(api::rfc3339(at))), level, message })
        .collect();
    let query = q
        .try_number
        .map(|n| format!("?try_number={n}"))
        .unwrap_or_default();
    Ok(page(
        &state,
        "log.html",
        context! {
            access, dag, run_id, task, try_number, tries => (1..=tries).collect::<Vec<_>>(),
            state => ti.state.as_str(), lines,
            path => format!("/ui/dags/{dag}/runs/{run_id}/tasks/{task}/log{query}"),
        },
    ))
}

async fn login_page(headers: HeaderMap, State(state): State<AppState>) -> Response {
    if state.api_token.is_none() {
        return Redirect::to("/").into_response();
    }
    let access = session::access(&headers, &state);
    page(
        &state,
        "login.html",
        context! { access, error => Value::UNDEFINED },
    )
    .into_response()
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    headers: HeaderMap,
    State(state): State<AppState>,
    Form(form): Form<LoginForm>,
) -> Response {
    let Some(token) = state.api_token.as_deref() else {
        return Redirect::to("/").into_response();
    };
    if crate::http::auth::same(form.token.trim().as_bytes(), token.as_bytes()) {
        let cookie = session::sign_in_cookie(token, &headers);
        let mut resp = Redirect::to("/").into_response();
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        return resp;
    }
    let access = session::access(&headers, &state);
    (
        StatusCode::UNAUTHORIZED,
        render(
            "login.html",
            context! { access, error => "That is not the API token." },
        ),
    )
        .into_response()
}

async fn logout() -> Response {
    let mut resp = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::sign_out_cookie()) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// What a button's post answers: a message for the page's message area,
/// and on success an `HX-Trigger` that makes the live region refresh.
fn flash(status: StatusCode, message: impl Into<String>) -> Response {
    let ok = status.is_success();
    let html = render("flash.html", context! { ok, message => message.into() });
    let mut resp = (status, html).into_response();
    if ok {
        resp.headers_mut()
            .insert("hx-trigger", HeaderValue::from_static("sluice-changed"));
    }
    resp
}

/// The answer that refuses a post which did not come from a signed-in
/// user's page; `None` lets it through.
fn refusal(headers: &HeaderMap, state: &AppState) -> Option<Response> {
    if !session::from_htmx(headers) {
        return Some(flash(
            StatusCode::FORBIDDEN,
            "buttons work only from Sluice's own pages",
        ));
    }
    if !session::access(headers, state).act {
        return Some(flash(
            StatusCode::UNAUTHORIZED,
            "sign in with the API token first",
        ));
    }
    None
}

fn failed(e: impl Into<UiError>) -> Response {
    match e.into() {
        UiError::SignIn => flash(StatusCode::UNAUTHORIZED, "sign in with the API token first"),
        UiError::Status(status, message) => flash(status, message),
    }
}

#[derive(Debug, Deserialize)]
struct TriggerForm {
    #[serde(default)]
    logical_date: String,
}

async fn trigger(
    headers: HeaderMap,
    State(state): State<AppState>,
    Path(dag): Path<String>,
    Form(form): Form<TriggerForm>,
) -> Response {
    if let Some(r) = refusal(&headers, &state) {
        return r;
    }
    let job = match api::job_of(&state, &dag) {
        Ok(j) => j,
        Err(e) => return failed(e),
    };
    let date = match form.logical_date.trim() {
        "" => Utc::now().with_timezone(&job.timezone).date_naive(),
        d => match NaiveDate::parse_from_str(d, "%Y-%m-%d") {
            Ok(d) => d,
            Err(e) => {
                return flash(
                    StatusCode::BAD_REQUEST,
                    format!("logical date \"{d}\": {e}; expected YYYY-MM-DD"),
                );
            }
        },
    };
    match crate::service::trigger(&state.store, &job, date, None).await {
        Ok((run_id, true)) => flash(StatusCode::OK, format!("Queued {run_id}.")),
        Ok((run_id, false)) => flash(
            StatusCode::CONFLICT,
            format!(
                "{dag} already has a run for {date} ({run_id}); clear its tasks to run it again."
            ),
        ),
        Err(e) => failed(e),
    }
}

async fn set_paused(headers: &HeaderMap, state: &AppState, dag: &str, paused: bool) -> Response {
    if let Some(r) = refusal(headers, state) {
        return r;
    }
    if let Err(e) = api::job_of(state, dag) {
        return failed(e);
    }
    match state.store.set_paused(dag, paused).await {
        Ok(_) if paused => flash(StatusCode::OK, format!("Paused {dag}: no new runs start.")),
        Ok(_) => flash(StatusCode::OK, format!("Unpaused {dag}.")),
        Err(e) => failed(e),
    }
}

async fn pause(
    headers: HeaderMap,
    State(state): State<AppState>,
    Path(dag): Path<String>,
) -> Response {
    set_paused(&headers, &state, &dag, true).await
}

async fn unpause(
    headers: HeaderMap,
    State(state): State<AppState>,
    Path(dag): Path<String>,
) -> Response {
    set_paused(&headers, &state, &dag, false).await
}

async fn fail_run(
    headers: HeaderMap,
    State(state): State<AppState>,
    Path((dag, run_id)): Path<(String, String)>,
) -> Response {
    if let Some(r) = refusal(&headers, &state) {
        return r;
    }
    if let Err(e) = api::find_run(&state, &dag, &run_id).await {
        return failed(e);
    }
    match state
        .store
        .fail_run(&dag, &run_id, crate::clock::micros(Utc::now()))
        .await
    {
        Ok(true) => flash(StatusCode::OK, format!("Marked {run_id} failed.")),
        Ok(false) => flash(StatusCode::CONFLICT, format!("{run_id} has ended already.")),
        Err(e) => failed(e),
    }
}

#[derive(Debug, Deserialize)]
struct ClearForm {
    /// A checkbox: present when ticked.
    downstream: Option<String>,
}

async fn clear_task(
    headers: HeaderMap,
    State(state): State<AppState>,
    Path((dag, run_id, task)): Path<(String, String, String)>,
    Form(form): Form<ClearForm>,
) -> Response {
    if let Some(r) = refusal(&headers, &state) {
        return r;
    }
    let job = match api::job_of(&state, &dag) {
        Ok(j) => j,
        Err(e) => return failed(e),
    };
    let downstream = form.downstream.is_some();
    match crate::service::clear(&state.store, &job, &run_id, &task, downstream).await {
        Ok(cleared) if cleared.is_empty() => flash(
            StatusCode::CONFLICT,
            format!("{task} has not ended; nothing to clear."),
        ),
        Ok(cleared) => flash(
            StatusCode::OK,
            format!("Cleared {}: they run again.", cleared.join(", ")),
        ),
        Err(e) => failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }

    #[test]
    fn values_are_escaped() {
        let html = render(
            "flash.html",
            context! { ok => false, message => "<script>alert(1)</script>" },
        );
        assert!(!html.0.contains("<script>"), "{}", html.0);
        assert!(html.0.contains("&lt;script&gt;"), "{}", html.0);
    }

    #[test]
    fn durations_and_counts_read_well() {
        assert_eq!(dur(Some(0.25)), "250 ms");
        assert_eq!(dur(Some(12.34)), "12.3 s");
        assert_eq!(dur(Some(185.0)), "3 m 05 s");
        assert_eq!(dur(Some(7500.0)), "2 h 05 m");
        assert_eq!(num(Some(1234567)), "1,234,567");
        assert_eq!(num(Some(-1000)), "-1,000");
        assert_eq!(num(Some(12)), "12");
        assert_eq!(
            when(Some("2026-11-24T02:00:00Z".into())),
            "2026-11-24 02:00:00"
        );
    }

    fn ti(task: &str, state: TaskState, start: Option<i64>, end: Option<i64>) -> TaskInstanceRow {
        TaskInstanceRow {
            dag: "d".into(),
            run_id: "r".into(),
            task: task.into(),
            state,
            try_number: 1,
            failures: 0,
            next_try_at: None,
            first_try_at: start,
            started_at: start,
            ended_at: end,
            rows_in: None,
            rows_out: None,
            bad_records: None,
            bytes_written: None,
            error: None,
            ended_by: None,
            generation: None,
        }
    }

    #[test]
    fn gantt_bars_span_the_run() {
        let tis = [
            ti("a", TaskState::Success, Some(0), Some(1_000_000)),
            ti("b", TaskState::Running, Some(1_000_000), None),
            ti("c", TaskState::Scheduled, None, None),
        ];
        let b = bars(&tis, 4_000_000);
        assert_eq!((b[0].left, b[0].width), (0.0, 25.0));
        // A running task reaches now.
        assert_eq!((b[1].left, b[1].width), (25.0, 75.0));
        assert_eq!(b[1].seconds, Some(3.0));
        assert_eq!((b[2].width, b[2].seconds), (0.0, None));
    }
}
