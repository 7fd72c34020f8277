"""The batch's one overall progress bar: images done / failed / skipped of the total,
throughput and time left, on stderr."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from .ledger import CONVERTED, FAILED, SKIPPED


class BatchBar:
    def __init__(self, total: int, skipped: int = 0, enabled: bool = True) -> None:
        """``skipped``: images found done before the run; counted, but not in the throughput."""
        self.counts = {CONVERTED: 0, FAILED: 0, SKIPPED: skipped}
        self.started = time.monotonic()
        self._bar = None
        if enabled and sys.stderr is not None:
            self._bar = tqdm(
                total=total, initial=skipped, desc="blend123 batch", unit="img", file=sys.stderr, dynamic_ncols=True,
                bar_format="{desc} {bar} {n}/{total} [{elapsed}<{remaining}]{postfix}",
            )
            self._bar.set_postfix_str(self.postfix())

    def update(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        if self._bar is not None:
            self._bar.set_postfix_str(self.postfix(), refresh=False)
            self._bar.update(1)

    def images_per_minute(self) -> float:
        worked = self.counts[CONVERTED] + self.counts[FAILED]
        elapsed = time.monotonic() - self.started
        return 60.0 * worked / elapsed if elapsed > 0 else 0.0

    def postfix(self) -> str:
        c = self.counts
        return f"done {c[CONVERTED]}, failed {c[FAILED]}, skipped {c[SKIPPED]}, {self.images_per_minute():.1f} img/min"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self.postfix(), refresh=False)
            self._bar.close()
            self._bar = None
