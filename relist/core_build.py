"""Which build of the core runs: compiled, or the Python sources.

``sh scripts/build_core.sh`` compiles the core's modules (``compilable``) with mypyc
into extension modules beside their sources, and writes a stamp (``STAMP``): the
SHA-256 of every source it compiled, and the interpreter it compiled for.  The
compiled build runs only while it is current: the same set of sources, each with the
hash it had, every extension module present.  Otherwise the sources run, as they
also do where no build was made (no C compiler), and ``relist check-config`` and
``relist serve``'s first log line say which runs and why.

``RELIST_CORE`` chooses: ``auto`` (the default: compiled when current), ``python``
(the sources even when a current build is there: the tests that replace core
functions at run time need that), ``compiled`` (fail rather than run the sources).

Outside the core (it reads files, and it decides before any core module loads:
relist's ``__init__`` calls ``select``).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CORE", "STAMP", "Build", "ChoiceError", "compilable", "refuse", "select", "state"]

CORE = Path(__file__).resolve().parent / "core"
STAMP = CORE / "compiled.json"
# The build's one shared library (mypyc's "group"): relist/core/native__mypyc.*.so.
GROUP = "relist.core.native"
ENV = "RELIST_CORE"
# Not compiled: the package's __init__ (no need: it imports the pipeline); the report
# package (run by `relist report`, not per message; it leans on json internals);
# steps/protocol.py (a runtime-checkable Protocol, which mypyc cannot compile), and so
# steps/__init__.py, which imports it (a compiled package's __init__ runs before the
# package has a __path__: it can import only modules compiled with it).
_NOT_COMPILED = ("__init__.py", "steps/__init__.py", "steps/protocol.py")
_NOT_COMPILED_DIRS = ("report",)


def compilable(core: Path = CORE) -> list[Path]:
    """The core's modules the build compiles, sorted."""
    out = []
    for path in sorted(core.rglob("*.py")):
        rel = path.relative_to(core).as_posix()
        if rel in _NOT_COMPILED or rel.split("/")[0] in _NOT_COMPILED_DIRS:
            continue
        out.append(path)
    return out


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stamp_for(sources: list[Path], core: Path = CORE) -> dict:
    """What the build writes to ``STAMP`` once it has compiled ``sources``."""
    return {"interpreter": sys.implementation.cache_tag,
            "extension": importlib.machinery.EXTENSION_SUFFIXES[0],
            "sources": {p.relative_to(core).as_posix(): _digest(p) for p in sources}}


@dataclass(frozen=True)
class Build:
    """Which core runs (``running``: "compiled" or "python"; "none" when RELIST_CORE
    asked for what cannot be, see ``refuse``) and why, in a line; ``unused`` when a
    compiled build is there but cannot run (stale, incomplete, for another interpreter):
    worth a warning, since someone meant it to run."""

    running: str
    reason: str
    modules: int = 0
    unused: bool = False

    def describe(self) -> str:
        if self.running == "compiled":
            return f"compiled with mypyc ({self.modules} modules)"
        if self.running == "none":
            return f"none ({self.reason})"
        return f"Python sources ({self.reason})"


def state(core: Path = CORE) -> Build:
    """Whether the compiled build in ``core`` is current, without importing anything."""
    stamp_path = core / STAMP.name
    try:
        stamp = json.loads(stamp_path.read_text())
        recorded = stamp["sources"]
    except FileNotFoundError:
        return Build("python", "no compiled build: sh scripts/build_core.sh makes one")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Build("python", f"the build's stamp {stamp_path} is unreadable ({exc.__class__.__name__})",
                     unused=True)
    rebuild = "; sh scripts/build_core.sh rebuilds it"
    if stamp.get("interpreter") != sys.implementation.cache_tag:
        return Build("python", f"the compiled build is for {stamp.get('interpreter')}, "
                               f"this is {sys.implementation.cache_tag}{rebuild}", unused=True)
    sources = compilable(core)
    names = {p.relative_to(core).as_posix(): p for p in sources}
    if set(names) != set(recorded):
        added = sorted(set(names) - set(recorded))
        gone = sorted(set(recorded) - set(names))
        what = f"new module {added[0]}" if added else f"module {gone[0]} removed"
        return Build("python", f"the compiled build is stale ({what}){rebuild}", unused=True)
    suffix = stamp.get("extension", "")
    if suffix != importlib.machinery.EXTENSION_SUFFIXES[0]:
        # (same cache tag, another platform or ABI: the import system would not even
        # look for these files, and would load the sources while this said compiled)
        return Build("python", f"the compiled build's extension modules end {suffix!r}, this interpreter "
                               f"loads {importlib.machinery.EXTENSION_SUFFIXES[0]!r}{rebuild}", unused=True)
    if not _readable(core / f"{GROUP.rpartition('.')[2]}__mypyc{suffix}"):
        return Build("python", f"the compiled build is incomplete (no readable shared library){rebuild}",
                     unused=True)
    for name, path in names.items():
        if _digest(path) != recorded[name]:
            return Build("python", f"the compiled build is stale ({name} changed since){rebuild}",
                         unused=True)
        if not _readable(path.with_name(path.name[:-3] + suffix)):
            return Build("python", f"the compiled build is incomplete ({name} has no readable extension "
                                   f"module){rebuild}", unused=True)
    return Build("compiled", "current", len(sources))


