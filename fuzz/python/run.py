"""Runs the Python fuzz targets (atheris) for a bounded time each; exits non-zero on any crash.

    .venv/bin/python fuzz/python/run.py [--seconds 60] [--only wire|decode]

Each harness fuzzes a throwaway copy of its seed corpus (``corpus/<name>/``, in a temporary
directory, so the committed corpus stays small) for ``--seconds`` seconds
(``-max_total_time``). A crash or a failed property writes its input to
``fuzz/python/artifacts/<name>-crash-<sha1>`` (git-ignored) and the log to
``artifacts/<name>.log``; replay one with ``.venv/bin/python fuzz/python/fuzz_<name>.py FILE``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts"
HARNESSES = {"wire": HERE / "fuzz_wire.py", "decode": HERE / "fuzz_decode.py"}
# libFuzzer's status lines: "#1234  REDUCE cov: 56 ft: 78 corp: 9/10b lim: 11 exec/s: 12 rss: 13Mb"
_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\S+).*?exec/s: (\d+)")


def run_one(name: str, seconds: int) -> tuple[bool, str]:
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / f"{name}.log"
    with tempfile.TemporaryDirectory(prefix=f"hb-fuzz-{name}-") as tmp:
        corpus = Path(tmp) / "corpus"
        shutil.copytree(HERE / "corpus" / name, corpus)
        before = set(ARTIFACTS.glob(f"{name}-*"))
        dictionary = HERE / f"{name}.dict"
        cmd = [sys.executable, str(HARNESSES[name]), str(corpus),
               f"-max_total_time={seconds}", "-timeout=20", "-rss_limit_mb=4096",
               "-max_len=4096", "-print_final_stats=1",
               f"-artifact_prefix={ARTIFACTS}/{name}-"]
        if dictionary.exists():
            cmd.append(f"-dict={dictionary}")
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        with open(log_path, "wb") as log:
            try:
                proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      cwd=tmp, timeout=seconds + 300)
                code = proc.returncode
            except subprocess.TimeoutExpired:
                code = -1
        text = log_path.read_text(errors="replace")
        new = sorted(set(ARTIFACTS.glob(f"{name}-*")) - before)
    last = None
    for line in text.splitlines():
        m = _STATUS.match(line)
        if m:
            last = m
    stats = (f"{last.group(1)} runs, cov {last.group(2)}, ft {last.group(3)}, "
             f"corpus {last.group(4)}, {last.group(5)} exec/s" if last else "no status line")
    execs = re.findall(r"stat::number_of_executed_units: (\d+)", text)
    if execs:
        stats += f" (executed {sum(int(n) for n in execs)})"
    ok = code == 0 and not new
    print(f"== {name}: {'ok' if ok else 'FAILED'} (exit {code}): {stats}", flush=True)
    if not ok:
        tail = "\n".join(text.splitlines()[-40:])
        print(tail)
        for path in new:
            print(f"   crash input: {path} ({path.read_bytes()[:200].hex()})")
        print(f"   log: {log_path}")
    return ok, stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="fuzzing time per harness")
    parser.add_argument("--only", choices=sorted(HARNESSES), action="append",
                        help="run only this harness (repeatable)")
    args = parser.parse_args()
    failed = []
    for name in args.only or sorted(HARNESSES):
        ok, _ = run_one(name, args.seconds)
        if not ok:
            failed.append(name)
    if failed:
        print(f"fuzz: crashes or failures in {', '.join(failed)}")
        return 1
    print("fuzz: no crash")
    return 0


if __name__ == "__main__":
    sys.exit(main())
