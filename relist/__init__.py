"""relist: a mailing-list-aware DKIM re-signing relay between Mailman 3 and the MTA.

Data flow, by module:
  edge/smtp_in  ->  app  ->  core.pipeline (core/steps/*)  ->  edge/smtp_out
                     |-> edge/dns (facts the core asks for)
                     '-> edge/store (one record per transaction)
"""

from relist import core_build

__version__ = "0.1.0"

# Which build of relist/core runs, compiled or its Python sources, and why: decided
# before any core module loads (relist/core_build.py).  A RELIST_CORE that cannot be
# met leaves none: each core import raises ImportError saying why, and the CLI says
# it in one line (exit 2).
try:
    BUILD = core_build.select()
except core_build.ChoiceError as exc:
    BUILD = core_build.refuse(str(exc))

__all__ = ["BUILD", "__version__"]
