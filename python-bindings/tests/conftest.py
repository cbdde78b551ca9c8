"""Each test starts with an empty store in the process's default engine, and the whole run checks
that the engine really runs on the backend `HORNBEAM_URL` names (so an ignored URL cannot quietly
re-run the embedded suite)."""

import os

import pytest

import hornbeam_erlang


def expected_backend() -> str:
    """The backend `HORNBEAM_URL` selects: its scheme (`redis+unix` counts as `redis`)."""
    url = os.environ.get("HORNBEAM_URL", "").strip()
    if not url or url.startswith(("embedded:", "mem:")):
        return "embedded"
    scheme = url.split(":", 1)[0]
    return "redis" if scheme in ("redis", "redis+unix", "unix") else scheme


@pytest.fixture(scope="session", autouse=True)
def backend_in_use():
    assert hornbeam_erlang.backend() == expected_backend(), (
        f"HORNBEAM_URL={os.environ.get('HORNBEAM_URL')!r} but the engine runs on {hornbeam_erlang.backend()!r}")
    yield


@pytest.fixture(autouse=True)
def clean_store():
    hornbeam_erlang.state_clear()
    yield
    hornbeam_erlang.state_clear()
