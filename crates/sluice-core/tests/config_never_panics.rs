//! Job and daemon files are parsed inside the running daemon, so a file
//! that panics the parser would end `sluice serve`. Whatever TOML a user
//! writes must give `Ok` or an error naming what is wrong — never a
//! panic. The generated files mix every key with values that have broken
//! things before: huge and odd durations, dates and cron fields far off,
//! numbers at their limits, broken templates.

use chrono::TimeZone;
use proptest::prelude::*;
use proptest::test_runner::Config;
use sluice_core::config::{DaemonConfig, parse_job};
use sluice_core::schedule::Plan;
use std::path::Path;

/// A TOML string literal holding `s`.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn duration() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        8 => (0u64..100_000).prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => Just("99999999999999999999".to_string()),
        1 => Just("9999999999".to_string()),
        1 => Just("1.5".to_string()),
        1 => Just("".to_string()),
        1 => Just("-1".to_string()),
    ];
    let unit = prop::sample::select(vec![
        "", "ms", "s", "m", "h", "d", "w", "y", "M", "ns", "us", " min", "days", "parsecs", "h30m",
    ]);
    (number, unit).prop_map(|(n, u)| quoted(&format!("{n}{u}")))
}

fn cron() -> impl Strategy<Value = String> {
    let field = prop::sample::select(vec![
        "*", "*/2", "*/0", "0", "1", "59", "60", "99", "1-5", "5-1", "1,15", "MON", "SUN-SAT", "7",
        "8", "L", "?", "1-", "-", "JAN", "2/3", "",
    ]);
    prop_oneof![
        prop::collection::vec(field, 1..8).prop_map(|f| quoted(&f.join(" "))),
        prop::sample::select(vec![
            "@hourly",
            "@daily",
            "@weekly",
            "@monthly",
            "@yearly",
            "@never",
            "@",
            "0 0 31 2 *",
            "0 0 30 2 *",
            "*/2 * * * * *",
            "0 0 29 2 *",
        ])
        .prop_map(quoted),
    ]
}

fn date() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "2026-11-01",
            "0001-01-01",
            "9999-12-31",
            "262143-12-31",
            "+262143-12-31",
            "-0001-01-01",
            "2026-02-30",
            "2026-03-29T02:30:00",
            "2026-11-01T25:00:00",
            "1970-01-01T00:00:00",
            "",
        ])
        .prop_map(quoted),
        (-300_000i32..300_000, 1u32..13, 1u32..32)
            .prop_map(|(y, m, d)| quoted(&format!("{y:04}-{m:02}-{d:02}"))),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_*?{}. /%$:@-]{0,16}".prop_map(|s| quoted(&s)),
        prop::sample::select(vec![
            "{{ ds }}",
            "{{ ds",
            "{% if %}",
            "{{ params.x }}",
            "{{ 1/0 }}",
            "${NOPE}",
            "sql/none.sql",
            "SELECT 1",
            "SELECT * FROM t1",
            "SELEC",
            "x.log*",
            "s3://b/x",
            "file:///tmp/x",
            "postgres://u:p@h/db",
            "::",
            "{{ data_interval_end }}",
        ])
        .prop_map(quoted),
    ]
}

/// Any value a key might be given.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => text(),
        2 => duration(),
        1 => cron(),
        1 => date(),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => prop::sample::select(vec!["0", "1", "-1", "4294967296", "99999999999999999999", "1e400", "nan", "inf"]).prop_map(String::from),
        1 => any::<bool>().prop_map(|b| b.to_string()),
        1 => prop::collection::vec(text(), 0..3).prop_map(|v| format!("[{}]", v.join(", "))),
        1 => prop::sample::select(vec![
            "{ ts = \"timestamp\", n = \"int32\" }", "{ a = \"decimal(99,99)\" }", "{ a = \"wat\" }",
            "{ column = \"id\" }", "{}", "{ start = \"(\" }",
        ]).prop_map(String::from),
    ]
}

