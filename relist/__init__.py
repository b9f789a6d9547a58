"""relist: a mailing-list-aware DKIM re-signing relay between Mailman 3 and the MTA.

Data flow, by module:
  edge/smtp_in  ->  app  ->  core.pipeline (core/steps/*)  ->  edge/smtp_out
                     |-> edge/dns (facts the core asks for)
                     '-> edge/store (one record per transaction)
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
