"""Processes the sandbox starts and stops (a private Postfix, Mailman's runners)."""

from __future__ import annotations

import os

__all__ = ["alive"]


def alive(pid: int | None) -> bool:
    """``pid`` runs and is not a zombie (False for None or 0)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fp:
            return fp.read().rsplit(") ", 1)[1][:1] != "Z"
    except OSError:
        return False
