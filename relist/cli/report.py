"""``relist report``: per list, what happened to its posts (counted per post, not per
transaction): signatures on arrival, kept valid or re-signed, what broke them, DMARC
mitigations, bounces by cause, deferrals and errors.  ``--json`` prints
``{"lists": {ADDRESS: {...}}}``; ``--html FILE`` writes one self-contained page with
charts per day.  Exit 0 (also with nothing to report), 2 on a usage, configuration or
store error.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime

from relist.cli.bounces import duration
from relist.config import load
from relist.core.report.html import render as render_html
from relist.core.report.text import render as render_text
from relist.edge.history import load_report

__all__ = ["Progress", "add_parser", "open_store", "run"]


class Progress:
    """A progress bar on standard error, shown only on a terminal and only once the
    work has taken more than ``after`` seconds."""

    def __init__(self, stream=None, after: float = 1.0, width: int = 30):
        self.stream = stream or sys.stderr
        self.on = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self.after, self.width, self.shown = after, width, False

    def __call__(self, done: int, total: int, what: str) -> None:
        if not self.on or time.monotonic() - self.start < self.after or not total:
            return
        filled = int(self.width * min(done, total) / total)
        self.stream.write(f"\r[{'#' * filled}{' ' * (self.width - filled)}] "
                          f"{100 * done // total:3d}% {what:<12}")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r" + " " * (self.width + 20) + "\r")
            self.stream.flush()


def open_store(cfg, command: str):
    """A store Reader, or (None, message) when the store cannot be read."""
    from relist.edge.store import open_reader
    try:
        return open_reader(cfg.store), ""
    except Exception as exc:  # noqa: BLE001 - any backend's error: a clear message, exit 2
        where = cfg.store.get("path") or cfg.store.get("url") or "the store"
        return None, f"relist {command}: cannot read the store ({where}): {exc}"


def run(args) -> int:
    cfg = load(args.config)
    reader, problem = open_store(cfg, "report")
    if reader is None:
        print(problem, file=sys.stderr)
        return 2
    since = datetime.now(UTC) - args.since if args.since is not None else None
    progress = Progress()
    try:
        report = load_report(reader, list_address=args.list, since=since, progress=progress).result()
    finally:
        progress.close()
        reader.close()
    since_text = since.isoformat(timespec="seconds") if since else ""
    report["since"] = since_text or None
    if args.html:
        page = render_html(report, since=since_text,
                           generated=datetime.now(UTC).isoformat(timespec="seconds"))
        with open(args.html, "w", encoding="utf-8") as f:
            f.write(page)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    elif not args.html:
        sys.stdout.write(render_text(report, since=since_text))
    else:
        print(f"relist report: wrote {args.html}", file=sys.stderr)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="per list: posts, signatures kept or re-signed, breakage, mitigations, "
                                      "bounces (text, JSON or an HTML page with charts)")
    p.add_argument("-c", "--config", help="configuration file ([store])")
    p.add_argument("--list", metavar="ADDR", help="only this list (its posting address)")
    p.add_argument("--since", metavar="DURATION", type=duration, help="only the last DURATION (7d, 12h, 30m)")
    p.add_argument("--json", action="store_true", help='print {"lists": {ADDRESS: {...}}}')
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML page with charts per day")
    p.set_defaults(func=run)
