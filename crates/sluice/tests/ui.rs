//! The web UI of a daemon that ran the example job: what a browser sees
//! and can do (in headless Chromium, driven by `ui_browser.py`), and the
//! buttons' guards checked over plain HTTP.

mod common;

use common::{http, workspace_root};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const TOKEN: &str = "ui-t0ken-for-tests";
const AUTH: &str = "Authorization: Bearer ui-t0ken-for-tests";
const DAG: &str = "web_traffic_daily";

/// `sluice serve` on the example configs (embedded defaults), on a random
/// port and with an API token; the process and its address.
fn serve(dir: &Path) -> (Child, String) {
    common::serve_ready(
        common::sluice(dir)
            .arg("serve")
            .env("SLUICE_LISTEN", "127.0.0.1:0")
            .env("SLUICE_API_TOKEN", TOKEN),
        &dir.join("serve.log"),
    )
}

fn api(addr: &str, path: &str) -> Value {
    let (status, body) = http("GET", addr, path, &[AUTH], "");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The example job's first run, once it has succeeded.
fn finished_run(addr: &str, dir: &Path) -> String {
    let t0 = Instant::now();
    loop {
        let runs = api(addr, &format!("/api/v1/dags/{DAG}/runs"));
        if let Some(r) = runs["dag_runs"].as_array().and_then(|r| r.first())
            && (r["state"] == "success" || r["state"] == "failed")
        {
            assert_eq!(
                r["state"],
                "success",
                "{r}\n{}",
                std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
            );
            return r["run_id"].as_str().unwrap().to_string();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "no finished run: {runs}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where the screenshots go: `$SLUICE_TEST_ARTIFACTS/ui`, or
/// `target/test-artifacts/ui` in the workspace.
fn artifacts() -> PathBuf {
    std::env::var_os("SLUICE_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/test-artifacts"))
        .join("ui")
}

#[test]
fn a_browser_sees_the_grid_and_its_buttons_work() {
    let dir = common::scratch_with_configs();
    let (mut daemon, addr) = serve(dir.path());
    let run_id = finished_run(&addr, dir.path());

    // Without signing in, pages redirect to the sign-in form and buttons
    // are refused; a post that htmx did not send is refused even with
    // the token (no cross-site form can press a button).
    let (status, _) = http("GET", &addr, "/", &[], "");
    assert_eq!(status, 303);
    let trigger = format!("/ui/dags/{DAG}/trigger");
    let form = "Content-Type: application/x-www-form-urlencoded";
    let (status, body) = http(
        "POST",
        &addr,
        &trigger,
        &["HX-Request: true", form],
        "logical_date=2026-11-20",
    );
    assert_eq!(status, 401, "{body}");
    let (status, body) = http(
        "POST",
        &addr,
        &trigger,
        &[AUTH, form],
        "logical_date=2026-11-20",
    );
    assert_eq!(status, 403, "{body}");
    let runs = api(&addr, &format!("/api/v1/dags/{DAG}/runs"));
    assert_eq!(
        runs["total_entries"], 1,
        "a refused button made a run: {runs}"
    );
    // The assets are served by the daemon itself.
    let (status, js) = http("GET", &addr, "/ui/static/htmx-2.0.11.min.js", &[], "");
    assert_eq!(status, 200);
    assert!(js.contains("htmx"), "{}", &js[..100.min(js.len())]);

    let out = artifacts();
    let browser = Command::new(common::python())
        .arg(workspace_root().join("crates/sluice/tests/ui_browser.py"))
        .args([&format!("http://{addr}"), TOKEN, DAG, &run_id])
        .arg(&out)
        .output()
        .expect("run the browser test");
    let stdout = String::from_utf8_lossy(&browser.stdout);
    let stderr = String::from_utf8_lossy(&browser.stderr);
    let serve_log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert!(
        browser.status.success() && stdout.contains("\nok"),
        "the browser test failed:\n{stdout}\n{stderr}\n--- daemon\n{}",
        serve_log
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for shot in [
        "03-dag.png",
        "04-triggered.png",
        "06-log.png",
        "07-run.png",
        "08-phone.png",
    ] {
        let len = std::fs::metadata(out.join(shot)).map_or(0, |m| m.len());
        assert!(len > 10_000, "{shot}: {len} bytes");
    }
    // The token never reached the daemon's log.
    assert!(!serve_log.contains(TOKEN));
    daemon.kill().unwrap();
    daemon.wait().unwrap();
}
