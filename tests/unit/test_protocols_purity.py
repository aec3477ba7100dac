"""The pure core imports none of the heavy shell libraries (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PURE_MODULES = [
    "protocols.schema",
    "protocols.loader",
    "protocols.planning",
    "protocols.stats",
    "protocols.report",
    "protocols.report_model",
    "protocols.paired",
    "protocols.multiplicity",
    "protocols.clustered",
    "protocols.sequential",
    "protocols.ppi",
    "protocols.questions",
    "protocols.report_questions",
    "protocols.audit",
    "protocols.report_ppi",
    "protocols.report_ppi_render",
    "robots.types",
]
FORBIDDEN = ["ray", "zmq", "sqlalchemy", "torch", "streamlit"]


def test_pure_modules_import_no_shell_libraries() -> None:
    script = (
        "import importlib, json, sys\n"
        f"for name in {PURE_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        f"print(json.dumps(sorted(loaded & set({FORBIDDEN!r}))))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
