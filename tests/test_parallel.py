"""``in_order``: the reconstruction's threads give results in order and stop when told."""

from __future__ import annotations

import threading
import time
from contextlib import closing

import pytest

from blend123.backend.reconstruction.parallel import all_of, in_order


def test_results_come_in_the_order_of_the_items_whatever_finishes_first():
    def slow_first(i: int) -> int:
        time.sleep(0.05 if i == 0 else 0.0)
        return i * i

    with closing(in_order(slow_first, range(6), workers=3)) as results:
        assert list(results) == [0, 1, 4, 9, 16, 25]


def test_workers_run_side_by_side_and_one_worker_uses_no_thread():
    names: set[str] = set()
    barrier = threading.Barrier(2, timeout=5)

    def meet(i: int) -> int:
        names.add(threading.current_thread().name)
        barrier.wait()  # only two items at once get past this
        return i

    with closing(in_order(meet, range(4), workers=2, name="blend123-test")) as results:
        assert list(results) == [0, 1, 2, 3]
    assert len(names) == 2 and all(n.startswith("blend123-test") for n in names)
    names.clear()
    with closing(in_order(lambda i: names.add(threading.current_thread().name), range(3), workers=1)) as results:
        list(results)
    assert names == {threading.current_thread().name}


def test_a_cancel_raised_by_the_caller_stops_the_items_not_started():
    started: list[int] = []

    def work(i: int) -> int:
        started.append(i)
        time.sleep(0.05)
        return i

    class Cancelled(Exception):
        pass

    with pytest.raises(Cancelled):
        with closing(in_order(work, range(40), workers=2)) as results:
            for i in results:
                if i == 1:
                    raise Cancelled  # as a progress callback does when the job is cancelled
    time.sleep(0.2)
    assert len(started) <= 5, started  # the two running (and at most a couple more) finished; 40 were queued


def test_all_of_collects_every_result_in_order():
    assert all_of(lambda i: -i, range(5), workers=2) == [0, -1, -2, -3, -4]
    assert all_of(lambda i: -i, [], workers=2) == []
