"""Run a tools/ command line as a script, the way a user does (`python tools/NAME.py ...`)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_tool(name: str, args: list[str], *, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`python tools/<name>.py args` with this checkout first on the import path (a script's own
    folder, tools/, is what Python puts there otherwise, so an installed copy of the package
    elsewhere would be tested instead)."""
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore", **kwargs.pop("env", {})}
    return subprocess.run([sys.executable, str(REPO / "tools" / f"{name}.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, **kwargs)
