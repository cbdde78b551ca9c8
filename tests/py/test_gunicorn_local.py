"""gunicorn with `--preload` on `local://`: the master imports the app and opens the engine,
then forks its workers; each child must reopen the directory (LMDB must not be used across a
fork) and every worker counts in one shared store. A worker killed with SIGKILL is replaced by a
new fork of the same master, which works too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from conftest import ARTIFACTS, ROOT, die_with_parent, free_port, wait_for_port


def gunicorn_workers(master: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == master:
                pids.append(int(entry))
    return pids


def test_preloaded_gunicorn_workers_share_one_store_and_survive_a_kill(tmp_path):
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / f"gunicorn-{port}.log", "wb")
    env = dict(os.environ, HORNBEAM_URL=f"local://{tmp_path}",
               PYTHONPATH=f"{ROOT / 'tests' / 'py'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "preload_app:app", "--preload", "-w", "3",
         "-k", "uvicorn.workers.UvicornWorker", "--bind", f"127.0.0.1:{port}",
         "--graceful-timeout", "5", "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=die_with_parent)
    try:
        wait_for_port(port, proc)
        url = f"http://127.0.0.1:{port}/"

        def hits(n: int) -> list[dict]:
            out = []
            for _ in range(n):
                with httpx.Client(timeout=10) as c:  # a new connection each: any worker answers
                    out.append(c.get(url).json())
            return out

        first = hits(60)
        assert {r["backend"] for r in first} == {"local"}
        assert sorted(r["count"] for r in first) == list(range(1, 61)), "one shared counter"
        assert {r["imported_by"] for r in first} == {proc.pid}, "imported once, by the master"
        assert {r["imports"] for r in first} == {1}
        assert len({r["pid"] for r in first}) >= 2, "requests spread over the forked workers"

        victim = first[-1]["pid"]
        assert victim in gunicorn_workers(proc.pid)
        os.kill(victim, signal.SIGKILL)
        for _ in range(200):  # bounded: gunicorn forks a replacement within a few seconds
            workers = gunicorn_workers(proc.pid)
            if victim not in workers and len(workers) == 3:
                break
            time.sleep(0.05)
        assert victim not in gunicorn_workers(proc.pid) and len(gunicorn_workers(proc.pid)) == 3
        time.sleep(0.5)  # let the replacement finish booting (it then accepts like the others)
        after = hits(60)
        assert sorted(r["count"] for r in after) == list(range(61, 121))
        assert victim not in {r["pid"] for r in after}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()
