"""Run one function over many items on the free CPUs, results in order.

The reconstruction's per-view and per-chunk work is numpy and torch on large arrays, which
let go of the GIL while they compute: threads share the cores without a second process
and its copies of the views. With one worker it is a plain loop (no pool, no threads).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def in_order(fn: Callable[[T], R], items: Iterable[T], workers: int, name: str = "blend123-work") -> Iterator[R]:
    """``fn(item)`` for each item, computed on up to ``workers`` threads, yielded in order.

    The caller reports progress (and so hears of a cancel) as results arrive. Use it in
    ``with contextlib.closing(in_order(...))``: when the caller stops early (a cancel
    raised), closing it there, not whenever a kept traceback lets it go, means items not
    yet started never start.
    """
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        for item in items:
            yield fn(item)
        return
    with ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix=name) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def all_of(fn: Callable[[T], R], items: Iterable[T], workers: int, name: str = "blend123-work") -> list[R]:
    """Every ``fn(item)`` in order, on up to ``workers`` threads, for work that reports no
    progress of its own."""
    with closing(in_order(fn, items, workers, name)) as results:
        return list(results)
