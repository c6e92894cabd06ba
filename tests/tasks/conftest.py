import pytest


@pytest.fixture(autouse=True)
def _prefect(prefect_harness):
    yield
