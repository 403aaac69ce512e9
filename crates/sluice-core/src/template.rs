//! Templating of paths, URLs and SQL with minijinja, using Airflow's
//! variable names. The logical date is the start of the data interval.
//! `ds` and `ds_nodash` are the logical date in the job's timezone; `ts`
//! and the interval bounds are ISO 8601 with their UTC offset.

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
        minijinja::context! {
            ds => self.ds(),
            ds_nodash => self.data_interval_start.format("%Y%m%d").to_string(),
            ts => iso(&self.data_interval_start),
            ts_nodash => self.data_interval_start.format("%Y%m%dT%H%M%S").to_string(),
            logical_date => iso(&self.data_interval_start),
            data_interval_start => iso(&self.data_interval_start),
            data_interval_end => iso(&self.data_interval_end),
            run_id => self.run_id.clone(),
            params => minijinja::Value::from_serialize(&self.params),
        }
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

fn env() -> &'static minijinja::Environment<'static> {
    static ENV: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        // A misspelt variable must fail the task, not render as "".
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env
    })
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
        }
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
