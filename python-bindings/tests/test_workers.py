"""A worker process (uvicorn --workers, gunicorn) is told once that its embedded engine is its own."""

import subprocess
import sys
import textwrap


def run(script: str, env_extra: dict) -> str:
    import os
    import tempfile

    env = dict(os.environ)
    env.pop("HORNBEAM_URL", None)
    env.update(env_extra)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "main.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent(script))
        out = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=60,
                             env=env)
    assert out.returncode == 0, out.stderr
    return out.stderr


WORKER = """
    import multiprocessing as mp

    def child():
        import logging
        logging.basicConfig()
        import hornbeam_erlang
        hornbeam_erlang.state_set("k", 1)

    if __name__ == "__main__":
        p = mp.get_context("spawn").Process(target=child)
        p.start()
        p.join(30)
        assert p.exitcode == 0
"""


def test_spawned_worker_logs_once():
    err = run(WORKER, {})
    assert err.count("each worker has its own store and bus") == 1
    assert "HORNBEAM_URL" in err


def test_single_process_does_not_log():
    err = run("import logging; logging.basicConfig(); import hornbeam_erlang; hornbeam_erlang.state_set('k', 1)", {})
    assert "each worker" not in err


def test_forked_child_logs():
    err = run("""
        import logging, os
        logging.basicConfig()
        import hornbeam_erlang
        hornbeam_erlang.state_set("k", 1)
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    """, {})
    assert err.count("each worker has its own store and bus") == 1
