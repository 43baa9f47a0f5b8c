#!/usr/bin/env python3
"""make bench-safety: safety events per second of ONE parley-safety instance, rule classifier
only, pinned to one CPU core.

What is measured, end to end on the real path: the events wait in the PARLEY_SAFETY stream
(published beforehand with parley-safety-pub while safety is stopped: ten sentences of about
80 bytes, ordinary and harmful mixed, 4 in 10 flagged or blocked); then parley-safety starts,
pinned with taskset to one core, and for each fetched batch decodes the events, classifies
them with the shipped rule set (config/safety), stores every verdict through history in
PostgreSQL (one "safety.store" request per batch) and acknowledges each event to JetStream.
The rate is taken between 10% and 90% of the events stored (parley_safety_events_total), so
start-up is not counted. Also printed: safety's own CPU time over that window (events per
CPU-second of the safety process: what one core would do if history, PostgreSQL and NATS kept
up), and the classifier alone in-process (decode + classify, no bus, no store).

nats-server, PostgreSQL, Redis and parley-history run on the remaining cores of this machine,
so on a small machine the store path competes with them; the figures say which side limits.
Goal (issue 8): at least 5,000 events/s on one core.

BENCH_LOG_LEVEL=debug makes parley-safety log each batch's judge / store / ack times, and
BENCH_KEEP=1 keeps the logs."""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import parley_stack as ps  # noqa: E402

GOAL = 5000


def stored(stack) -> float:
    r = ps.http_request(stack["safety"].admin_url("/metrics"), timeout=2)
    if r is None or r.status != 200:
        return 0.0
    for line in r.text.splitlines():
        if line.startswith('parley_safety_events_total{result="stored"} '):
            return float(line.split()[-1])
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=30000)
    ap.add_argument("--core", type=int, default=0, help="the core parley-safety is pinned to")
    args = ap.parse_args()
    build = ps.default_build_dir()
    tool = build / "bin" / "parley-safety-pub"
    for b in (tool, build / "bin" / "parley-safety", build / "bin" / "parley-history"):
        if not os.access(b, os.X_OK):
            print(f"{b} is missing: run make first", file=sys.stderr)
            return 1
    if not shutil.which("taskset"):
        print("taskset (util-linux) is needed to pin parley-safety to one core", file=sys.stderr)
        return 1

    # In-process: decode + classify only.
    out = subprocess.run(["taskset", "-c", str(args.core), str(tool), "--rules-dir",
                          str(ROOT / "config" / "safety"), "bench-rules", "1000000"],
                         capture_output=True, text=True, check=True).stdout.strip()
    inproc = dict(kv.split("=") for kv in out.split()[1:])

    work = Path(tempfile.mkdtemp(prefix="parley-bench-safety-"))
    os.chmod(work, 0o755)
    stack = ps.Stack(var_dir=work / "stack", ports=ps.Ports.pick_free(), durable=False,
                     die_with_parent=True,
                     log_level=os.environ.get("BENCH_LOG_LEVEL", "warn"))
    try:
        stack.start(["nats", "postgres", "redis", "history", "safety"], timeout=90)
        stack["safety"].stop()  # the stream and consumer exist now; events will wait
        t0 = time.monotonic()
        pub = subprocess.run([str(tool), "--nats", stack.nats_url, "--prefix", "bench",
                              "--user", "bench-user", "publish", str(args.events)],
                             capture_output=True, text=True)
        if pub.returncode != 0:
            print(pub.stdout + pub.stderr, file=sys.stderr)
            return 1
        pub_s = time.monotonic() - t0

        stack.start(["safety"], wait=False)
        pid = stack["safety"].pid()
        subprocess.run(["taskset", "-a", "-c", "-p", str(args.core), str(pid)], check=True,
                       capture_output=True)
        lo, hi = 0.1 * args.events, 0.9 * args.events
        t_lo = t_hi = c_lo = c_hi = None
        n_lo = n_hi = 0.0
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            n = stored(stack)
            now = time.monotonic()
            if t_lo is None and n >= lo:
                t_lo, n_lo, c_lo = now, n, cpu_seconds(pid)
            if n >= hi:
                t_hi, n_hi, c_hi = now, n, cpu_seconds(pid)
                break
            time.sleep(0.02)
        if t_lo is None or t_hi is None:
            print("parley-safety did not store the events in time; see "
                  f"{stack['safety'].logfile}", file=sys.stderr)
            return 1
        rate = (n_hi - n_lo) / (t_hi - t_lo)
        cpu = c_hi - c_lo
        per_cpu = (n_hi - n_lo) / cpu if cpu > 0 else float("inf")
        rows = ps.http_request(stack["safety"].admin_url("/metrics")).text
        verdicts = sum(float(line.split()[-1]) for line in rows.splitlines()
                       if line.startswith("parley_safety_verdicts_total{"))
        print(f"bench-safety: {args.events} events (texts of ~80 bytes, 40% flagged), "
              f"parley-safety pinned to core {args.core} of {os.cpu_count()}")
        print(f"  published beforehand: {args.events / pub_s:,.0f} events/s "
              "(parley-safety-pub, one JetStream ack each)")
        print(f"  end to end (fetch, decode, classify, store via history+PostgreSQL, ack): "
              f"{rate:,.0f} events/s per instance  [goal {GOAL:,}: "
              f"{'met' if rate >= GOAL else 'NOT met'}]")
        print(f"  parley-safety CPU over that window: {cpu:.2f} s for {n_hi - n_lo:,.0f} events "
              f"= {per_cpu:,.0f} events per CPU-second ({100 * cpu / (t_hi - t_lo):.0f}% of "
              "its core busy)")
        print(f"  verdict rows stored so far: {verdicts:,.0f}")
        print(f"  classifier alone in-process (decode + classify, no bus, no store): "
              f"{float(inproc['events_per_s']):,.0f} events/s, {inproc['mb_per_s']} MB/s "
              f"({inproc['categories']} categories, {inproc['phrases']} phrases)")
        return 0
    finally:
        stack.stop(timeout=10)
        if os.environ.get("BENCH_KEEP"):
            print(f"  logs kept in {work / 'stack' / 'log'}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
