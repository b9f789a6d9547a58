"""Print the deliverability tables of docs/modes.md: the real Mailman corpus through
relist in each mode, judged by rspamd under p=none, p=quarantine and p=reject, direct
and after a forwarding hop (relist.sandbox.deliverability).

    .venv/bin/python scripts/deliverability.py            # the tables (about a minute)
    .venv/bin/python scripts/deliverability.py --failures # also every goal not met

Needs rspamd (scripts/setup.sh --test installs it).  Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import sys
import time

from relist.sandbox.deliverability import MODES, POLICIES, goals, run_matrix, table
from relist.sandbox.rspamd import Rspamd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", action="append", choices=list(MODES), help="only these configurations")
    ap.add_argument("--failures", action="store_true", help="list every goal not met")
    args = ap.parse_args()
    if not Rspamd.available():
        print("rspamd is not installed (scripts/setup.sh --test installs it)", file=sys.stderr)
        return 2
    start = time.monotonic()
    runs = run_matrix(tuple(args.mode or MODES), POLICIES)
    print(table(runs))
    failed = goals(runs)
    print(f"\n{len(failed)} goal(s) not met; {time.monotonic() - start:.0f} s")
    if args.failures:
        print("\n".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