def _readable(path: Path) -> bool:
    """There, and readable by this process (a build made under umask 077 by another
    user is not: loading it would fail at the first core import)."""
    return path.is_file() and os.access(path, os.R_OK)


class _CoreFinder:
    """A meta path finder for the core's modules, by name: ``relist.core.a.b`` is
    relist/core/a/b (``.py``, or with the compiled build also its extension module,
    which comes first).  It does not go by the parent package's ``__path__``: mypyc
    sets a compiled package's from where the build's shared library is, taking it to
    be at the top of the import path, and the build puts it in relist/core
    (``relist.core.native``), so ``relist.core.bounce``'s would be
    relist/core/relist/core/bounce."""

    def __init__(self, compiled: bool, core: Path = CORE) -> None:
        machinery = importlib.machinery
        self.loaders: list[tuple[type, list[str]]] = [(machinery.SourceFileLoader, machinery.SOURCE_SUFFIXES)]
        if compiled:
            self.loaders.insert(0, (machinery.ExtensionFileLoader, machinery.EXTENSION_SUFFIXES))
        self.core = core
        self._finders: dict[Path, importlib.machinery.FileFinder] = {}

    def find_spec(self, name, path=None, target=None):
        if not name.startswith("relist.core."):
            return None
        where = self.core.joinpath(*name.split(".")[2:-1])
        finder = self._finders.get(where)
        if finder is None:
            finder = self._finders[where] = importlib.machinery.FileFinder(str(where), *self.loaders)
        return finder.find_spec(name, target)

    def invalidate_caches(self) -> None:
        for finder in self._finders.values():
            finder.invalidate_caches()


class ChoiceError(ImportError):
    """``RELIST_CORE`` asks for what cannot be: an unknown value, or ``compiled``
    without a current build."""


def select(environ=os.environ) -> Build:
    """Decide which core runs (``RELIST_CORE``), before any core module loads (relist's
    ``__init__`` calls it); returns the decision.  Raises ChoiceError for a value it
    does not know, and for ``compiled`` when no current build is there."""
    wanted = environ.get(ENV, "auto").strip().lower() or "auto"
    if wanted not in ("auto", "python", "compiled"):
        raise ChoiceError(f"{ENV}={wanted!r}: expected auto, python or compiled")
    build = state()
    if wanted == "compiled" and build.running != "compiled":
        raise ChoiceError(f"{ENV}=compiled, but the core runs as {build.describe()}")
    if wanted == "python" and build.running == "compiled":
        build = Build("python", f"{ENV}=python")
    _put_first(_CoreFinder(build.running == "compiled"))
    return build


def _put_first(finder: _CoreFinder | _Refusal) -> None:
    """``finder`` first on sys.meta_path, in place of the one an earlier call put there."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, (_CoreFinder, _Refusal))]
    sys.meta_path.insert(0, finder)


class _Refusal:
    """A meta path finder that refuses every core module with ``reason``."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def find_spec(self, name, path=None, target=None):
        if name == "relist.core" or name.startswith("relist.core."):
            raise ImportError(self.reason, name=name)
        return None


def refuse(reason: str) -> Build:
    """After a ChoiceError: no core module loads (each import raises ImportError with
    ``reason``), so nothing runs a build that was not chosen; ``relist <command>``
    says ``reason`` in one line and exits 2 (relist.cli)."""
    _put_first(_Refusal(reason))
    return Build("none", reason)
