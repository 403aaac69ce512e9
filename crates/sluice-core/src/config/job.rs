//! Job files: one DAG per file. Parsing validates every key, resolves the
//! DAG's edges (from `depends_on`, load inputs and the tables SQL reads) and
//! renders every template once with a sample run, so that a job which loads
//! is a job that can run.

use super::task::{TaskDefaults, TaskKind, duration_or, parse_task};
use super::{Task, deserialize_at, read_toml};
use crate::dag::{Dag, DagError};
use crate::error::{ConfigError, Error, Result};
use crate::schedule::Schedule;
use crate::template::RunContext;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Option<String>,
    description: Option<String>,
    mode: Option<String>,
    schedule: Option<String>,
    timezone: Option<String>,
    start: Option<String>,
    end: Option<String>,
    catchup: Option<bool>,
    max_active_runs: Option<u32>,
    sla: Option<String>,
    retries: Option<u32>,
    retry_delay: Option<String>,
    max_retry_delay: Option<String>,
    timeout: Option<String>,
    #[serde(default)]
    params: toml::Table,
    #[serde(default)]
    tasks: toml::Table,
}

/// A validated job: its tasks and their DAG.
#[derive(Debug, Clone)]
pub struct Job {
    pub file: PathBuf,
    pub name: String,
    pub description: Option<String>,
    /// Scheduled runs, or one stream that runs while the daemon runs.
    pub mode: JobMode,
    pub schedule: Option<Schedule>,
    pub timezone: Tz,
    pub start: Option<DateTime<Tz>>,
    pub end: Option<DateTime<Tz>>,
    pub catchup: bool,
    pub max_active_runs: u32,
    pub sla: Option<Duration>,
    pub params: serde_json::Value,
    /// Tasks in file order.
    pub tasks: Vec<Task>,
    pub dag: Dag,
}

/// How a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobMode {
    /// Runs per logical date, on its schedule or when triggered.
    #[default]
    Batch,
    /// `mode = "stream"`: follows its log files while the daemon runs,
    /// committing Parquet files and offsets together.
    Stream,
}

impl Job {
    pub fn is_stream(&self) -> bool {
        self.mode == JobMode::Stream
    }

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.id == id)
    }

    /// The job cut down to `task` and the tasks it depends on, for
    /// `sluice run --task`; `None` when it has no such task.
    pub fn only(&self, task: &str) -> Option<Job> {
        self.task(task)?;
        let mut keep = std::collections::HashSet::new();
        let mut stack = vec![task.to_string()];
        while let Some(t) = stack.pop() {
            if keep.insert(t.clone()) {
                stack.extend(self.dag.upstream[&t].iter().cloned());
            }
        }
        let tasks: Vec<Task> = self
            .tasks
            .iter()
            .filter(|t| keep.contains(&t.id))
            .cloned()
            .collect();
        let nodes: Vec<(String, Vec<String>)> = tasks
            .iter()
            .map(|t| (t.id.clone(), self.dag.upstream[&t.id].clone()))
            .collect();
        let dag = Dag::build(&nodes).expect("a part of an acyclic graph closed upstream");
        Some(Job {
            tasks,
            dag,
            ..self.clone()
        })
    }

    /// What is allowed but likely wrong, for `sluice validate`.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.schedule.is_none() {
            return out;
        }
        for task in &self.tasks {
            if let TaskKind::Load(super::Load::Sql(l)) = &task.kind
                && l.mode == super::LoadMode::Append
            {
                out.push(format!(
                    "{}: tasks.{}.mode: an append load in a scheduled job adds a date's rows again whenever that date runs again (sluice clear, a backfill); use mode = \"delete_insert\" with delete_where = \"dt = '{{{{ ds }}}}'\", or \"upsert\", if re-runs should replace them",
                    self.file.display(),
                    task.id
                ));
            }
        }
        out
    }

    /// The data interval whose logical date falls on `date` (in the job's
    /// timezone): it starts at the first schedule tick on that day and ends
    /// at the next tick. A job without a schedule, or whose schedule does
    /// not tick that day, gets the whole day.
    pub fn interval_for_date(&self, date: NaiveDate) -> (DateTime<Tz>, DateTime<Tz>) {
        let midnight = |d: NaiveDate| {
            let naive = d.and_hms_opt(0, 0, 0).expect("midnight exists");
            self.timezone
                .from_local_datetime(&naive)
                .earliest()
                .unwrap_or_else(|| self.timezone.from_utc_datetime(&naive))
        };
        let day_start = midnight(date);
        let day_end = midnight(date.succ_opt().unwrap_or(date));
        if let Some(schedule) = &self.schedule {
            // At the edge of the calendar there is no second before.
            if let Some(just_before) = day_start.checked_sub_signed(chrono::Duration::seconds(1))
                && let Some(tick) = schedule.next_after(&just_before).filter(|t| *t < day_end)
                && let Some(next) = schedule.next_after(&tick)
            {
                return (tick, next);
            }
        }
        (day_start, day_end)
    }

    /// The context a manual run for `date` renders its templates with.
    pub fn manual_context(&self, date: NaiveDate) -> RunContext {
        let (start, end) = self.interval_for_date(date);
        RunContext {
            run_id: format!(
                "manual__{}",
                start.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
            ),
            data_interval_start: start,
            data_interval_end: end,
            params: self.params.clone(),
            try_number: 1,
            hostname: String::new(),
        }
    }
}

