"""Each test starts with an empty store in the process's default engine."""

import pytest

import hornbeam_erlang


@pytest.fixture(autouse=True)
def clean_store():
    hornbeam_erlang.state_clear()
    yield
    hornbeam_erlang.state_clear()
