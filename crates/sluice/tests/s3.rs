//! Reads logs from and writes Parquet to a real S3-compatible server
//! (moto's, over HTTP on a random local port), with staging on S3 too, and
//! reads the result back with pyarrow's own S3 client.

mod common;
use common::*;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// moto's S3 server, stopped on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(python())
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto_server (pip package moto[server])");
    let moto = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    moto
}

const BOTO: &str = r#"
import boto3, sys
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", aws_access_key_id="test",
                  aws_secret_access_key="test-secret", region_name="us-east-1")
"#;

#[test]
fn logs_from_s3_to_parquet_on_s3() {
    let moto = start_moto();
    let port = moto.port.to_string();
    let dir = scratch_with_configs();
    let raw = dir.path().join("configs/data/nginx/access-20261124.log.gz");
    python_script(
        &format!(
            "{BOTO}s3.create_bucket(Bucket='sluice-test')\ns3.upload_file(sys.argv[2], 'sluice-test', 'raw/nginx/access-20261124.log.gz')"
        ),
        &[&port, raw.to_str().unwrap()],
    );
    std::fs::write(
        dir.path().join("sluice.toml"),
        format!(
            r#"
jobs = "jobs"
staging = "s3://sluice-test/staging"
[connections.lake]
url = "s3://sluice-test"
options = {{ endpoint = "http://127.0.0.1:{port}", allow_http = "true", region = "us-east-1", access_key_id = "test", secret_access_key = "${{TEST_S3_SECRET}}" }}
"#
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    std::fs::write(
        dir.path().join("jobs/s3_traffic.toml"),
        r#"
[tasks.access]
extract = "logs"
path = "lake/raw/nginx/access-{{ ds_nodash }}.log*"
format = "nginx_combined"
on_error = "skip"

[tasks.by_status]
transform = "SELECT CAST(time AS DATE) AS dt, status, count(*) AS hits, sum(bytes) AS bytes FROM access GROUP BY 1, 2"

[tasks.publish]
load = "parquet"
input = "by_status"
url = "lake/out/by_status/"
partition_by = ["dt"]

[tasks.has_200]
check = "SELECT bool_or(status = 200) FROM by_status"
"#,
    )
    .unwrap();

    let out = run(sluice(dir.path())
        .env("TEST_S3_SECRET", "test-secret")
        .args(["run", "s3_traffic", "--date", "2026-11-24"]));
    assert!(out.status.success());
    assert!(!stdout(&out).contains("test-secret") && !stderr(&out).contains("test-secret"));

    let check = format!(
        r#"{BOTO}
import pyarrow.dataset as ds, pyarrow.fs as pafs
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="sluice-test").get("Contents", [])]
fs = pafs.S3FileSystem(access_key="test", secret_key="test-secret", endpoint_override="127.0.0.1:" + sys.argv[1],
                       scheme="http", region="us-east-1")
t = ds.dataset("sluice-test/out/by_status", filesystem=fs, format="parquet", partitioning="hive").to_table()
print(t.num_rows, sum(t.column("hits").to_pylist()), sorted(set(str(d) for d in t.column("dt").to_pylist())))
print("\n".join(sorted(keys)))
"#
    );
    let result = python_script(&check, &[&port]);
    let mut lines = result.lines();
    let summary = lines.next().unwrap();
    // 600 good lines in the sample; statuses 200, 404, 500, 503.
    assert_eq!(summary, "4 600 ['2026-11-24']", "{result}");
    let keys: Vec<&str> = lines.collect();
    assert!(
        keys.iter()
            .any(|k| k.starts_with("out/by_status/dt=2026-11-24/part-s3_traffic-publish-")),
        "{keys:?}"
    );
    assert!(!keys.iter().any(|k| k.contains(".sluice-tmp-")), "{keys:?}");
    assert!(
        !keys.iter().any(|k| k.starts_with("staging/")),
        "staging is emptied after success: {keys:?}"
    );
}
