"""What watching costs a write: `state_set` and `state_incr` from Python with nobody watching,
with a watch on another prefix (the store checks, nobody matches), and with one watcher of the
written key (its mailbox drained between timed batches, outside the timing), on the embedded
engine, on `local://` and on Redis. Each figure is the median of `--rounds` runs; the modes
alternate inside every round, so all three see the same machine.

    python benches/python/bench_watch.py [--quick] [--rounds 3] [--before REV]

``--before REV`` also builds revision REV (e.g. the commit before watches, 56449c8) into a
throwaway venv and times its writes (nobody can watch there) in the same rounds, alternating
with ours, on the embedded engine and on `local://`: "costs no more than before" measured.

The target (issue 16): nobody watching costs what a write cost before watches existed (the
"other prefix" column shows the check alone); one watcher costs at most 1.5x.
Every process started is stopped by its PID; directories are temporary and removed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _redis import redis_server  # noqa: E402

USER = {"username": "ann", "joined_at": "2026-11-23T19:00:00", "room": "lobby", "messages": 42,
        "admin": False}

#: One child per (backend, round): times every mode, alternating, and prints µs per call.
CHILD = r'''
import json, sys, time
import hornbeam_erlang as hb
USER = %r
n, repeat = int(sys.argv[1]), int(sys.argv[2])
mb = hb.Mailbox(capacity=4 * n + 16, max_bytes=1 << 28)

def drain():
    # Waits (bounded) until every event of the batch arrived, then empties the mailbox.
    for _ in range(2000):
        if len(mb) >= n:
            break
        time.sleep(0.001)
    mb.drain()

def best(fn, watched):
    b = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        b = min(b, (time.perf_counter() - t) / n)
        if watched:
            drain()
    return b * 1e6

def modes(name, fn):
    out = {}
    for mode in ("nobody", "other", "watcher"):
        if mode == "other":
            mb.watch("zzz:")
        if mode == "watcher":
            mb.watch("user:")
        out[mode] = best(fn, mode == "watcher")
        for p in mb.watches():
            mb.unwatch(p)
        mb.drain()
    return {f"{name}:{m}": v for m, v in out.items()}

hb.state_set("user:1", USER)
res = {"backend": hb.backend()}
res.update(modes("set", lambda: hb.state_set("user:1", USER)))
res.update(modes("incr", lambda: hb.state_incr("user:n")))
print(json.dumps(res))
''' % (USER,)


#: The same writes on an engine without watches (``--before``): µs per call, best of batches.
PLAIN_CHILD = r'''
import json, sys, time
import hornbeam_erlang as hb
USER = %r
n, repeat = int(sys.argv[1]), int(sys.argv[2])
def best(fn):
    b = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        b = min(b, (time.perf_counter() - t) / n)
    return b * 1e6
hb.state_set("user:1", USER)
print(json.dumps({"set:nobody": best(lambda: hb.state_set("user:1", USER)),
                  "incr:nobody": best(lambda: hb.state_incr("user:n"))}))
''' % (USER,)

ROOT = HERE.parents[1]


def build_before(rev: str, tmp: str) -> str:
    """Builds the engine as of git revision `rev` into a venv under `tmp`; returns its python."""
    tree, venv = f"{tmp}/tree", f"{tmp}/venv"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", tree, rev],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    maturin = Path(sys.executable).with_name("maturin")
    env = dict(os.environ, VIRTUAL_ENV=venv, CARGO_TARGET_DIR=f"{tmp}/target")
    # Its output goes to stderr: stdout is the report.
    subprocess.run([str(maturin), "develop", "--release", "-q"], cwd=tree, env=env, check=True,
                   stdout=sys.stderr)
    return f"{venv}/bin/python"


def run_child(url: str | None, n: int, repeat: int, python: str = sys.executable,
              code: str = CHILD) -> dict:
    env = dict(os.environ)
    env.pop("HORNBEAM_URL", None)
    if url:
        env["HORNBEAM_URL"] = url
    proc = subprocess.Popen([python, "-c", code, str(n), str(repeat)], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"the benchmark child failed on {url or 'embedded'} (exit {proc.returncode})")
    return json.loads(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--before", metavar="REV", help="also time the writes of revision REV")
    args = ap.parse_args()
    n, repeat = (500, 2) if args.quick else (5000, 5)
    tmp = tempfile.mkdtemp(prefix="hb-bench-watch-")
    before_py = build_before(args.before, tmp) if args.before else None
    before: dict[str, list[dict]] = {"embedded": [], "local://": []}
    try:
        with redis_server() as port:
            if port is None:
                raise SystemExit("redis-server is not installed: apt-get install redis-server")
            # Each local:// child gets a fresh directory (`{r}` below): a directory whose log was
            # filled by an earlier child has a long free-page list, which slows every write.
            backends = [("embedded", None), ("local://", f"local://{tmp}/db{{r}}"),
                        ("redis", f"redis://127.0.0.1:{port}/0?prefix=bw:")]
            results: dict[str, list[dict]] = {name: [] for name, _ in backends}
            for r in range(args.rounds):
                for name, url in backends:
                    url = url.replace("{r}", str(r)) if url else url
                    results[name].append(run_child(url, n, repeat))
                    if before_py is not None and name in before:
                        before_url = f"local://{tmp}/before{r}" if url else None
                        before[name].append(run_child(before_url, n, repeat, before_py,
                                                      PLAIN_CHILD))
    finally:
        if args.before:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            f"{tmp}/tree"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"µs per call from Python, median of {args.rounds} rounds ({n} calls per batch, best "
          f"of {repeat} batches); the ratio is against nobody watching, in the same run.\n")
    print("| backend | call | nobody watching | watch on another prefix | one watcher of the key |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, _ in backends:
        for call in ("set", "incr"):
            med = {m: statistics.median(r[f"{call}:{m}"] for r in results[name])
                   for m in ("nobody", "other", "watcher")}
            base = med["nobody"]
            print(f"| {name} | `state_{call}` | {base:.2f} | {med['other']:.2f} "
                  f"({med['other'] / base:.2f}x) | {med['watcher']:.2f} "
                  f"({med['watcher'] / base:.2f}x) |")
    if before_py is not None:
        print(f"\nNobody watching, this commit beside {args.before} (no watches there), same rounds "
              "(µs per call; the ratio is this commit's over the old one's):\n")
        print("| backend | call | before watches | now | now / before |")
        print("| --- | --- | ---: | ---: | ---: |")
        for name in before:
            for call in ("set", "incr"):
                old = statistics.median(r[f"{call}:nobody"] for r in before[name])
                new = statistics.median(r[f"{call}:nobody"] for r in results[name])
                print(f"| {name} | `state_{call}` | {old:.2f} | {new:.2f} | {new / old:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
