#!/usr/bin/env python3
"""Logs -> zstd Parquet: Sluice beside DuckDB, Polars and DataFusion-python,
and the floor (reading the input and doing nothing), in one run.

usage: logs_to_parquet.py --sluice PATH [--mb 1000] [--runs 3] [--data DIR] [--only jsonl|nginx]

For each input (JSONL application logs, nginx access logs; ~--mb MB each,
made by gen_logs.py) every tool converts the file to Parquet (zstd level 3)
with the same column types. Each run is timed from process start to exit;
peak RSS is the child's maximum resident set (one process per tool). The
median of --runs is reported, with MB/s (input bytes / second) and Sluice's
time ratio to the fastest other tool. Outputs are checked for equal row
counts and column types before anything is printed.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))

# Timestamp, int32 status and int64 ids/sizes everywhere: the same types in every tool.
JSONL_COLUMNS = [("ts", "timestamp"), ("level", "string"), ("service", "string"), ("host", "string"),
                 ("user_id", "int64"), ("latency_ms", "float64"), ("status", "int32"),
                 ("path", "string"), ("msg", "string")]

# The combined format as a regex, for the tools that have no nginx parser.
NGINX_RE = (r'^(\S+) \S+ (\S+) \[([^\]]+)\] "(\S+) (\S+) (\S+)" (\d{3}) (\d+) "([^"]*)" "([^"]*)"$')
NGINX_NAMES = ["remote_addr", "remote_user", "time", "method", "path", "protocol", "status", "bytes",
               "referer", "user_agent"]

DUCKDB_JSONL = """
import duckdb, sys
cols = "{ts: 'TIMESTAMPTZ', level: 'VARCHAR', service: 'VARCHAR', host: 'VARCHAR', user_id: 'BIGINT', latency_ms: 'DOUBLE', status: 'INTEGER', path: 'VARCHAR', msg: 'VARCHAR'}"
duckdb.connect().execute(f"COPY (SELECT * FROM read_json('{sys.argv[1]}', format='newline_delimited', columns={cols})) TO '{sys.argv[2]}' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 3)")
"""

POLARS_JSONL = """
import polars as pl, sys
schema = {"ts": pl.String, "level": pl.String, "service": pl.String, "host": pl.String, "user_id": pl.Int64,
          "latency_ms": pl.Float64, "status": pl.Int32, "path": pl.String, "msg": pl.String}
(pl.scan_ndjson(sys.argv[1], schema=schema)
   .with_columns(pl.col("ts").str.to_datetime("%Y-%m-%dT%H:%M:%S%.3fZ", time_unit="us", time_zone="UTC"))
   .sink_parquet(sys.argv[2], compression="zstd", compression_level=3))
"""

DATAFUSION_JSONL = """
import pyarrow as pa, sys
from datafusion import SessionContext
schema = pa.schema([("ts", pa.timestamp("us", tz="UTC")), ("level", pa.string()), ("service", pa.string()),
                    ("host", pa.string()), ("user_id", pa.int64()), ("latency_ms", pa.float64()),
                    ("status", pa.int32()), ("path", pa.string()), ("msg", pa.string())])
