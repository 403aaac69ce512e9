#!/usr/bin/env python3
"""PostgreSQL table -> zstd Parquet: Sluice (1 and 2 partitions) beside
DuckDB's postgres extension and ConnectorX + pyarrow, with the floor (the
server's binary COPY of the table into /dev/null), in one run.

usage: pg_to_parquet.py --sluice PATH [--rows 5000000] [--runs 3] [--db sluice_bench]

The table is seeded by pg_events.sql into its own database on the local
PostgreSQL (127.0.0.1:5432, user postgres) when it is missing or has another
row count. Each tool is timed from process start to exit; peak RSS is the
child's maximum resident set. The median of --runs is printed with rows/s
and each tool's time as a multiple of the floor's. Outputs are checked for
equal row counts, id sums and column types before anything is printed.
"""
import argparse, glob, json, os, shutil, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))

DUCKDB = """
import duckdb, glob, os, sys
import duckdb_extension_postgres_scanner as m
ext = glob.glob(os.path.join(os.path.dirname(m.__file__), "extensions", "*", "postgres_scanner.duckdb_extension"))[0]
con = duckdb.connect()
con.execute(f"LOAD '{ext}'")
con.execute(f"ATTACH 'host=127.0.0.1 port=5432 user=postgres dbname={sys.argv[1]}' AS pg (TYPE postgres, READ_ONLY)")
con.execute(f"COPY (SELECT * FROM pg.public.events) TO '{sys.argv[2]}' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 3)")
"""

CONNECTORX = """
import connectorx as cx, pyarrow.parquet as pq, sys
url, out, parts = sys.argv[1], sys.argv[2], int(sys.argv[3])
kw = dict(partition_on="id", partition_num=parts) if parts > 1 else {}
t = cx.read_sql(url, "SELECT * FROM events", return_type="arrow", **kw)
pq.write_table(t, out, compression="zstd", compression_level=3)
"""

VERIFY = """
import json, sys, pyarrow.dataset as ds, pyarrow.compute as pc
d = ds.dataset(sys.argv[1], format="parquet")
t = d.to_table(columns=["id"])
print(json.dumps({"rows": t.num_rows, "id_sum": pc.sum(t.column("id")).as_py(),
                  "types": {f.name: str(f.type) for f in d.schema}}))
"""


def sluice_job(db, partitions, out_dir):
    extra = f'partition_on = "id"\npartitions = {partitions}\n' if partitions > 1 else ""
    return f"""
[tasks.events]
extract = "sql"
connection = "postgres://postgres@127.0.0.1:5432/{db}"
query = "SELECT * FROM events"
{extra}
[tasks.out]
load = "parquet"
input = "events"
url = "file://{out_dir}/"
compression = "zstd"
compression_level = 3
"""