/// A value for `key`: mostly one of the kind the key takes (so that many
/// files load and reach the scheduler's date arithmetic), sometimes any.
fn value_for(key: &'static str) -> BoxedStrategy<String> {
    let typed: BoxedStrategy<String> = match key {
        "schedule" => cron().boxed(),
        "timezone" => prop::sample::select(vec!["UTC", "Asia/Seoul", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Pacific/Kiritimati", "Nope/Zone"])
            .prop_map(quoted)
            .boxed(),
        "start" | "end" => prop_oneof![
            3 => (1900i32..2100, 1u32..13, 1u32..29).prop_map(|(y, m, d)| quoted(&format!("{y:04}-{m:02}-{d:02}"))),
            1 => date(),
        ]
        .boxed(),
        "name" | "description" => prop_oneof![3 => "[a-z_]{1,12}".prop_map(|s| quoted(&s)), 1 => text()].boxed(),
        "catchup" | "create" | "header" | "stage" => any::<bool>().prop_map(|b| b.to_string()).boxed(),
        "max_active_runs" | "retries" | "batch_size" | "partitions" | "row_group_size" => {
            prop_oneof![(0i64..20).prop_map(|n| n.to_string()), any::<i64>().prop_map(|n| n.to_string())].boxed()
        }
        "sla" | "retry_delay" | "max_retry_delay" | "timeout" | "poke_interval" | "max_file_age" => duration().boxed(),
        "format" => prop::sample::select(vec!["jsonl", "csv", "nginx_combined", "apache_combined", "regex", "nope"])
            .prop_map(quoted)
            .boxed(),
        "on_error" => prop::sample::select(vec!["fail", "skip", "dead_letter", "explode"]).prop_map(quoted).boxed(),
        "compression" => prop::sample::select(vec!["zstd", "snappy", "none", "zstd(22)", "zstd(99)", "lz4"]).prop_map(quoted).boxed(),
        "target_file_size" | "max_file_size" => prop::sample::select(vec!["128MiB", "1", "0", "99999999TiB", "1.5GB", "x"]).prop_map(quoted).boxed(),
        "depends_on" | "partition_by" | "key" => prop::collection::vec(prop::sample::select(vec!["src", "src", "src", "src", "t0", "nope", "dt"]).prop_map(quoted), 0..3)
            .prop_map(|v| format!("[{}]", v.join(", ")))
            .boxed(),
        "input" => prop::sample::select(vec!["t0", "t1", "t2", "t3", "nope"]).prop_map(quoted).boxed(),
        _ => text().boxed(),
    };
    prop_oneof![12 => typed, 1 => value()].boxed()
}

fn entries(keys: &'static [&'static str], max: usize) -> BoxedStrategy<Vec<String>> {
    prop::collection::vec(
        prop::sample::select(keys)
            .prop_flat_map(|k| value_for(k).prop_map(move |v| format!("{k} = {v}"))),
        0..max,
    )
    .prop_map(|mut lines| {
        // A key twice is a TOML error before anything else is checked.
        let mut seen = std::collections::HashSet::new();
        lines.retain(|l| seen.insert(l.split(" = ").next().unwrap_or_default().to_string()));
        lines
    })
    .boxed()
}

const JOB_KEYS: &[&str] = &[
    "name",
    "description",
    "schedule",
    "timezone",
    "start",
    "end",
    "catchup",
    "max_active_runs",
    "sla",
    "retries",
    "retry_delay",
    "max_retry_delay",
    "timeout",
];

const COMMON_TASK_KEYS: &[&str] = &[
    "timeout",
    "retries",
    "retry_delay",
    "max_retry_delay",
    "depends_on",
    "description",
];

/// One task of each kind, with the keys that kind takes (and, at times,
/// one it does not).
fn task(i: usize) -> BoxedStrategy<String> {
    let kinds: Vec<(&'static str, &'static [&'static str])> = vec![
        (
            "extract = \"logs\"\npath = \"/tmp/none/*.log\"\nformat = \"jsonl\"",
            &["on_error", "schema"],
        ),
        (
            "extract = \"sql\"\nconnection = \"sqlite:///tmp/x.db\"\nquery = \"SELECT 1 AS x\"",
            &["batch_size", "partitions", "incremental"],
        ),
        ("transform = \"SELECT * FROM src\"", &[]),
        (
            "transform = \"SELECT count(*) AS n FROM src GROUP BY 1\"",
            &[],
        ),
        (
            "load = \"parquet\"\ninput = \"src\"\nurl = \"file:///tmp/out/{{ ds }}/\"",
            &[
                "partition_by",
                "compression",
                "row_group_size",
                "max_file_size",
            ],
        ),
        (
            "load = \"sql\"\ninput = \"src\"\nconnection = \"sqlite:///tmp/x.db\"\ntable = \"t\"",
            &["mode", "create", "batch_size"],
        ),
        (
            "sensor = \"object_exists\"\nurl = \"file:///tmp/x\"",
            &["poke_interval"],
        ),
        ("check = \"SELECT true\"", &[]),
        ("check = \"SELECT count(*) > 0 FROM src\"", &[]),
    ];
    prop::sample::select(kinds)
        .prop_flat_map(move |(head, own)| {
            let keys: Vec<&'static str> = own.iter().chain(COMMON_TASK_KEYS).copied().collect();
            let keys: &'static [&'static str] = Box::leak(keys.into_boxed_slice());
            let stray = prop::option::weighted(0.1, (prop::sample::select(TASK_KEYS), value()));
            (entries(keys, 4), stray).prop_map(move |(lines, stray)| {
                let mut text = format!("[tasks.t{i}]\n{head}\n{}\n", lines.join("\n"));
                if let Some((k, v)) = stray
                    && !text.contains(&format!("\n{k} ="))
                {
                    text.push_str(&format!("{k} = {v}\n"));
                }
                text
            })
        })
        .boxed()
}

const TASK_KEYS: &[&str] = &[
    "path",
    "format",
    "on_error",
    "schema",
    "connection",
    "query",
    "batch_size",
    "partitions",
    "partition_on",
    "incremental",
    "input",
    "url",
    "partition_by",
    "compression",
    "row_group_size",
    "mode",
    "key",
    "table",
    "create",
    "delete_where",
    "poke_interval",
    "timeout",
    "retries",
    "retry_delay",
    "max_retry_delay",
    "depends_on",
    "delimiter",
    "header",
    "pattern",
    "regex",
    "timestamp_format",
    "multiline",
    "target_file_size",
    "max_file_age",
    "stage",
    "unknown_key",
];

fn job_text() -> impl Strategy<Value = String> {
    (entries(JOB_KEYS, 6), 1usize..4).prop_flat_map(|(top, n)| {
        let tasks: Vec<BoxedStrategy<String>> = (0..n).map(task).collect();
        tasks.prop_map(move |tasks| {
            format!(
                "{}\n[tasks.src]\nextract = \"logs\"\npath = \"/tmp/none/*.jsonl\"\nformat = \"jsonl\"\n{}",
                top.join("\n"),
                tasks.concat()
            )
        })
    })
}

const DAEMON_KEYS: &[&str] = &[
    "jobs",
    "state",
    "staging",
    "dead_letter",
    "listen",
    "workers",
    "memory_limit",
    "shutdown_grace",
    "api_token",
    "unknown_key",
];

/// What the scheduler does with a job that loaded must not panic either.
fn schedule_everything(job: &sluice_core::config::Job) {
    for date in [
        chrono::NaiveDate::MIN,
        chrono::NaiveDate::MAX,
        chrono::NaiveDate::from_ymd_opt(2026, 3, 29).unwrap(),
    ] {
        let _ = job.manual_context(date);
    }
    if let Some(schedule) = &job.schedule {
        let now = chrono::Utc::now().with_timezone(&job.timezone);
        for catchup in [true, false] {
            let plan = Plan {
                schedule,
                start: job
                    .start
                    .unwrap_or_else(|| job.timezone.timestamp_opt(0, 0).unwrap()),
                end: job.end,
                catchup,
            };
            let _ = plan.due(None, &now, 5);
            let _ = plan.due(Some(&now), &now, 5);
        }
    }
}

const CASES: u32 = 10_000;

#[test]
fn any_job_file_parses_or_is_an_error() {
    let mut runner = proptest::test_runner::TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let loaded = std::cell::Cell::new(0u32);
    runner
        .run(&job_text(), |text| {
            let dir = Path::new("/nonexistent/jobs");
            if let Ok(job) = parse_job(&text, &dir.join("j.toml"), &|_| None) {
                loaded.set(loaded.get() + 1);
                schedule_everything(&job);
            }
            Ok(())
        })
        .unwrap();
    // The generator must reach past the first error: many files load.
    assert!(
        loaded.get() > CASES / 20,
        "only {} of {CASES} generated files loaded",
        loaded.get()
    );
}

proptest! {
    #![proptest_config(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn any_daemon_file_parses_or_is_an_error(
        lines in entries(DAEMON_KEYS, 8),
        connection in prop::option::of((text(), prop::option::of(text()))),
    ) {
        let mut text = lines.join("\n");
        if let Some((url, endpoint)) = connection {
            text.push_str(&format!("\n[connections.c]\nurl = {url}\n"));
            if let Some(e) = endpoint {
                text.push_str(&format!("options = {{ endpoint = {e} }}\n"));
            }
        }
        let _ = DaemonConfig::parse(&text, Path::new("sluice.toml"), &|_| None);
    }
}

#[test]
fn the_durations_that_once_panicked_are_errors_naming_their_key() {
    for (key, line) in [
        ("timeout", "timeout = \"99999999999999999999s\""),
        ("sla", "sla = \"9999999999d\""),
        ("retry_delay", "retry_delay = \"99999999999w\""),
        (
            "tasks.a.poke_interval",
            "[tasks.a]\nsensor = \"object_exists\"\nurl = \"file:///tmp/x\"\npoke_interval = \"9999999999d\"",
        ),
        (
            "tasks.a.timeout",
            "[tasks.a]\ncheck = \"SELECT true\"\ntimeout = \"99999999999999999999s\"",
        ),
    ] {
        let err = parse_job(line, Path::new("j.toml"), &|_| None)
            .expect_err(line)
            .to_string();
        assert!(err.contains(key) && err.contains("j.toml"), "{line}: {err}");
    }
}