ctx = SessionContext()
ctx.register_json("logs", sys.argv[1], schema=schema, file_extension=".jsonl")
ctx.sql(f"COPY (SELECT * FROM logs) TO '{sys.argv[2]}' STORED AS PARQUET OPTIONS ('format.compression' 'zstd(3)')").collect()
"""

DUCKDB_NGINX = """
import duckdb, sys
pat, names = sys.argv[3], sys.argv[4].split(",")
names_list = "[" + ", ".join(f"'{n}'" for n in names) + "]"
duckdb.connect().execute(f'''
COPY (
  WITH lines AS (SELECT line FROM read_csv('{sys.argv[1]}', columns={{'line': 'VARCHAR'}}, header=false,
                                           delim='\\x1f', quote='', escape='', auto_detect=false)),
       m AS (SELECT regexp_extract(line, '{pat}', {names_list}) AS r FROM lines)
  SELECT r.remote_addr, NULLIF(r.remote_user, '-') AS remote_user,
         strptime(r.time, '%d/%b/%Y:%H:%M:%S %z') AS time, r.method, r.path, r.protocol,
         CAST(r.status AS INTEGER) AS status, CAST(r.bytes AS BIGINT) AS bytes,
         NULLIF(r.referer, '-') AS referer, NULLIF(r.user_agent, '-') AS user_agent
  FROM m
) TO '{sys.argv[2]}' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 3)''')
"""

POLARS_NGINX = """
import polars as pl, sys
pat, names = sys.argv[3], sys.argv[4].split(",")
# One regex pass with named groups, as Polars' extract_groups wants.
parts = pat.split("(")
named = parts[0] + "".join("(?P<" + n + ">" + p for n, p in zip(names, parts[1:]))
lines = pl.scan_csv(sys.argv[1], has_header=False, separator="\\x1f", quote_char=None, schema={"line": pl.String})
(lines.select(pl.col("line").str.extract_groups(named).alias("r")).unnest("r")
   .with_columns(pl.col("time").str.strptime(pl.Datetime("us", "UTC"), "%d/%b/%Y:%H:%M:%S %z"),
                 pl.col("status").cast(pl.Int32), pl.col("bytes").cast(pl.Int64),
                 *[pl.when(pl.col(c) == "-").then(None).otherwise(pl.col(c)).alias(c) for c in ("remote_user", "referer", "user_agent")])
   .sink_parquet(sys.argv[2], compression="zstd", compression_level=3))
"""

DATAFUSION_NGINX = """
import pyarrow as pa, sys
from datafusion import SessionContext
pat, names = sys.argv[3], sys.argv[4].split(",")
ctx = SessionContext()
ctx.register_csv("lines", sys.argv[1], schema=pa.schema([("line", pa.string())]), has_header=False,
                 delimiter="\\x1f", file_extension=".log")
m = "regexp_match(line, '" + pat.replace("'", "''") + "')"
cols = {n: f"{m}[{i + 1}]" for i, n in enumerate(names)}
ctx.sql(f'''COPY (SELECT {cols["remote_addr"]} AS remote_addr, nullif({cols["remote_user"]}, '-') AS remote_user,
  to_timestamp_micros({cols["time"]}, '%d/%b/%Y:%H:%M:%S %z') AS time, {cols["method"]} AS method,
  {cols["path"]} AS path, {cols["protocol"]} AS protocol, CAST({cols["status"]} AS INT) AS status,
  CAST({cols["bytes"]} AS BIGINT) AS bytes, nullif({cols["referer"]}, '-') AS referer,
  nullif({cols["user_agent"]}, '-') AS user_agent FROM lines)
  TO '{sys.argv[2]}' STORED AS PARQUET OPTIONS ('format.compression' 'zstd(3)')''').collect()
"""

VERIFY = """
import json, sys, pyarrow.dataset as ds
d = ds.dataset(sys.argv[1], format="parquet")
print(json.dumps({"rows": d.count_rows(), "types": {f.name: str(f.type) for f in d.schema}}))
"""


def sluice_job(kind, src, out_dir):
    schema = ", ".join(f'{n} = "{t}"' for n, t in JSONL_COLUMNS)
    extract = (f'format = "jsonl"\nschema = {{ {schema} }}' if kind == "jsonl" else 'format = "nginx_combined"')
    return f"""
[tasks.logs]
extract = "logs"
path = "{src}"
{extract}

