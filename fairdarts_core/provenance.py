"""Where a recorded result came from: the exact command, commit, date, machine, wall time, versions.

Recorded runs in ``data/runs/`` carry this next to their histories, so a figure in the book can be
traced back to a command that anyone can re-run (and that a test re-runs for its first epochs).
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import List, Optional


def git_commit(repo: Optional[Path] = None) -> Optional[str]:
    """The commit of the checkout this library runs from (``+dirty`` when it has local changes)."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("+dirty" if dirty else "")) if sha else None


def provenance(argv: Optional[List[str]] = None, wall_seconds: Optional[float] = None) -> dict:
    """A JSON-serialisable record of how and where a result was produced."""
    import torch

    from . import __version__
    argv = list(sys.argv if argv is None else argv)
    return {
        "command": " ".join(shlex.quote(a) for a in argv),
        "git_commit": git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fairdarts_core": __version__,
        "wall_seconds": None if wall_seconds is None else round(wall_seconds, 1),
    }


def record_session(run_dir: Path, argv: Optional[List[str]] = None, wall_seconds: Optional[float] = None) -> dict:
    """Append this process's provenance to ``run_dir/provenance.json`` (a run resumed across sessions
    gets one entry per session) and write it atomically. Returns the whole record."""
    import json

    from .search import atomic_write_text
    path = Path(run_dir) / "provenance.json"
    record = json.loads(path.read_text()) if path.is_file() else {"sessions": []}
    record["sessions"].append(provenance(argv, wall_seconds))
    record["wall_seconds_total"] = round(sum(s["wall_seconds"] or 0 for s in record["sessions"]), 1)
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return record
