"""What the backend computes on, and whether torch is loaded."""

from __future__ import annotations

import subprocess
import sys


def test_loaded_torch_never_hands_out_a_half_imported_module():
    # The server imports torch in a warm-up thread; the worker asks meanwhile.
    code = (
        "import threading, time\n"
        "from blend123.backend.device import loaded_torch\n"
        "t = threading.Thread(target=lambda: __import__('torch')); t.start()\n"
        "partial = False\n"
        "while t.is_alive():\n"
        "    m = loaded_torch()\n"
        "    partial |= m is not None and not hasattr(m, 'cuda')\n"
        "    time.sleep(0.0005)\n"
        "t.join()\n"
        "print(partial, loaded_torch() is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120).stdout.split()
    assert out == ["False", "True"]
