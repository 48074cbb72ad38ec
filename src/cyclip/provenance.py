"""Where a result came from: the versions and the command that produced a run, a checkpoint or an eval file.

Recorded so that a number in a paper can be traced back to the code that made it; the git commit is
included when cyclip runs from a source checkout (an installed wheel has none).
"""

from __future__ import annotations

import functools
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any


def package_version(name: str) -> str | None:
    """The installed version of a distribution, without importing it; None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def git_commit() -> str | None:
    """The commit of the checkout cyclip runs from ("…-dirty" with uncommitted changes), or None."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit or None


def provenance() -> dict[str, Any]:
    """cyclip, torch and open_clip versions, the git commit (or None) and the command line."""
    from cyclip import __version__

    return {
        "cyclip": __version__,
        "git_commit": git_commit(),
        "torch": package_version("torch"),
        "open_clip": package_version("open_clip_torch"),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else None,
    }