[tasks.out]
load = "parquet"
input = "logs"
url = "file://{out_dir}/"
compression = "zstd"
compression_level = 3
"""


def timed(cmd, cwd=None):
    """Runs cmd; returns (seconds, peak RSS in MB)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"{cmd[:3]} failed ({p.returncode}):\n{err[-3000:]}")
    return dt, usage.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--python", default=sys.executable, help="Python with duckdb, polars, datafusion, pyarrow")
    ap.add_argument("--mb", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--data", default="/tmp/sluice-bench")
    ap.add_argument("--only", choices=["jsonl", "nginx"])
    args = ap.parse_args()
    os.makedirs(args.data, exist_ok=True)
    py = args.python
    sizes = {"jsonl": 255, "nginx": 171}  # bytes per generated line, near enough
    results = {}
    for kind in ("jsonl", "nginx"):
        if args.only and kind != args.only:
            continue
        lines = args.mb * 1_000_000 // sizes[kind]
        src = os.path.join(args.data, f"input-{lines}.{'jsonl' if kind == 'jsonl' else 'log'}")
        if not os.path.exists(src):
            print(f"generating {src} ({lines} lines)…", file=sys.stderr)
            subprocess.run([sys.executable, os.path.join(HERE, "gen_logs.py"), kind, str(lines), src], check=True)
        size_mb = os.path.getsize(src) / 1e6
        out = lambda tool: os.path.join(args.data, "out", f"{kind}-{tool}")
        job_dir = os.path.join(args.data, "jobs")
        os.makedirs(job_dir, exist_ok=True)
        job = os.path.join(job_dir, f"bench_{kind}.toml")
        with open(job, "w") as f:
            f.write(sluice_job(kind, src, out("sluice")))
        script = {"jsonl": (DUCKDB_JSONL, POLARS_JSONL, DATAFUSION_JSONL),
                  "nginx": (DUCKDB_NGINX, POLARS_NGINX, DATAFUSION_NGINX)}[kind]
        extra = [] if kind == "jsonl" else [NGINX_RE, ",".join(NGINX_NAMES)]
        tools = {
            "floor (cat)": (["sh", "-c", f"cat '{src}' > /dev/null"], None),
            "Sluice": ([args.sluice, "run", job, "--date", "2024-01-01"], None),
            "DuckDB": ([py, "-c", script[0], src, out("duckdb") + "/data.parquet", *extra], "duckdb"),
            "Polars": ([py, "-c", script[1], src, out("polars") + "/data.parquet", *extra], "polars"),
            "DataFusion-python": ([py, "-c", script[2], src, out("datafusion") + "/data.parquet", *extra], "datafusion"),
        }
        subprocess.run(["cat", src], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
        times = {name: [] for name in tools}
        rss = {name: 0.0 for name in tools}
        for _ in range(args.runs):
            for name, (cmd, tag) in tools.items():
                o = out(tag or "sluice")
                if name != "floor (cat)":
                    shutil.rmtree(o, ignore_errors=True)
                    os.makedirs(o, exist_ok=True)
                subprocess.run(["sync"])
                dt, peak = timed(cmd, cwd=args.data)
                times[name].append(dt)
                rss[name] = max(rss[name], peak)
        # Same rows and types from every tool.
        checks = {}
        for name, (_, tag) in tools.items():
            if name == "floor (cat)":
                continue
            r = subprocess.run([py, "-c", VERIFY, out(tag or "sluice")], capture_output=True, text=True, check=True)
            checks[name] = json.loads(r.stdout)
        rows = {c["rows"] for c in checks.values()}
        if len(rows) != 1:
            sys.exit(f"{kind}: tools disagree on row counts: { {n: c['rows'] for n, c in checks.items()} }")
        results[kind] = dict(size_mb=size_mb, rows=rows.pop(), times=times, rss=rss, types=checks)
        med = {n: statistics.median(t) for n, t in times.items()}
        peers = {n: t for n, t in med.items() if n not in ("Sluice", "floor (cat)")}
        fastest = min(peers, key=peers.get)
        print(f"\n{kind}: {size_mb:.0f} MB, {results[kind]['rows']:,} rows, median of {args.runs}")
        print(f"{'tool':<20} {'seconds':>8} {'MB/s':>8} {'peak RSS MB':>12}")
        for n in tools:
            print(f"{n:<20} {med[n]:>8.2f} {size_mb / med[n]:>8.0f} {rss[n]:>12.0f}")
        print(f"Sluice time / fastest peer ({fastest}): {med['Sluice'] / peers[fastest]:.2f}  "
              f"(Sluice is {peers[fastest] / med['Sluice']:.2f}x its speed)")
    with open(os.path.join(args.data, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