/// Reads and validates one job file.
pub fn load_job(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Job> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_job(&text, path, env)
}

/// Reads every `*.toml` job in `dir`, in name order. Returns the jobs that
/// are valid and the errors of those that are not; two files naming the
/// same job is an error.
pub fn load_jobs_dir(
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Vec<Job>, Vec<Error>)> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut jobs: Vec<Job> = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match load_job(&file, env) {
            Ok(job) => {
                if let Some(other) = jobs.iter().find(|j| j.name == job.name) {
                    errors.push(Error::config(
                        &file,
                        "name",
                        format!(
                            "job \"{}\" is already defined in {}",
                            job.name,
                            other.file.display()
                        ),
                    ));
                } else {
                    jobs.push(job);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    Ok((jobs, errors))
}

/// Parses job file text; `file` names it in errors and locates `.sql` files.
pub fn parse_job(text: &str, file: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Job> {
    let value = read_toml(text, file, env).map_err(Error::Config)?;
    let raw: RawJob = deserialize_at(value, file, "").map_err(|e| Error::Config(vec![e]))?;
    let mut errors: Vec<ConfigError> = Vec::new();
    let err = |key: &str, m: String| ConfigError::new(file, key, m);

    let name = raw.name.clone().unwrap_or_else(|| {
        file.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        errors.push(err(
            "name",
            format!("job name \"{name}\" may hold only letters, digits, _, - and ."),
        ));
    }
    let timezone: Tz = match raw.timezone.as_deref().unwrap_or("UTC").parse() {
        Ok(tz) => tz,
        Err(_) => {
            errors.push(err(
                "timezone",
                format!(
                    "unknown timezone \"{}\"; expected an IANA name such as UTC or Asia/Seoul",
                    raw.timezone.as_deref().unwrap_or_default()
                ),
            ));
            Tz::UTC
        }
    };
    let mode = match raw.mode.as_deref() {
        None | Some("batch") => JobMode::Batch,
        Some("stream") => JobMode::Stream,
        Some(other) => {
            errors.push(err(
                "mode",
                format!("unknown mode \"{other}\"; expected \"batch\" or \"stream\""),
            ));
            JobMode::Batch
        }
    };
    if mode == JobMode::Stream {
        for (key, set) in [
            ("schedule", raw.schedule.is_some()),
            ("start", raw.start.is_some()),
            ("end", raw.end.is_some()),
            ("catchup", raw.catchup.is_some()),
            ("max_active_runs", raw.max_active_runs.is_some()),
            ("sla", raw.sla.is_some()),
        ] {
            if set {
                errors.push(err(
                    key,
                    "a stream job runs while the daemon runs: it has no schedule, runs or logical dates".into(),
                ));
            }
        }
    }
    let schedule = raw.schedule.as_deref().and_then(|s| {
        Schedule::parse(s)
            .map_err(|m| errors.push(err("schedule", m)))
            .ok()
    });
    let mut moment = |key: &str, text: Option<&str>| {
        text.and_then(|t| match parse_moment(t, timezone) {
            Some(m) => Some(m),
            None => {
                errors.push(err(
                    key,
                    format!("invalid date \"{t}\"; expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS"),
                ));
                None
            }
        })
    };
    let start = moment("start", raw.start.as_deref());
    let end = moment("end", raw.end.as_deref());
    let sla = raw.sla.as_deref().and_then(|s| {
        crate::units::parse_duration(s)
            .map_err(|m| errors.push(err("sla", m)))
            .ok()
    });
    let timeout = raw.timeout.as_deref().and_then(|s| {
        crate::units::parse_duration(s)
            .map_err(|m| errors.push(err("timeout", m)))
            .ok()
    });
    let defaults = TaskDefaults {
        retries: raw.retries.unwrap_or(0),
        retry_delay: duration_or(
            raw.retry_delay.as_deref(),
            Duration::from_secs(30),
            "retry_delay",
            file,
            &mut errors,
        )
        .unwrap_or_default(),
        max_retry_delay: duration_or(
            raw.max_retry_delay.as_deref(),
            Duration::from_secs(3600),
            "max_retry_delay",
            file,
            &mut errors,
        )
        .unwrap_or_default(),
        timeout,
    };
    if raw.max_active_runs == Some(0) {
        errors.push(err("max_active_runs", "must be at least 1".into()));
    }
    let params = serde_json::to_value(&raw.params).unwrap_or(serde_json::Value::Null);
    if raw.tasks.is_empty() {
        errors.push(err(
            "tasks",
            "a job needs at least one task, e.g. [tasks.hits]".into(),
        ));
    }

    let job_dir = file.parent().unwrap_or(Path::new("."));
    // A task that failed to parse is reported once, by its own error: a
    // reference to it is not also an "unknown upstream task".
    let declared: Vec<String> = raw.tasks.keys().cloned().collect();
    let mut tasks = Vec::new();
    for (id, value) in raw.tasks {
        if let Some(task) = parse_task(&id, value, file, job_dir, &defaults, &mut errors) {
            tasks.push(task);
        }
    }

    // Runs of a job with an incremental extract take turns: each reads the
    // mark the one before it advanced.
    let incremental = tasks.iter().find(
        |t| matches!(&t.kind, TaskKind::Extract(super::Extract::Sql(q)) if q.incremental.is_some()),
    );
    let max_active_runs = match (raw.max_active_runs, incremental) {
        (Some(n), Some(t)) if n > 1 => {
            errors.push(err(
                "max_active_runs",
                format!(
                    "task {} extracts incrementally, so runs must take turns reading and advancing its mark; set max_active_runs = 1 (the default for such jobs)",
                    t.id
                ),
            ));
            n
        }
        (Some(n), _) => n,
        (None, Some(_)) => 1,
        (None, None) => 16,
    };
    let mut job = Job {
        file: file.to_path_buf(),
        name,
        description: raw.description,
        mode,
        schedule,
        timezone,
        start,
        end,
        catchup: raw.catchup.unwrap_or(false),
        max_active_runs,
        sla,
        params,
        tasks,
        dag: Dag::default(),
    };
    // Templates are rendered once with a sample run so that syntax errors
    // and unknown variables show at load time, not at 2am.
    let sample = job.manual_context(
        job.start
            .map(|s| s.date_naive())
            .unwrap_or(NaiveDate::from_ymd_opt(2000, 1, 1).expect("date")),
    );
    let ids: Vec<String> = job.tasks.iter().map(|t| t.id.clone()).collect();
    let mut nodes = Vec::new();
    for task in &job.tasks {
        let base = format!("tasks.{}", task.id);
        let mut ups: Vec<String> = Vec::new();
        for d in &task.depends_on {
            if ids.contains(d) {
                ups.push(d.clone());
            } else if !declared.contains(d) {
                errors.push(err(
                    &format!("{base}.depends_on"),
                    unknown_task(d, &declared),
                ));
            }
        }
        // SQL keys render as SQL does at run time: a string param must be
        // quoted through the sql filter.
        let render = |key: &str, t: &str, errors: &mut Vec<ConfigError>| -> Option<String> {
            let rendered = if matches!(key, "url" | "path") {
                sample.render(t, "")
            } else {
                sample.render_sql(t, "", crate::template::Dialect::Standard)
            };
            rendered
                .map_err(|e| {
                    let message = match e {
                        Error::Template { message, .. } => format!("template error: {message}"),
                        other => other.to_string(),
                    };
                    errors.push(err(&format!("{base}.{key}"), message))
                })
                .ok()
        };
        let sql_upstreams =
            |key: &str, sql: &str, errors: &mut Vec<ConfigError>, ups: &mut Vec<String>| {
                if let Some(rendered) = render(key, sql, errors) {
                    match crate::sql_refs::tables(&rendered) {
                        Ok(tables) => {
                            for t in tables {
                                if let Some(id) = ids.iter().find(|id| id.eq_ignore_ascii_case(&t))
                                {
                                    ups.push(id.clone());
                                }
                            }
                        }
                        Err(m) => errors.push(err(&format!("{base}.{key}"), m)),
                    }
                }
            };
        match &task.kind {
            TaskKind::Extract(super::Extract::Logs(l)) => {
                render("path", &l.path, &mut errors);
            }
            TaskKind::Extract(super::Extract::Sql(q)) => {
                render("query", &q.query, &mut errors);
            }
            TaskKind::Transform(t) => sql_upstreams("transform", &t.sql, &mut errors, &mut ups),
            TaskKind::Check(c) => sql_upstreams("check", &c.sql, &mut errors, &mut ups),
            TaskKind::Load(l) => {
                let input = l.input();
                if ids.iter().any(|i| i == input) {
                    ups.push(input.to_string());
                } else if !declared.iter().any(|i| i == input) {
                    errors.push(err(
                        &format!("{base}.input"),
                        unknown_task(input, &declared),
                    ));
                }
                match l {
                    super::Load::Parquet(p) => render("url", &p.url, &mut errors),
                    super::Load::Sql(q) => render("table", &q.table, &mut errors),
                };
            }
            TaskKind::Sensor(s) => match &s.kind {
                super::SensorKind::ObjectExists { url, .. } => {
                    render("url", url, &mut errors);
                }
                super::SensorKind::Sql { query, .. } => {
                    render("query", query, &mut errors);
                }
            },
        }
        nodes.push((task.id.clone(), ups));
    }
    if errors.is_empty() {
        match Dag::build(&nodes) {
            Ok(dag) => job.dag = dag,
            Err(e @ DagError::Cycle(_)) => errors.push(err("tasks", e.to_string())),
            Err(e) => errors.push(err("tasks", e.to_string())),
        }
    }
    match job.mode {
        JobMode::Stream if errors.is_empty() => super::stream::check(&job, &mut errors),
        JobMode::Stream => {}
        JobMode::Batch => super::stream::batch_keys(&job, &mut errors),
    }
    if errors.is_empty() {
        Ok(job)
    } else {
        Err(Error::Config(errors))
    }
}

/// The files besides its own that a job file reads (`.sql` files named
/// by `transform`, `check` or `query`), whether or not they exist: the
/// daemon reloads a job when one of them changes, appears or goes. Read
/// from the TOML alone, so a job that does not load has them too.
pub fn job_sources(text: &str, file: &Path) -> Vec<PathBuf> {
    let job_dir = file.parent().unwrap_or(Path::new("."));
    let Ok(table) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let Some(tasks) = table.get("tasks").and_then(|t| t.as_table()) else {
        return out;
    };
    for task in tasks.values().filter_map(|t| t.as_table()) {
        for key in ["transform", "check", "query"] {
            if let Some(path) = task
                .get(key)
                .and_then(|v| v.as_str())
                .and_then(|v| super::task::sql_file(v, job_dir))
                && !out.contains(&path)
            {
                out.push(path);
            }
        }
    }
    out
}

fn unknown_task(name: &str, ids: &[String]) -> String {
    format!(
        "unknown upstream task \"{name}\"; tasks in this job: {}",
        ids.join(", ")
    )
}

fn parse_moment(text: &str, tz: Tz) -> Option<DateTime<Tz>> {
    let naive = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .or_else(|| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").ok())
        .or_else(|| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").ok())?;
    tz.from_local_datetime(&naive).earliest()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Job> {
        parse_job(text, Path::new("configs/jobs/x.toml"), &|_| None)
    }

    const GOOD: &str = r#"
schedule = "0 2 * * *"
timezone = "Asia/Seoul"
[tasks.hits]
extract = "logs"
path = "data/access-{{ ds_nodash }}.log"
format = "nginx_combined"
[tasks.daily]
transform = "SELECT count(*) AS n FROM hits"
[tasks.publish]
load = "parquet"
input = "daily"
url = "file:///tmp/out/"
"#;

    #[test]
    fn edges_come_from_sql_and_inputs() {
        let job = parse(GOOD).unwrap();
        assert_eq!(job.name, "x");
        assert_eq!(job.dag.upstream["daily"], vec!["hits"]);
        assert_eq!(job.dag.upstream["publish"], vec!["daily"]);
        assert_eq!(job.dag.order, vec!["hits", "daily", "publish"]);
    }

    #[test]
    fn interval_for_a_date_uses_the_schedule() {
        let job = parse(GOOD).unwrap();
        let ctx = job.manual_context(NaiveDate::from_ymd_opt(2026, 11, 24).unwrap());
        assert_eq!(
            ctx.render("{{ ts }}|{{ data_interval_end }}", "t").unwrap(),
            "2026-11-24T02:00:00+09:00|2026-11-25T02:00:00+09:00"
        );
    }

    #[test]
    fn unknown_format_lists_valid_ones() {
        let err = parse(&GOOD.replace("nginx_combined", "nginx")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configs/jobs/x.toml: tasks.hits.format: unknown format \"nginx\"; expected one of jsonl, csv, nginx_combined, apache_combined, regex"
        );
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let err = parse(&GOOD.replace("format =", "fromat =")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("configs/jobs/x.toml: tasks.hits.fromat: unknown key; expected one of"),
            "{msg}"
        );
    }

    #[test]
    fn key_of_another_kind_is_refused() {
        let err = parse(&GOOD.replace(
            "transform = \"SELECT count(*) AS n FROM hits\"",
            "transform = \"SELECT 1 FROM hits\"\nformat = \"csv\"",
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("tasks.daily.format: unknown key"),
            "{err}"
        );
    }

    #[test]
    fn cycle_and_unknown_upstream() {
        let cyc = GOOD.replace("FROM hits", "FROM publish");
        let err = parse(&cyc).unwrap_err().to_string();
        assert!(err.contains("configs/jobs/x.toml: tasks: cycle: "), "{err}");
        let unknown = GOOD.replace("input = \"daily\"", "input = \"dayly\"");
        let err = parse(&unknown).unwrap_err().to_string();
        assert!(
            err.contains("tasks.publish.input: unknown upstream task \"dayly\""),
            "{err}"
        );
    }

    #[test]
    fn a_string_param_in_sql_must_be_quoted_by_the_sql_filter() {
        let text =
            "[params]\nwho = \"a\"\n[tasks.q]\ntransform = \"SELECT '{{ params.who }}' AS who\"\n";
        let err = parse_job(text, Path::new("j.toml"), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("j.toml: tasks.q.transform: template error")
                && err.contains("through the sql filter"),
            "{err}"
        );
        let quoted = text.replace("'{{ params.who }}'", "{{ params.who | sql }}");
        assert!(parse_job(&quoted, Path::new("j.toml"), &|_| None).is_ok());
        // Outside SQL a param is text as it is.
        let path = "[params]\nwho = \"a\"\n[tasks.t]\nextract = \"logs\"\npath = \"x/{{ params.who }}/*.log\"\nformat = \"jsonl\"\n";
        assert!(parse_job(path, Path::new("j.toml"), &|_| None).is_ok());
    }

    #[test]
    fn an_append_load_in_a_scheduled_job_is_a_warning() {
        let text = "schedule = \"@daily\"\n[tasks.src]\ncheck = \"SELECT true\"\n[tasks.t]\nextract = \"logs\"\npath = \"x/*.log\"\nformat = \"jsonl\"\n[tasks.db]\nload = \"sql\"\ninput = \"t\"\nconnection = \"sqlite://x.db\"\ntable = \"t\"\n";
        let job = parse_job(text, Path::new("j.toml"), &|_| None).unwrap();
        let w = job.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("j.toml: tasks.db.mode: an append load"),
            "{w:?}"
        );
        let upsert = text.replace("table = \"t\"", "table = \"t\"\nmode = \"replace\"");
        assert!(
            parse_job(&upsert, Path::new("j.toml"), &|_| None)
                .unwrap()
                .warnings()
                .is_empty()
        );
        let manual = text.replace("schedule = \"@daily\"\n", "");
        assert!(
            parse_job(&manual, Path::new("j.toml"), &|_| None)
                .unwrap()
                .warnings()
                .is_empty()
        );
    }

    #[test]
    fn a_missing_sql_file_is_the_only_error() {
        let dir = tempfile::tempdir().unwrap();
        let text = "[tasks.hits]\ncheck = \"SELECT true\"\n[tasks.daily]\ntransform = \"sql/daily.sql\"\n[tasks.publish]\nload = \"parquet\"\ninput = \"daily\"\nurl = \"file:///tmp/x/\"\ndepends_on = [\"daily\"]\n";
        let err = parse_job(text, &dir.path().join("j.toml"), &|_| None).unwrap_err();
        let errors = err.config_errors();
        assert_eq!(errors.len(), 1, "{err}");
        assert_eq!(errors[0].key, "tasks.daily.transform");
        assert!(errors[0].message.contains("cannot read SQL file"), "{err}");
        assert!(!err.to_string().contains("unknown upstream"), "{err}");
    }

    #[test]
    fn bad_template_and_cron_are_reported_together() {
        let bad = GOOD
            .replace("{{ ds_nodash }}", "{{ ds_nodsh }}")
            .replace("0 2 * * *", "0 25 * * *");
        let err = parse(&bad).unwrap_err();
        let errors = err.config_errors();
        assert_eq!(errors.len(), 2, "{err}");
        assert_eq!(errors[0].key, "schedule");
        assert_eq!(errors[1].key, "tasks.hits.path");
    }
}
