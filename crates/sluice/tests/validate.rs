//! `sluice validate` reports each kind of mistake with the file, the key
//! and what would be valid, and exits 1.

mod common;
use common::*;
use std::path::Path;

const BASE: &str = r#"
schedule = "0 2 * * *"
[tasks.hits]
extract = "logs"
path = "logs/access-{{ ds_nodash }}.log"
format = "nginx_combined"

[tasks.daily]
transform = "SELECT CAST(time AS DATE) AS dt, count(*) AS n FROM hits GROUP BY 1"

[tasks.publish]
load = "parquet"
input = "daily"
url = "file://./out/"
partition_by = ["dt"]
"#;

/// Writes `job` as `jobs/x.toml` and validates it; returns (exit code, output).
fn validate(job: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    std::fs::write(dir.path().join("jobs/x.toml"), job).unwrap();
    let mut cmd = sluice(dir.path());
    cmd.args(["validate", "jobs/x.toml"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    (out.status.code().unwrap(), stdout(&out) + &stderr(&out))
}

#[test]
fn a_valid_job_passes() {
    let (code, out) = validate(BASE, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: 1 job(s), 3 task(s)"), "{out}");
}

#[test]
fn cycle_is_reported_with_its_path() {
    let job = format!(
        "{BASE}\n[tasks.loop_a]\ntransform = \"SELECT * FROM loop_b\"\n[tasks.loop_b]\ntransform = \"SELECT * FROM loop_a\"\n"
    );
    let (code, out) = validate(&job, &[]);
    assert_eq!(code, 1);
    assert!(
        out.contains("jobs/x.toml: tasks: cycle: loop_a -> loop_b -> loop_a"),
        "{out}"
    );
}

#[test]
fn unknown_upstream_is_named() {
    let job = BASE.replace(
        "input = \"daily\"",
        "input = \"dialy\"\ndepends_on = [\"ghost\"]",
    );
    let (code, out) = validate(&job, &[]);
    assert_eq!(code, 1);
    assert!(out.contains("jobs/x.toml: tasks.publish.depends_on: unknown upstream task \"ghost\"; tasks in this job: hits, daily, publish"), "{out}");
    assert!(
        out.contains("jobs/x.toml: tasks.publish.input: unknown upstream task \"dialy\""),
        "{out}"
    );
}

#[test]
fn invalid_cron_expression() {
    let (code, out) = validate(&BASE.replace("0 2 * * *", "0 26 * * *"), &[]);
    assert_eq!(code, 1);
    assert!(
        out.contains("jobs/x.toml: schedule: invalid cron expression \"0 26 * * *\""),
        "{out}"
    );
}

#[test]
fn unknown_key() {
    let (code, out) = validate(&BASE.replace("format = ", "fromat = "), &[]);
    assert_eq!(code, 1);
    assert!(
        out.contains(
            "jobs/x.toml: tasks.hits.fromat: unknown key; expected one of extract, path, format"
        ),
        "{out}"
    );
    let (code, out) = validate(&BASE.replace("nginx_combined", "nginx"), &[]);
    assert_eq!(code, 1);
    assert!(
        out.contains("jobs/x.toml: tasks.hits.format: unknown format \"nginx\"; expected one of jsonl, csv, nginx_combined, apache_combined, regex"),
        "{out}"
    );
}

#[test]
fn sql_error_unknown_table() {
    let job = BASE.replace(
        "FROM hits GROUP BY 1",
        "FROM hits JOIN visitors ON true GROUP BY 1",
    );
    let (code, out) = validate(&job, &[]);
    assert_eq!(code, 1);
    assert!(out.contains("jobs/x.toml: tasks.daily.transform: SQL error: table 'datafusion.public.visitors' not found"), "{out}");
}

#[test]
fn sql_error_unknown_column() {
    let job = BASE.replace("count(*) AS n", "count(referrer) AS n");
    let (code, out) = validate(&job, &[]);
    assert_eq!(code, 1);
    assert!(
        out.contains("jobs/x.toml: tasks.daily.transform: SQL error:"),
        "{out}"
    );
    assert!(out.contains("referrer"), "{out}");
}

#[test]
fn partition_column_must_exist() {
    let (code, out) = validate(
        &BASE.replace("partition_by = [\"dt\"]", "partition_by = [\"day\"]"),
        &[],
    );
    assert_eq!(code, 1);
    assert!(out.contains("jobs/x.toml: tasks.publish.partition_by: column \"day\" is not in daily; its columns: dt, n"), "{out}");
}

#[test]
fn missing_environment_variable() {
    let job = BASE.replace("file://./out/", "file://${OUT_ROOT}/out/");
    let (code, out) = validate(&job, &[]);
    assert_eq!(code, 1);
    assert!(
        out.contains(
            "jobs/x.toml: tasks.publish.url: environment variable \"OUT_ROOT\" is not set"
        ),
        "{out}"
    );
    let (code, out) = validate(&job, &[("OUT_ROOT", "/tmp/x")]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn daemon_config_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sluice.toml"), "wokers = 3\n").unwrap();
    let out = run(sluice(dir.path()).args(["validate", Path::new("jobs").to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("sluice.toml: wokers: unknown key; expected one of jobs, state, staging"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(sluice(dir.path()).args(["run"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn warnings_do_not_fail_validation() {
    // A local staging folder beside a state store replicas share, and an
    // append load in a scheduled job: allowed, but said.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    std::fs::write(
        dir.path().join("sluice.toml"),
        "state = \"postgres://postgres@127.0.0.1:5432/test\"\nstaging = \"file:///srv/staging\"\n",
    )
    .unwrap();
    let job = format!(
        "{BASE}\n[tasks.db]\nload = \"sql\"\ninput = \"daily\"\nconnection = \"sqlite://x.db\"\ntable = \"daily\"\n"
    );
    std::fs::write(dir.path().join("jobs/x.toml"), job).unwrap();
    let out = run(sluice(dir.path()).args(["validate", "jobs/x.toml"]));
    let text = stdout(&out) + &stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("sluice.toml: staging = \"file:///srv/staging\" is a local folder"),
        "{text}"
    );
    assert!(
        text.contains("warning: jobs/x.toml: tasks.db.mode: an append load in a scheduled job"),
        "{text}"
    );
    assert!(text.contains("ok: 1 job(s), 4 task(s)"), "{text}");
}
