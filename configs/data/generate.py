#!/usr/bin/env python3
"""Writes the example job's small sample data (deterministic).

usage: python3 configs/data/generate.py

nginx/access-20261124.log.gz  nginx "combined" access log, with two malformed lines
app/app-2026-11-24.jsonl       the application's JSON logs, with one truncated line
"""
import gzip
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
SERVICES = ["users", "orders", "payments", "search", "catalog"]
rng = random.Random(20261124)


def nginx_lines(n):
    lines = []
    for i in range(n):
        sec = i * 86400 // n
        h, m, s = sec // 3600, sec % 3600 // 60, sec % 60
        svc = SERVICES[int(rng.random() ** 1.5 * len(SERVICES))]
        status = rng.choice([200] * 17 + [404, 500, 503])
        method = rng.choice(["GET"] * 4 + ["POST"])
        path = f"/api/v1/{svc}/{rng.randrange(1, 1000)}" if rng.random() < 0.9 else rng.choice(["/", "/healthz", "/static/app.js"])
        size = 0 if status == 503 else rng.randrange(100, 20000)
        ua = rng.choice(["curl/8.4.0", "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", "-"])
        ref = rng.choice(["-", "https://example.com/"])
        lines.append(f'10.0.{i % 7}.{i % 250 + 1} - - [24/Nov/2026:{h:02d}:{m:02d}:{s:02d} +0000] '
                     f'"{method} {path} HTTP/1.1" {status} {size} "{ref}" "{ua}"')
    lines.insert(100, "this line is not an access log entry")
    lines.insert(200, '10.0.0.1 - - [24/Nov/2026:25:61:00 +0000] "GET / HTTP/1.1" 200 12 "-" "-"')
    return lines


def app_lines(n):
    lines = []
    for i in range(n):
        sec = i * 86400 // n
        h, m, s = sec // 3600, sec % 3600 // 60, sec % 60
        svc = SERVICES[i % len(SERVICES)]
        status = rng.choice([200] * 9 + [500])
        rec = {
            "ts": f"2026-11-24T{h:02d}:{m:02d}:{s:02d}.{i % 1000:03d}Z",
            "level": "ERROR" if status >= 500 else "INFO",
            "service": svc,
            "status": status,
            "latency_ms": round(rng.lognormvariate(3.0, 0.8), 3),
            "path": f"/api/v1/{svc}/{rng.randrange(1, 1000)}",
            "msg": "request served" if status < 500 else "upstream timed out",
        }
        lines.append(json.dumps(rec, separators=(",", ":")))
    lines.insert(50, '{"ts":"2026-11-24T01:00:00Z","level":"INFO","serv')
    return lines


def main():
    nginx = "\n".join(nginx_lines(600)) + "\n"
    with open(os.path.join(HERE, "nginx", "access-20261124.log.gz"), "wb") as raw:
        # mtime=0 keeps the file byte-identical between runs.
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
            f.write(nginx.encode())
    with open(os.path.join(HERE, "app", "app-2026-11-24.jsonl"), "w") as f:
        f.write("\n".join(app_lines(400)) + "\n")


if __name__ == "__main__":
    main()
