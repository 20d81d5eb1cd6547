"""A short run of `python -m bench.load`: no unexpected answer, and only 503s while Redis is down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.load import KINDS, Options, Stack, run, stack

pytestmark = pytest.mark.slow
SHORT = Options(users=5, clients=8, duration=3.0)


@pytest.fixture
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """redis-server, SecantusDB and the app under uvicorn, as `python -m bench.load` starts them."""
    with stack(tmp_path_factory.mktemp("load"), bcrypt_rounds=4) as servers:
        yield servers


def test_every_answer_under_load_is_the_expected_one(running: Stack) -> None:
    report = run(running, SHORT)
    assert report.ok, report.table()
    assert {s.kind for s in report.samples} == set(KINDS)
    assert not report.unavailable


def test_a_redis_restart_under_load_costs_only_503s_while_it_is_down(running: Stack) -> None:
    options = Options(users=5, clients=8, duration=3.0, restart_redis=True, outage=0.5)
    report = run(running, options)
    assert report.ok, report.table()
    assert report.outage is not None
    assert report.unavailable, "no request met the outage: the restart proved nothing"
    # The same sessions (same data folder) work again once Redis is back.
    after = [s for s in report.samples if s.start > report.outage.up]
    assert after and all(s.good for s in after), report.table()
    assert {s.kind for s in after} == set(KINDS)
