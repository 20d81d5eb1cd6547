"""A short run of `python -m bench.load`: no unexpected answer, and only 503s while Redis is down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.load import KINDS, Options, Outage, Report, Sample, Stack, run, stack

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
    # The same sessions (same data folder) work again once Redis is back, but for a worker whose
    # sign-in Redis ran and could not answer (Report.signed_out_by_outage): it is signed out
    # until it signs in again. That is one or two workers at most, in a window of a few ms.
    after = [s for s in report.samples if s.start > report.outage.up]
    assert after and all(s.good or report.excused(s) for s in after), report.table()
    assert {s.kind for s in after if s.good} == set(KINDS)
    cut_off = {s.worker for s in report.samples if id(s) in report.signed_out_by_outage}
    assert len(cut_off) <= options.clients // 2, report.table()


def test_only_the_worker_whose_sign_in_redis_cut_off_may_be_signed_out_after() -> None:
    """The verdict's one excuse beyond 503s in the outage, and its limits: a sign-in that began
    before Redis exited explains its own worker's signed-out answers, until it signs in again;
    a sign-in that began after (nothing reached Redis) explains nothing, nor does a 503
    elsewhere, nor a signed-out answer from another worker."""
    outage = Outage(down=10.0, gone=10.1, up=11.0)

    def at(start: float, kind: str, status: int, worker: int, error: str = "") -> Sample:
        good = status == KINDS[kind][1] and not error
        return Sample(kind, status, start, start + 0.02, good, status == 503, error, worker)

    cut = at(10.05, "POST /login", 503, worker=1)  # Redis ran it and exited unanswered
    late = at(10.5, "POST /login", 503, worker=2)  # Redis was gone: never ran
    excused = [
        at(11.1, "GET /", 303, worker=1),
        at(11.2, "GET /session", 200, worker=1, error="signed out"),
        at(11.3, "POST /session/refresh", 401, worker=1),
    ]
    again = at(11.4, "POST /login", 303, worker=1)
    failed = [
        at(11.5, "GET /", 303, worker=1),  # signed in again: no excuse left
        at(11.1, "GET /", 303, worker=2),
        at(11.1, "GET /", 303, worker=3),
        at(11.2, "GET /", 500, worker=1),
    ]
    report = Report([*failed, again, *excused, late, cut], seconds=2.0, outage=outage)
    assert report.failures == failed
    assert report.unavailable == [late, cut]
    assert {id(s) for s in excused} == report.signed_out_by_outage
