"""Python calls a function registered from C, and C calls a function registered from Python, in
one process (call/cast over core's registry, through the `_C_API` capsule's HbApi table)."""

import importlib.util
import shutil
import subprocess
import sysconfig
import threading
from pathlib import Path

import msgpack
import pytest

import hornbeam_erlang as hb

ROOT = Path(__file__).resolve().parents[2]
HB_OK, HB_INVALID_VALUE, HB_NO_FUNCTION, HB_FUNCTION_FAILED = "0", "205", "500", "501"


@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    cc = shutil.which("cc")
    if cc is None:
        pytest.fail("no C compiler (cc) found: apt-get install gcc", pytrace=False)
    out = tmp_path_factory.mktemp("ext") / ("hb_calls_ext" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(
        [cc, "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-std=c11",
         f"-I{sysconfig.get_paths()['include']}", f"-I{ROOT / 'include'}",
         str(ROOT / "tests/c/py_calls_ext.c"), "-o", str(out)],
        check=True,
    )
    spec = importlib.util.spec_from_file_location("hb_calls_ext", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_python_calls_a_c_function(ext):
    ext.register_c_add("c_add")
    assert hb.call("c_add", 2, 3) == 5
    with pytest.raises(hb.HandlerError, match="c_add takes two small integers") as info:
        hb.call("c_add", "x", 1)
    assert isinstance(info.value, RuntimeError)
    done = threading.Event()
    hb.register_function("c_add_done", lambda: done.set())
    hb.cast("c_add", 1, 1)  # fire and forget into C
    hb.cast("c_add_done")
    assert done.wait(30)
    released = ext.released()
    hb.unregister_function("c_add")
    assert ext.released() == released + 1
    with pytest.raises(hb.HookNotFound):
        hb.call("c_add", 2, 3)
    with pytest.raises(hb.HookNotFound):
        hb.cast("c_add", 2, 3)
    hb.unregister_function("c_add_done")


def test_c_calls_a_python_function(ext):
    seen = []

    def greet(name, times=1):
        seen.append(threading.get_ident())
        return {"hello": name, "times": times}

    hb.register_function("greet", greet)
    status, out = ext.call_raw("greet", msgpack.packb(["ann", 2]))
    assert status == HB_OK
    assert msgpack.unpackb(out) == {"hello": "ann", "times": 2}
    assert seen == [threading.get_ident()]  # C called on this thread, with the GIL taken back

    def boom():
        raise ValueError("no")

    hb.register_function("boom", boom)
    status, msg = ext.call_raw("boom", msgpack.packb([]))
    assert status == HB_FUNCTION_FAILED and b"ValueError: no" in msg
    hb.register_function("opaque", lambda: object())
    status, msg = ext.call_raw("opaque", msgpack.packb([]))
    assert status == HB_FUNCTION_FAILED and b"not storable" in msg

    status, msg = ext.call_raw("greet", msgpack.packb("not an array"))
    assert status == HB_INVALID_VALUE
    for name in ("greet", "boom", "opaque"):
        hb.unregister_function(name)
    status, msg = ext.call_raw("greet", msgpack.packb(["ann"]))
    assert status == HB_NO_FUNCTION


def test_c_calls_python_from_another_thread(ext):
    hb.register_function("double", lambda x: x * 2)
    results = []

    def worker():
        for i in range(50):
            status, out = ext.call_raw("double", msgpack.packb([i]))
            results.append((status, msgpack.unpackb(out)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count((HB_OK, 0)) == 4 and len(results) == 200
    assert sorted(v for _, v in results) == sorted(2 * i for i in range(50) for _ in range(4))
    hb.unregister_function("double")
