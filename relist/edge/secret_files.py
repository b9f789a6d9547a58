"""Read a file only relist's user may read (a private key, a database password): the
checks are made on the open file, so the file cannot be swapped between them."""

from __future__ import annotations

import os
import stat

__all__ = ["NotRegularFile", "OpenToOthers", "read_owner_only"]


class NotRegularFile(OSError):
    """Not a regular file (a directory, a device, a FIFO)."""


class OpenToOthers(OSError):
    """Group or others may access the file: ``mode`` says how."""

    def __init__(self, mode: int):
        super().__init__(f"accessible by group or others (mode {mode:04o})")
        self.mode = mode


def read_owner_only(path: str | os.PathLike, limit: int = -1) -> bytes:
    """The bytes of ``path`` (at most ``limit``), refusing a file that is not regular or
    that group or others can access; ``os.open``'s own errors (FileNotFoundError,
    PermissionError, ...) pass through for the caller to word."""
    fd = os.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(str(path))
        if st.st_mode & 0o077:
            raise OpenToOthers(stat.S_IMODE(st.st_mode))
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(limit)
    finally:
        os.close(fd)
