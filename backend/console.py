"""Progress bars on the terminal: one bar per pipeline stage."""

from __future__ import annotations

import sys

from tqdm import tqdm


class StageBars:
    """Shows a job's ``progress`` events as one tqdm bar per stage, on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr is not None
        self._stage = ""
        self._bar: tqdm | None = None

    def update(self, stage: str, fraction: float, eta_s: float = -1.0) -> None:
        if not self.enabled:
            return
        if stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = tqdm(total=100, desc=f"{stage:>12}", unit="%", bar_format="{desc} {bar} {n:.0f}% {elapsed}{postfix}", file=sys.stderr, leave=True)
        self._bar.n = round(100 * min(1.0, max(0.0, fraction)), 1)
        self._bar.set_postfix_str(f"eta {eta_s:.0f}s" if eta_s >= 0 else "", refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = ""
