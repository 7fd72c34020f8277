"""The progress bar on the terminal: one bar for the whole job, the current stage named in it."""

from __future__ import annotations

import sys

from tqdm import tqdm

from blend123.protocol.job_progress import ChainProgress
from blend123.protocol.messages import Progress


class JobBar:
    """One tqdm bar on stderr over a chain of backend jobs (``convert``: an orbit, then
    the mesh): overall percent, the running stage, the whole chain's time left."""

    def __init__(self, enabled: bool = True, chain: ChainProgress | None = None) -> None:
        self.enabled = enabled and sys.stderr is not None
        self.chain = chain or ChainProgress([1.0])
        self._bar: tqdm | None = None
        self._silent_shown = -1  # the whole second of silence last shown

    def show(self, event: Progress, step: int = 0) -> None:
        """``event`` of the chain's ``step``-th job."""
        if not self.enabled:
            return
        fraction, eta_s = self.chain.update(step, event)
        if self._bar is None:
            self._bar = tqdm(total=100, unit="%", bar_format="{desc} {bar} {n:.0f}% {elapsed}{postfix}", file=sys.stderr, leave=True)
        self._bar.set_description_str(f"{event.stage:>10}", refresh=False)
        self._bar.n = round(100 * min(1.0, max(0.0, fraction)), 1)
        self._bar.set_postfix_str(f"{eta_s:.0f} s left" if eta_s >= 0 else "", refresh=False)
        self._bar.refresh()
        self._silent_shown = -1

    def waiting(self, silent_s: float, timeout_s: float) -> None:
        """The backend has said nothing for ``silent_s``: say so in place of the time left
        (a bar frozen at "3 s left" for half a minute reads as a hang), and when the command
        gives up."""
        if self._bar is None or int(silent_s) == self._silent_shown:
            return
        self._silent_shown = int(silent_s)
        self._bar.set_postfix_str(f"no answer from the backend for {silent_s:.0f} s (giving up at {timeout_s:.0f} s)", refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