def timed(cmd, cwd=None, shell=False):
    """Runs cmd; returns (seconds, peak RSS in MB)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{str(cmd)[:200]} failed ({code}):\n{err[-3000:]}")
    return dt, usage.ru_maxrss / 1024


def psql(db, *args):
    return subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-Atq", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--python", default=sys.executable, help="Python with duckdb 1.5.5 + its postgres scanner, connectorx, pyarrow")
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--db", default="sluice_bench")
    ap.add_argument("--data", default="/tmp/sluice-pgbench")
    ap.add_argument("--only", help="run only the tools whose name contains this")
    args = ap.parse_args()
    os.makedirs(args.data, exist_ok=True)
    if psql("postgres", "-c", f"SELECT 1 FROM pg_database WHERE datname = '{args.db}'") != "1":
        psql("postgres", "-c", f"CREATE DATABASE {args.db}")
    # (count(*) in the same statement would fail to plan without the table)
    have = -1
    if psql(args.db, "-c", "SELECT to_regclass('events') IS NOT NULL") == "t":
        have = psql(args.db, "-c", "SELECT count(*) FROM events")
    if int(have) != args.rows:
        print(f"seeding events with {args.rows:,} rows…", file=sys.stderr)
        psql(args.db, "-v", f"rows={args.rows}", "-f", os.path.join(HERE, "pg_events.sql"))
    url = f"postgresql://postgres@127.0.0.1:5432/{args.db}"
    out = lambda tool: os.path.join(args.data, "out", tool)
    jobs = os.path.join(args.data, "jobs")
    os.makedirs(jobs, exist_ok=True)
    for p in (1, 2):
        with open(os.path.join(jobs, f"pg_events_{p}.toml"), "w") as f:
            f.write(sluice_job(args.db, p, out(f"sluice-{p}")))
    py = args.python
    copy = f"COPY events TO STDOUT (FORMAT binary)"
    tools = {
        "floor (binary COPY)": (f"psql -h 127.0.0.1 -U postgres -d {args.db} -c '{copy}' > /dev/null", None),
        "Sluice": ([args.sluice, "run", os.path.join(jobs, "pg_events_1.toml"), "--date", "2024-01-01"], "sluice-1"),
        "Sluice, 2 partitions": ([args.sluice, "run", os.path.join(jobs, "pg_events_2.toml"),
                                  "--date", "2024-01-01"], "sluice-2"),
        "DuckDB": ([py, "-c", DUCKDB, args.db, out("duckdb") + "/data.parquet"], "duckdb"),
        "ConnectorX": ([py, "-c", CONNECTORX, url, out("connectorx-1") + "/data.parquet", "1"], "connectorx-1"),
        "ConnectorX, 2 partitions": ([py, "-c", CONNECTORX, url, out("connectorx-2") + "/data.parquet", "2"], "connectorx-2"),
    }
    if args.only:
        tools = {n: t for n, t in tools.items() if args.only.lower() in n.lower() or n.startswith("floor")}
    subprocess.run(tools["floor (binary COPY)"][0], shell=True, check=True)  # warm the buffer cache
    times = {name: [] for name in tools}
    rss = {name: 0.0 for name in tools}
    for _ in range(args.runs):
        for name, (cmd, tag) in tools.items():
            if tag:
                shutil.rmtree(out(tag), ignore_errors=True)
                os.makedirs(out(tag), exist_ok=True)
            subprocess.run(["sync"])
            dt, peak = timed(cmd, cwd=args.data, shell=isinstance(cmd, str))
            times[name].append(dt)
            rss[name] = max(rss[name], peak)
    checks = {}
    for name, (_, tag) in tools.items():
        if tag:
            r = subprocess.run([py, "-c", VERIFY, out(tag)], capture_output=True, text=True, check=True)
            checks[name] = json.loads(r.stdout)
    sums = {(c["rows"], c["id_sum"]) for c in checks.values()}
    if len(sums) != 1:
        sys.exit(f"tools disagree on rows or id sums: { {n: (c['rows'], c['id_sum']) for n, c in checks.items()} }")
    rows = sums.pop()[0]
    med = {n: statistics.median(t) for n, t in times.items()}
    floor = med["floor (binary COPY)"]
    print(f"\nPostgreSQL events -> Parquet: {rows:,} rows, median of {args.runs}")
    print(f"{'tool':<26} {'seconds':>8} {'rows/s':>11} {'× floor':>8} {'peak RSS MB':>12}")
    for n in tools:
        print(f"{n:<26} {med[n]:>8.2f} {rows / med[n]:>11,.0f} {med[n] / floor:>8.2f} {rss[n]:>12.0f}")
    for n, c in checks.items():
        print(f"  {n}: " + ", ".join(f"{k} {v}" for k, v in c["types"].items()))
    with open(os.path.join(args.data, "results.json"), "w") as f:
        json.dump(dict(rows=rows, times=times, rss=rss, types={n: c["types"] for n, c in checks.items()}), f, indent=1)


if __name__ == "__main__":
    main()
