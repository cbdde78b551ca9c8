"""A C extension in this process shares hornbeam_erlang's engine through the `_C_API` capsule."""

import asyncio
import importlib.util
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

import hornbeam_erlang as hb

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    cc = shutil.which("cc")
    if cc is None:
        pytest.fail("no C compiler (cc) found: apt-get install gcc", pytrace=False)
    out = tmp_path_factory.mktemp("ext") / ("hb_capsule_ext" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(
        [cc, "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", "-std=c11",
         f"-I{sysconfig.get_paths()['include']}", f"-I{ROOT / 'include'}",
         str(ROOT / "tests/c/py_capsule_ext.c"), "-o", str(out)],
        check=True,
    )
    spec = importlib.util.spec_from_file_location("hb_capsule_ext", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_value_set_in_python_is_read_by_c(ext):
    hb.state_set("greeting", "hello from Python")
    assert ext.get_str("greeting") == "hello from Python"
    assert ext.get_str("missing") is None
    hb.state_incr("counter", 5)
    assert ext.incr("counter", 2) == 7
    assert hb.state_get("counter") == 7


async def test_message_published_from_c_reaches_a_python_task(ext):
    async def listener():
        mb = hb.subscribe("from:c")
        return await asyncio.wait_for(mb.recv(), 5)

    task = asyncio.create_task(listener())
    await asyncio.sleep(0.01)
    assert ext.publish_str("from:c", "hi from C") == 1
    msg = await task
    assert (msg.topic, msg.message) == ("from:c", "hi from C")
