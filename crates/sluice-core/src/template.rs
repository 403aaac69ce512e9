//! Templating of paths, URLs and SQL with minijinja, using Airflow's
//! variable names. The logical date is the start of the data interval.
//! `ds` and `ds_nodash` are the logical date in the job's timezone; `ts`
//! and the interval bounds are ISO 8601 with their UTC offset.
//!
//! SQL is rendered apart ([`RunContext::render_sql`]): there a string from
//! `params` (which a trigger may set to anything) is refused unless it
//! goes through the `sql` filter, which writes it as a quoted literal for
//! the target's dialect (`{{ params.country | sql }}` → `'KR'`). Numbers,
//! booleans and the run's own values (`ds`, `ts`, …) render as they are.
//!
//! `ti.try_number` and `ti.hostname` (Airflow's names) are the attempt
//! and the replica that runs it, so a task can record which execution
//! wrote its rows. The host name comes from the environment, so in SQL it
//! too goes through `| sql`.

use crate::error::{Error, Result};
use chrono::{DateTime, SecondsFormat};
use chrono_tz::Tz;
use std::sync::OnceLock;

/// The values a run's templates see.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub data_interval_start: DateTime<Tz>,
    pub data_interval_end: DateTime<Tz>,
    pub run_id: String,
    pub params: serde_json::Value,
    /// The attempt being run: 1 for the first, counting up with retries
    /// and re-runs after a lost claim.
    pub try_number: i64,
    /// The replica that runs the attempt (`host-pid`); empty outside one.
    pub hostname: String,
}

impl RunContext {
    /// The logical date: the start of the data interval.
    pub fn logical_date(&self) -> DateTime<Tz> {
        self.data_interval_start
    }

    pub fn ds(&self) -> String {
        self.data_interval_start.format("%Y-%m-%d").to_string()
    }

    /// A short key for this run's logical date, safe in file names.
    pub fn date_key(&self) -> String {
        self.data_interval_start
            .with_timezone(&chrono::Utc)
            .format("%Y%m%dT%H%M%SZ")
            .to_string()
    }

    fn values(&self) -> minijinja::Value {
        let iso = |t: &DateTime<Tz>| t.to_rfc3339_opts(SecondsFormat::Secs, false);
        // Dates and run ids are Sluice's own, in fixed forms: safe in SQL.
        let own = minijinja::Value::from_safe_string;
        minijinja::context! {
            ds => own(self.ds()),
            ds_nodash => own(self.data_interval_start.format("%Y%m%d").to_string()),
            ts => own(iso(&self.data_interval_start)),
            ts_nodash => own(self.data_interval_start.format("%Y%m%dT%H%M%S").to_string()),
            logical_date => own(iso(&self.data_interval_start)),
            data_interval_start => own(iso(&self.data_interval_start)),
            data_interval_end => own(iso(&self.data_interval_end)),
            run_id => own(self.run_id.clone()),
            params => minijinja::Value::from_serialize(&self.params),
            ti => minijinja::context! {
                try_number => self.try_number,
                hostname => self.hostname.clone(),
            },
        }
    }

    /// Renders SQL for `dialect`: a string parameter must pass through
    /// `| sql`, which quotes it; see the module's comment.
    pub fn render_sql(&self, template: &str, context: &str, dialect: Dialect) -> Result<String> {
        if !template.contains("{{") && !template.contains("{%") {
            return Ok(template.to_string());
        }
        sql_env(dialect)
            .render_str(template, self.values())
            .map_err(|e| Error::Template {
                context: context.to_string(),
                message: describe(&e),
            })
    }

    /// Renders `template`; `context` names what is rendered (file and key)
    /// in the error.
    pub fn render(&self, template: &str, context: &str) -> Result<String> {
        if !template.contains("{{") && !template.contains("{%") {
            return Ok(template.to_string());
        }
        env()
            .render_str(template, self.values())
            .map_err(|e| Error::Template {
                context: context.to_string(),
                message: describe(&e),
            })
    }
}

/// How a SQL string literal is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// DataFusion, PostgreSQL, SQLite: quotes doubled, backslashes as is.
    Standard,
    /// MySQL and MariaDB, where a backslash escapes in a string literal.
    MySql,
}

fn base_env(dialect: Dialect) -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    // A misspelt variable must fail the task, not render as "".
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.add_filter("sql", move |v: minijinja::Value| sql_literal(&v, dialect));
    env
}

fn env() -> &'static minijinja::Environment<'static> {
    static ENV: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| base_env(Dialect::Standard))
}

fn sql_env(dialect: Dialect) -> &'static minijinja::Environment<'static> {
    static STANDARD: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    static MYSQL: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    let cell = match dialect {
        Dialect::Standard => &STANDARD,
        Dialect::MySql => &MYSQL,
    };
    cell.get_or_init(|| {
        let mut env = base_env(dialect);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Custom("sql"));
        env.set_formatter(|out, _state, value| {
            use minijinja::value::ValueKind;
            let plain = value.is_safe()
                || matches!(
                    value.kind(),
                    ValueKind::Number | ValueKind::Bool | ValueKind::None
                );
            if !plain {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!(
                        "the value {value:?} would reach SQL as it is; write it through the sql \
                         filter, which quotes it (`{{{{ params.name | sql }}}}` gives 'text')"
                    ),
                ));
            }
            write!(out, "{value}").map_err(|e| {
                minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())
            })
        });
        env
    })
}

