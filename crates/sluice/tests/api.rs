//! The REST API of a running `sluice serve`, route by route: what each
//! answers, and the token, 404, 400 and 409 cases; and the OpenAPI
//! document against the routes the server really serves.

mod common;

use common::http;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const TOKEN: &str = "t0ken-for-tests";

fn setup(dir: &Path) {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    std::fs::write(
        dir.join("sluice.toml"),
        format!(
            "jobs = \"{d}/jobs\"\nstate = \"sqlite://{d}/state.db\"\nstaging = \"file://{d}/staging\"\n\
             listen = \"127.0.0.1:0\"\napi_token = \"{TOKEN}\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("jobs/hello.toml"),
        format!(
            r#"schedule = "@daily"
[params]
who = "world"

[tasks.greet]
transform = "SELECT {{{{ params.who | sql }}}} AS who, '{{{{ ds }}}}' AS ds"

[tasks.out]
load = "parquet"
input = "greet"
url = "file://{d}/out/"
"#
        ),
    )
    .unwrap();
    // A job whose SQL takes a trigger's param, on a database with a
    // table the param will try to drop.
    common::python_script(
        "import sqlite3, sys\ndb = sqlite3.connect(sys.argv[1])\n\
         db.execute('CREATE TABLE x (name TEXT)')\ndb.execute(\"INSERT INTO x VALUES ('a')\")\ndb.commit()",
        &[&dir.join("app.db").display().to_string()],
    );
    std::fs::write(
        dir.join("jobs/lookup.toml"),
        format!(
            r#"[params]
who = "a"

[tasks.found]
extract = "sql"
connection = "sqlite://{d}/app.db"
query = "SELECT name FROM x WHERE name = {{{{ params.who | sql }}}}"

[tasks.out]
load = "parquet"
input = "found"
url = "file://{d}/found/"
"#
        ),
    )
    .unwrap();
}

/// Starts `sluice serve` with extra environment variables and waits until
/// it is ready; the process and the address it listens on.
fn serve(dir: &Path, vars: &[(&str, &str)]) -> (Child, String) {
    common::serve_ready(
        common::sluice(dir)
            .arg("--config")
            .arg(dir.join("sluice.toml"))
            .arg("serve")
            .envs(vars.iter().copied()),
        &dir.join("serve.log"),
    )
}

const AUTH: &str = "Authorization: Bearer t0ken-for-tests";

/// A call with the token; the status and the JSON body.
fn call(addr: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = http(
        method,
        addr,
        path,
        &[AUTH, "Content-Type: application/json"],
        body,
    );
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

/// Polls a run until its state is one of `states`; the run.
fn wait_run(addr: &str, dag: &str, run_id: &str, states: &[&str]) -> Value {
    let t0 = Instant::now();
    loop {
        let (status, run) = call(
            addr,
            "GET",
            &format!("/api/v1/dags/{dag}/runs/{run_id}"),
            "",
        );
        assert_eq!(status, 200, "{run}");
        if states.iter().any(|s| run["state"] == *s) {
            return run;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "run never {states:?}: {run}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_route_answers_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let (mut daemon, addr) = serve(dir.path(), &[]);
    // The job is loaded once the API lists it.
    let t0 = Instant::now();
    loop {
        let (status, dags) = call(&addr, "GET", "/api/v1/dags", "");
        assert_eq!(status, 200, "{dags}");
        if dags.as_array().is_some_and(|a| !a.is_empty()) {
            assert_eq!(dags[0]["dag_id"], "hello");
            assert_eq!(dags[0]["schedule"], "@daily");
            assert!(dags[0]["next_run_at"].is_string(), "{dags}");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(100));
    }

    // 401 without the token and with a wrong one, on reads and writes.
    for (method, path) in [
        ("GET", "/api/v1/dags"),
        ("POST", "/api/v1/dags/hello/pause"),
    ] {
        let (status, body) = http(method, &addr, path, &[], "");
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert!(body.contains("\"status\":401"), "{body}");
        let (status, _) = http(method, &addr, path, &["Authorization: Bearer nope"], "");
        assert_eq!(status, 401, "{method} {path} with a wrong token");
    }

    // Which replica answers: the id its start line gives, which is also
    // what task instances name as their `hostname`.
    let (status, me) = call(&addr, "GET", "/api/v1/replica", "");
    assert_eq!(status, 200, "{me}");
    let serve_log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    let started = serve_log
        .lines()
        .find(|l| l.contains("sluice serving"))
        .unwrap();
    let id = me["replica_id"].as_str().unwrap();
    assert!(id.ends_with(&format!("-{}", daemon.id())), "{me}");
    assert!(
        started.contains(&format!("\"replica\":\"{id}\"")),
        "{started}"
    );
    assert_eq!(
        me["state_store"],
        format!("sqlite://{}/state.db", dir.path().display())
    );
    assert_eq!(http("GET", &addr, "/api/v1/replica", &[], "").0, 401);

    // The DAG.
    let (status, dag) = call(&addr, "GET", "/api/v1/dags/hello", "");
    assert_eq!(status, 200);
    assert_eq!(dag["tasks"][0]["task_id"], "greet");
    assert_eq!(dag["tasks"][1]["upstream"], serde_json::json!(["greet"]));
    assert_eq!(call(&addr, "GET", "/api/v1/dags/nope", "").0, 404);

    // Pause first, so that only the triggered run runs.
    let (status, paused) = call(&addr, "POST", "/api/v1/dags/hello/pause", "");
    assert_eq!(
        (status, paused["is_paused"].clone()),
        (200, Value::Bool(true))
    );
    assert_eq!(call(&addr, "POST", "/api/v1/dags/nope/pause", "").0, 404);

    // Trigger: 400 for a bad body or date, 201, then 409 for the same date.
    assert_eq!(
        call(&addr, "POST", "/api/v1/dags/hello/runs", "{not json").0,
        400
    );
    assert_eq!(
        call(
            &addr,
            "POST",
            "/api/v1/dags/hello/runs",
            r#"{"logical_date": "24/11/2026"}"#
        )
        .0,
        400
    );
    assert_eq!(
        call(
            &addr,
            "POST",
            "/api/v1/dags/hello/runs",
            r#"{"date": "2026-11-24"}"#
        )
        .0,
        400,
        "unknown fields are refused"
    );
    let (status, run) = call(
        &addr,
        "POST",
        "/api/v1/dags/hello/runs",
        r#"{"logical_date": "2026-11-24", "params": {"who": "api"}}"#,
    );
    assert_eq!(status, 201, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_string();
    let (status, again) = call(
        &addr,
        "POST",
        "/api/v1/dags/hello/runs",
        r#"{"logical_date": "2026-11-24"}"#,
    );
    assert_eq!(status, 409, "{again}");
    assert_eq!(call(&addr, "POST", "/api/v1/dags/nope/runs", "").0, 404);

    // A paused job's run waits; unpaused, it runs.
    let (status, _) = call(&addr, "POST", "/api/v1/dags/hello/unpause", "");
    assert_eq!(status, 200);
    let done = wait_run(&addr, "hello", &run_id, &["success"]);
    let tis = done["task_instances"].as_array().unwrap();
    assert_eq!(tis.len(), 2);
    assert_eq!(tis[0]["task_id"], "greet");
    assert_eq!(tis[1]["state"], "success");
    assert_eq!(tis[1]["rows_out"], 1);
    assert_eq!(
        tis[1]["hostname"], me["replica_id"],
        "the replica that ran it"
    );
    assert_eq!(
        call(&addr, "GET", "/api/v1/dags/hello/runs/nope", "").0,
        404
    );

    // Runs, paged and filtered.
    let (status, page) = call(
        &addr,
        "GET",
        "/api/v1/dags/hello/runs?state=success&limit=10",
        "",
    );
    assert_eq!(status, 200, "{page}");
    assert!(
        page["dag_runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["run_id"] == run_id.as_str())
    );
    assert!(page["total_entries"].as_i64().unwrap() >= 1);
    assert_eq!(
        call(&addr, "GET", "/api/v1/dags/hello/runs?state=bogus", "").0,
        400
    );
    assert_eq!(
        call(&addr, "GET", "/api/v1/dags/hello/runs?limit=0", "").0,
        400
    );
    assert_eq!(
        call(&addr, "GET", "/api/v1/dags/hello/runs?limit=x", "").0,
        400
    );
    assert_eq!(call(&addr, "GET", "/api/v1/dags/nope/runs", "").0, 404);

    // A task's log.
    let (status, log) = call(
        &addr,
        "GET",
        &format!("/api/v1/dags/hello/runs/{run_id}/tasks/out/logs"),
        "",
    );
    assert_eq!(status, 200, "{log}");
    assert_eq!(log["try_number"], 1);
    // The attempt's own lines, from the daemon and from the engine (the
    // Parquet sink's "published", logged inside the attempt's span), in
    // the order they happened.
    let messages: Vec<&str> = log["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap_or(""))
        .collect();
    let at = |needle: &str| {
        messages
            .iter()
            .position(|m| m.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}: {messages:?}"))
    };
    assert!(at("attempt 1 started") < at("published"), "{messages:?}");
    assert!(at("published") < at("succeeded"), "{messages:?}");
    assert!(messages[at("published")].contains("rows=1"), "{messages:?}");
    assert_eq!(
        call(
            &addr,
            "GET",
            &format!("/api/v1/dags/hello/runs/{run_id}/tasks/nope/logs"),
            ""
        )
        .0,
        404
    );

    // Clear: the task runs again (and what it reads, the run having
    // succeeded); clearing it again while it is waiting is a 409 — or it
    // has already run again, in which case the second clear succeeds.
    let (status, cleared) = call(
        &addr,
        "POST",
        &format!("/api/v1/dags/hello/runs/{run_id}/tasks/out/clear"),
        r#"{"downstream": true}"#,
    );
    assert_eq!(status, 200, "{cleared}");
    assert_eq!(cleared["task_ids"], serde_json::json!(["greet", "out"]));
    assert_eq!(
        call(
            &addr,
            "POST",
            &format!("/api/v1/dags/hello/runs/{run_id}/tasks/out/clear"),
            "{\"x\": 1}"
        )
        .0,
        400
    );
    assert_eq!(
        call(
            &addr,
            "POST",
            &format!("/api/v1/dags/hello/runs/{run_id}/tasks/nope/clear"),
            ""
        )
        .0,
        404
    );
    let rerun = wait_run(&addr, "hello", &run_id, &["success"]);
    assert_eq!(rerun["task_instances"][1]["try_number"], 2, "{rerun}");

    // Mark failed: only a run that has not ended.
    assert_eq!(
        call(
            &addr,
            "POST",
            &format!("/api/v1/dags/hello/runs/{run_id}/fail"),
            ""
        )
        .0,
        409
    );
    call(&addr, "POST", "/api/v1/dags/hello/pause", "");
    let (_, queued) = call(
        &addr,
        "POST",
        "/api/v1/dags/hello/runs",
        r#"{"logical_date": "2026-11-20"}"#,
    );
    let queued_id = queued["run_id"].as_str().unwrap();
    let (status, failed) = call(
        &addr,
        "POST",
        &format!("/api/v1/dags/hello/runs/{queued_id}/fail"),
        "",
    );
    assert_eq!(
        (status, failed["state"].clone()),
        (200, Value::from("failed")),
        "{failed}"
    );
    assert_eq!(
        call(&addr, "POST", "/api/v1/dags/hello/runs/nope/fail", "").0,
        404
    );

    // Every route the document lists is served: its paths, with real
    // values in them, reach a handler (a routing miss has no JSON body).
    let (status, doc) = call(&addr, "GET", "/api/v1/openapi.json", "");
    assert_eq!(status, 200);
    let mut listed = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            listed.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    listed.sort();
    assert_eq!(
        listed,
        [
            "GET /dags",
            "GET /dags/{dag}",
            "GET /dags/{dag}/runs",
            "GET /dags/{dag}/runs/{run_id}",
            "GET /dags/{dag}/runs/{run_id}/tasks/{task}/logs",
            "GET /replica",
            "GET /streams",
            "POST /dags/{dag}/pause",
            "POST /dags/{dag}/runs",
            "POST /dags/{dag}/runs/{run_id}/fail",
            "POST /dags/{dag}/runs/{run_id}/tasks/{task}/clear",
            "POST /dags/{dag}/unpause",
        ]
    );
    for route in &listed {
        let (method, path) = route.split_once(' ').unwrap();
        let path = format!(
            "/api/v1{}",
            path.replace("{dag}", "zz")
                .replace("{run_id}", "zz")
                .replace("{task}", "zz")
        );
        let (status, body) = http(method, &addr, &path, &[AUTH], "");
        assert!(
            body.starts_with('{') || body.starts_with('['),
            "{route} is not served: {status} {body}"
        );
    }
    // The document is valid OpenAPI 3 (openapi-spec-validator, PyPI).
    let doc_file = dir.path().join("openapi.json");
    std::fs::write(&doc_file, doc.to_string()).unwrap();
    let valid = common::python_script(
        "import json, sys\nfrom openapi_spec_validator import validate\n\
         validate(json.load(open(sys.argv[1])))\nprint('valid')",
        &[&doc_file.display().to_string()],
    );
    assert_eq!(valid.trim(), "valid");
    let (status, _) = http("GET", &addr, "/api/v1/not-a-route", &[AUTH], "");
    assert_eq!(status, 404);

    // Params are data: a trigger's param meant to end the statement and
    // drop a table is a string literal in the query.
    let (status, run) = call(
        &addr,
        "POST",
        "/api/v1/dags/lookup/runs",
        r#"{"logical_date": "2026-11-24", "params": {"who": "'; DROP TABLE x; --"}}"#,
    );
    assert_eq!(status, 201, "{run}");
    let lookup = run["run_id"].as_str().unwrap().to_string();
    let done = wait_run(&addr, "lookup", &lookup, &["success", "failed"]);
    assert_eq!(done["state"], "success", "{done}");
    assert_eq!(done["task_instances"][0]["rows_out"], 0, "{done}");
    let left = common::python_script(
        "import sqlite3, sys\nprint(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM x').fetchone()[0])",
        &[&dir.path().join("app.db").display().to_string()],
    );
    assert_eq!(left.trim(), "1", "the table survived");

    // `sluice trigger` and `sluice clear` go through the daemon's API,
    // with the token from the config.
    assert_eq!(call(&addr, "POST", "/api/v1/dags/hello/unpause", "").0, 200);
    let url = format!("http://{addr}");
    let cli = |args: &[&str], vars: &[(&str, &str)]| {
        common::run(
            common::sluice(dir.path())
                .arg("--config")
                .arg(dir.path().join("sluice.toml"))
                .args(args)
                .envs(vars.iter().copied()),
        )
    };
    let out = cli(
        &["trigger", "hello", "--date", "2026-11-26", "--url", &url],
        &[],
    );
    assert!(out.status.success());
    let said = common::stdout(&out);
    let cli_run = said
        .trim()
        .strip_prefix("queued hello ")
        .unwrap_or_else(|| panic!("{said}"))
        .to_string();
    wait_run(&addr, "hello", &cli_run, &["success"]);
    let out = cli(
        &["trigger", "hello", "--date", "2026-11-26", "--url", &url],
        &[],
    );
    assert!(out.status.success());
    assert!(
        common::stdout(&out).contains("already has a run"),
        "{}",
        common::stdout(&out)
    );
    let out = cli(&["clear", "hello", &cli_run, "out", "--url", &url], &[]);
    assert!(out.status.success());
    assert!(
        common::stdout(&out).contains("cleared hello"),
        "{}",
        common::stdout(&out)
    );
    wait_run(&addr, "hello", &cli_run, &["success"]);
    let out = cli(
        &["trigger", "hello", "--date", "2026-11-27", "--url", &url],
        &[("SLUICE_API_TOKEN", "wrong")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        common::stderr(&out).contains("wrong API token"),
        "{}",
        common::stderr(&out)
    );
    let out = cli(&["clear", "hello", &cli_run, "nope", "--url", &url], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        common::stderr(&out).contains("nope"),
        "{}",
        common::stderr(&out)
    );
    // No daemon there: the command says so and how to go without one.
    let out = cli(&["trigger", "hello", "--url", "http://127.0.0.1:9"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        common::stderr(&out).contains("--local"),
        "{}",
        common::stderr(&out)
    );

    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    assert_eq!(daemon.wait().unwrap().code(), Some(0));
    // The token never reaches the logs.
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(!log.contains(TOKEN), "the API token is in the log");
}

/// A run that fails on a connection whose password came from the
/// environment: the password is in no log line, API answer, metric or
/// UI page.
#[test]
fn a_failing_connections_password_stays_secret() {
    const SECRET: &str = "pw-Zq81-never-shown";
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("jobs/leaky.toml"),
        format!(
            r#"[tasks.pull]
extract = "sql"
connection = "postgres://postgres:${{LEAKY_PASSWORD}}@127.0.0.1:1/test"
query = "SELECT 1 AS x"
retries = 0

[tasks.out]
load = "parquet"
input = "pull"
url = "file://{d}/leaky/"
"#
        ),
    )
    .unwrap();
    let (mut daemon, addr) = serve(dir.path(), &[("LEAKY_PASSWORD", SECRET)]);
    let (status, run) = call(
        &addr,
        "POST",
        "/api/v1/dags/leaky/runs",
        r#"{"logical_date": "2026-11-24"}"#,
    );
    assert_eq!(status, 201, "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_string();
    let failed = wait_run(&addr, "leaky", &run_id, &["failed"]);
    let error = failed["task_instances"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(!error.is_empty(), "the failure is explained: {failed}");
    let mut seen = vec![failed.to_string()];
    for path in [
        "/api/v1/dags".to_string(),
        "/api/v1/dags/leaky".to_string(),
        "/api/v1/dags/leaky/runs".to_string(),
        format!("/api/v1/dags/leaky/runs/{run_id}/tasks/pull/logs"),
        format!("/api/v1/dags/leaky/runs/{run_id}/tasks/out/logs"),
        "/metrics".to_string(),
        // The web UI's pages (the token signs them in as the cookie does).
        "/".to_string(),
        "/ui/dags/leaky".to_string(),
        format!("/ui/dags/leaky/runs/{run_id}"),
        format!("/ui/dags/leaky/runs/{run_id}/tasks/pull/log"),
        format!("/ui/dags/leaky/runs/{run_id}/tasks/out/log"),
    ] {
        let (status, body) = http("GET", &addr, &path, &[AUTH], "");
        assert_eq!(status, 200, "{path}: {body}");
        seen.push(body);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    assert_eq!(daemon.wait().unwrap().code(), Some(0));
    seen.push(std::fs::read_to_string(dir.path().join("serve.log")).unwrap());
    for text in &seen {
        assert!(!text.contains(SECRET), "the password leaked:\n{text}");
    }
}

/// schemathesis (PyPI) generates requests from the live daemon's OpenAPI
/// document, with the token: no answer is a 5xx, a status the document
/// does not list, or a body that breaks its schema; and the daemon still
/// serves afterwards.
#[test]
fn schemathesis_finds_no_server_error_or_undocumented_answer() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let (mut daemon, addr) = serve(dir.path(), &[]);
    let t0 = Instant::now();
    while call(&addr, "GET", "/api/v1/dags", "")
        .1
        .as_array()
        .map_or(0, Vec::len)
        < 2
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "jobs never loaded");
        std::thread::sleep(Duration::from_millis(100));
    }
    let schemathesis = common::python().with_file_name("schemathesis");
    let out = common::run(
        Command::new(&schemathesis)
            .arg("run")
            .arg(format!("http://{addr}/api/v1/openapi.json"))
            .args(["--url", &format!("http://{addr}/api/v1")])
            .args(["-H", AUTH])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args(["--max-examples", "30", "--seed", "7", "--workers", "1", "--no-color"])
            .args(["--phases", "examples,coverage,fuzzing"])
            .arg("--report-dir")
            .arg(dir.path().join("schemathesis")),
    );
    assert!(out.status.success(), "schemathesis found failures (above)");
    let (status, _) = common::http_get(&addr, "/healthz");
    assert_eq!(status, 200);
    let (status, dags) = call(&addr, "GET", "/api/v1/dags", "");
    assert_eq!(status, 200, "{dags}");
    daemon.kill().unwrap();
    daemon.wait().unwrap();
}
