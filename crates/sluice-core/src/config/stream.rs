//! The shape of a stream job (`mode = "stream"`): one `logs` extract
//! following local files, SQL transforms in a chain applied to each
//! micro-batch, and one Parquet load. The stream keys
//! (`target_file_size`, `max_file_age`, `max_buffer_bytes`) belong to
//! stream jobs alone.

use super::job::Job;
use super::{Extract, Load, LogFormat, TaskKind};
use crate::error::ConfigError;

/// Adds what makes `job` (a stream job whose DAG was built) not runnable
/// as a stream.
pub(super) fn check(job: &Job, errors: &mut Vec<ConfigError>) {
    let err = |key: String, m: String| ConfigError::new(&job.file, key, m);
    let (mut extracts, mut loads) = (0, 0);
    for task in &job.tasks {
        let base = format!("tasks.{}", task.id);
        match &task.kind {
            TaskKind::Extract(Extract::Logs(l)) => {
                extracts += 1;
                let remote = l.connection.is_some()
                    || (l.path.contains("://") && !l.path.starts_with("file://"));
                if remote {
                    errors.push(err(
                        format!("{base}.path"),
                        "a stream follows local files (a path or file:// URL): files in object storage do not grow".into(),
                    ));
                }
                if l.path.contains("{{") {
                    errors.push(err(
                        format!("{base}.path"),
                        "a stream has no logical date to fill templates with".into(),
                    ));
                }
                let infers = matches!(l.format, LogFormat::Jsonl | LogFormat::Csv { .. });
                if infers && l.schema.is_none() {
                    errors.push(err(
                        format!("{base}.schema"),
                        "a stream needs its schema declared: inferred from whatever file comes first, it could change between restarts".into(),
                    ));
                }
            }
            TaskKind::Transform(_) => {}
            TaskKind::Load(Load::Parquet(_)) => loads += 1,
            _ => errors.push(err(
                base,
                "a stream job holds a logs extract, SQL transforms and one Parquet load".into(),
            )),
        }
        let ups = &job.dag.upstream[&task.id];
        let downs = &job.dag.downstream[&task.id];
        if ups.len() > 1 || downs.len() > 1 {
            errors.push(err(
                format!("tasks.{}", task.id),
                format!(
                    "a stream is a chain, each task reading the one before it; this one reads {} and is read by {}",
                    list(ups),
                    list(downs)
                ),
            ));
        }
    }
    if extracts != 1 || loads != 1 {
        errors.push(err(
            "tasks".into(),
            format!(
                "a stream job has exactly one logs extract and one Parquet load; this one has {extracts} and {loads}"
            ),
        ));
    }
}

fn list(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
    }
}

/// Adds an error for each stream key of a batch job.
pub(super) fn batch_keys(job: &Job, errors: &mut Vec<ConfigError>) {
    for task in &job.tasks {
        let keys: &[(&str, bool)] = match &task.kind {
            TaskKind::Load(Load::Parquet(p)) => &[
                ("target_file_size", p.target_file_size.is_some()),
                ("max_file_age", p.max_file_age.is_some()),
            ],
            TaskKind::Extract(Extract::Logs(l)) => {
                &[("max_buffer_bytes", l.max_buffer_bytes.is_some())]
            }
            _ => &[],
        };
        for (key, set) in keys {
            if *set {
                errors.push(ConfigError::new(
                    &job.file,
                    format!("tasks.{}.{key}", task.id),
                    "only stream jobs (mode = \"stream\") roll files and buffer input; a batch load writes files of max_file_size",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{JobMode, parse_job};
    use std::path::Path;

    fn parse(text: &str) -> Result<crate::config::Job, String> {
        parse_job(text, Path::new("/jobs/tail.toml"), &|_| None).map_err(|e| e.to_string())
    }

    const STREAM: &str = r#"
mode = "stream"
[tasks.lines]
extract = "logs"
path = "/var/log/nginx/access.log*"
format = "nginx_combined"
max_buffer_bytes = "32MiB"
[tasks.ok]
transform = "SELECT * FROM lines WHERE status < 500"
[tasks.lake]
load = "parquet"
input = "ok"
url = "lake/nginx/"
partition_by = ["dt", "hour"]
target_file_size = "128MiB"
max_file_age = "5m"
"#;

    #[test]
    fn the_design_example_is_a_stream() {
        let job = parse(STREAM).unwrap();
        assert_eq!(job.mode, JobMode::Stream);
        assert!(job.is_stream() && job.schedule.is_none());
    }

    #[test]
    fn a_stream_has_no_schedule() {
        let text = STREAM.replace(
            "mode = \"stream\"",
            "mode = \"stream\"\nschedule = \"@daily\"",
        );
        let e = parse(&text).unwrap_err();
        assert!(e.contains("schedule") && e.contains("no schedule"), "{e}");
    }

    #[test]
    fn stream_keys_are_refused_in_a_batch_job() {
        let text = STREAM.replace("mode = \"stream\"\n", "");
        let e = parse(&text).unwrap_err();
        assert!(e.contains("tasks.lake.target_file_size"), "{e}");
        assert!(e.contains("tasks.lake.max_file_age"), "{e}");
        assert!(e.contains("tasks.lines.max_buffer_bytes"), "{e}");
    }

    #[test]
    fn a_stream_follows_local_files_with_a_declared_schema() {
        let text = STREAM
            .replace("/var/log/nginx/access.log*", "s3://logs/access.log*")
            .replace("nginx_combined", "jsonl");
        let e = parse(&text).unwrap_err();
        assert!(
            e.contains("tasks.lines.path") && e.contains("local files"),
            "{e}"
        );
        assert!(e.contains("tasks.lines.schema"), "{e}");
    }

    #[test]
    fn a_stream_is_a_chain_ending_in_one_parquet_load() {
        let text = format!("{STREAM}\n[tasks.check]\ncheck = \"SELECT count(*) > 0 FROM ok\"\n");
        let e = parse(&text).unwrap_err();
        assert!(e.contains("tasks.check"), "{e}");
        assert!(e.contains("is read by lake, check"), "{e}");
        let e = parse(&STREAM.replace("mode = \"stream\"", "mode = \"streaming\"")).unwrap_err();
        assert!(e.contains("unknown mode \"streaming\""), "{e}");
    }
}