/// `value` as a SQL literal: a quoted string, a number, TRUE/FALSE, NULL.
fn sql_literal(
    value: &minijinja::Value,
    dialect: Dialect,
) -> std::result::Result<minijinja::Value, minijinja::Error> {
    use minijinja::value::ValueKind;
    let text = match value.kind() {
        ValueKind::None => "NULL".to_string(),
        ValueKind::Bool => if value.is_true() { "TRUE" } else { "FALSE" }.to_string(),
        ValueKind::Number => value.to_string(),
        ValueKind::String => {
            let s = value.as_str().unwrap_or_default();
            let mut quoted = s.replace('\'', "''");
            if dialect == Dialect::MySql {
                quoted = quoted.replace('\\', "\\\\");
            }
            format!("'{quoted}'")
        }
        other => {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("the sql filter takes a string, number, boolean or none, not {other}"),
            ));
        }
    };
    Ok(minijinja::Value::from_safe_string(text))
}

fn describe(e: &minijinja::Error) -> String {
    let mut message = e
        .detail()
        .map(str::to_string)
        .unwrap_or_else(|| e.kind().to_string());
    if let Some(line) = e.line() {
        message = format!("line {line}: {message}");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ctx() -> RunContext {
        let tz: Tz = "Asia/Seoul".parse().unwrap();
        RunContext {
            data_interval_start: tz.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).unwrap(),
            data_interval_end: tz.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap(),
            run_id: "manual__2026-11-24".into(),
            params: serde_json::json!({"country": "KR"}),
            try_number: 2,
            hostname: "pod-7".into(),
        }
    }

    #[test]
    fn task_instance_values() {
        let c = ctx();
        assert_eq!(
            c.render("{{ ti.try_number }}@{{ ti.hostname }}", "t")
                .unwrap(),
            "2@pod-7"
        );
        let sql = |t: &str| c.render_sql(t, "t", Dialect::Standard);
        assert_eq!(
            sql("SELECT {{ ti.try_number }}, {{ ti.hostname | sql }}").unwrap(),
            "SELECT 2, 'pod-7'"
        );
        // A host name is the environment's, not Sluice's: quoted or refused.
        assert!(sql("SELECT '{{ ti.hostname }}'").is_err());
    }

    #[test]
    fn airflow_names() {
        let c = ctx();
        assert_eq!(
            c.render("{{ ds }} {{ ds_nodash }}", "t").unwrap(),
            "2026-11-24 20261124"
        );
        assert_eq!(
            c.render("{{ ts }}", "t").unwrap(),
            "2026-11-24T00:00:00+09:00"
        );
        assert_eq!(
            c.render("{{ data_interval_end }}", "t").unwrap(),
            "2026-11-25T00:00:00+09:00"
        );
        assert_eq!(
            c.render("{{ params.country }}/{{ run_id }}", "t").unwrap(),
            "KR/manual__2026-11-24"
        );
        assert_eq!(c.date_key(), "20261123T150000Z");
    }

    #[test]
    fn params_reach_sql_only_quoted() {
        let mut c = ctx();
        c.params = serde_json::json!({"who": "x'; DROP TABLE t; --", "n": 3, "path": "a\\b"});
        let sql = |t: &str, d| c.render_sql(t, "job.toml: tasks.a.query", d);
        let err = sql("SELECT '{{ params.who }}'", Dialect::Standard).unwrap_err();
        assert!(err.to_string().contains("through the sql filter"), "{err}");
        assert_eq!(
            sql("SELECT {{ params.who | sql }}", Dialect::Standard).unwrap(),
            "SELECT 'x''; DROP TABLE t; --'"
        );
        assert_eq!(
            sql("{{ params.path | sql }}", Dialect::Standard).unwrap(),
            "'a\\b'"
        );
        assert_eq!(
            sql("{{ params.path | sql }}", Dialect::MySql).unwrap(),
            "'a\\\\b'"
        );
        assert_eq!(
            sql(
                "WHERE dt = '{{ ds }}' LIMIT {{ params.n }}",
                Dialect::Standard
            )
            .unwrap(),
            "WHERE dt = '2026-11-24' LIMIT 3"
        );
        // Paths and URLs are not SQL: a param renders as it is there.
        assert_eq!(
            c.render("{{ params.n }}/{{ params.path }}", "k").unwrap(),
            "3/a\\b"
        );
    }

    #[test]
    fn undefined_is_an_error() {
        let err = ctx()
            .render("x {{ dss }}", "job.toml: tasks.a.path")
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("job.toml: tasks.a.path: template error"),
            "{err}"
        );
        assert!(ctx().render("{{ params.nope }}", "k").is_err());
    }
}
