#!/usr/bin/env python3
"""Seeded generators for the log benchmarks.

usage: gen_logs.py jsonl|nginx LINES OUT [SEED]

jsonl: application logs, one object per line with the fields
       ts (RFC 3339, ms, UTC), level, service, host, user_id (int or null),
       latency_ms (3 decimals), status, path, msg — ~270 bytes a line, with a
       few escaped quotes, tabs, newlines and non-ASCII text in msg.
nginx: "combined" access-log lines, ~210 bytes a line, all well-formed.

The same LINES and SEED give the same bytes (stdlib random only).
"""
import json
import random
import sys
import time

SERVICES = ["gateway", "auth", "users", "orders", "payments", "inventory", "shipping", "search",
            "catalog", "cart", "pricing", "reviews", "billing", "fraud", "reports", "email"]
LEVELS = ["DEBUG", "INFO", "INFO", "INFO", "INFO", "WARN", "ERROR"]
STATUSES = [200] * 30 + [201, 204, 301, 304, 304, 400, 401, 403, 404, 404, 429, 500, 502, 503]
WORDS = ("request served cache miss upstream timeout retry user order payment token session "
         "database replica primary shard quota window latency slow fast degraded healthy").split()
ODD = ['said "hi"', "tab\there", "caf\u00e9 cr\u00e8me", "\u65e5\u672c\u8a9e", "line\nbreak", "back\\slash"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
METHODS = ["GET"] * 16 + ["POST"] * 3 + ["PUT", "DELETE", "HEAD"]
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "curl/8.4.0", "python-requests/2.31.0", "Go-http-client/1.1", "kube-probe/1.28", "-",
]
REFERERS = ["-", "-", "-", "https://www.google.com/", "https://example.com/pricing", "https://news.ycombinator.com/"]


def jsonl(n, out, rng):
    base = 1704067200  # 2024-01-01T00:00:00Z
    hosts = [f"{s}-{i:03d}" for s in ("web", "api", "worker") for i in range(60)]
    ms = 0
    buf = []
    for _ in range(n):
        ms += rng.randrange(35)
        t = time.gmtime(base + ms // 1000)
        ts = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{ms % 1000:03d}Z"
        status = rng.choice(STATUSES)
        level = "ERROR" if status >= 500 else rng.choice(LEVELS)
        uid = "null" if rng.random() < 0.15 else str(rng.randrange(1, 2_000_000))
        svc = SERVICES[int(rng.random() ** 2 * len(SERVICES))]
        path = f"/api/v1/{svc}/{rng.randrange(1, 10_000_000)}" + (f"/items?page={rng.randrange(50)}" if rng.random() < 0.3 else "")
        words = [rng.choice(WORDS) for _ in range(4 + rng.randrange(14))]
        msg = " ".join(words)
        if rng.random() < 0.02:
            msg += " " + rng.choice(ODD)
        buf.append(
            '{"ts":"%s","level":"%s","service":"%s","host":"%s","user_id":%s,"latency_ms":%.3f,'
            '"status":%d,"path":"%s","msg":%s}\n'
            % (ts, level, svc, rng.choice(hosts), uid, rng.lognormvariate(3.0, 1.0), status, path,
               json.dumps(msg, ensure_ascii=False)))
        if len(buf) >= 50_000:
            out.write("".join(buf))
            buf.clear()
    out.write("".join(buf))


def nginx(n, out, rng):
    base = 1698796800  # 2023-11-01T00:00:00Z
    ips = [f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}" for _ in range(20_000)]
    ms = 0
    buf = []
    for _ in range(n):
        ms += rng.randrange(35)
        t = time.gmtime(base + ms // 1000)
        when = f"{t.tm_mday:02d}/{MONTHS[t.tm_mon - 1]}/{t.tm_year:04d}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
        r = rng.random()
        if r < 0.35:
            path = f"/static/js/app.{rng.randrange(1 << 32):08x}.js"
        elif r < 0.55:
            path = rng.choice(["/", "/pricing", "/docs/getting-started", "/blog", "/login"])
        else:
            path = f"/api/v1/{rng.choice(SERVICES)}/{rng.randrange(1, 5_000_000)}?page={rng.randrange(200)}"
        status = rng.choice(STATUSES)
        size = 0 if status in (204, 304) else rng.randrange(40, 400_000)
        user = "-" if rng.random() < 0.97 else rng.choice(["alice", "bob", "carol"])
        buf.append(f'{ips[int(rng.random() ** 2 * len(ips))]} - {user} [{when}] "{rng.choice(METHODS)} {path} '
                   f'{rng.choice(["HTTP/1.1", "HTTP/1.1", "HTTP/2.0"])}" {status} {size} "{rng.choice(REFERERS)}" '
                   f'"{rng.choice(AGENTS)}"\n')
        if len(buf) >= 50_000:
            out.write("".join(buf))
            buf.clear()
    out.write("".join(buf))


def main():
    kind, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 42)
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        {"jsonl": jsonl, "nginx": nginx}[kind](n, out, rng)


if __name__ == "__main__":
    main()
