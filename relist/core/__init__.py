"""relist's pure core: bytes, policy, facts and time in; bytes, record and reply out."""

from relist.core.pipeline import STEPS, plan, process

__all__ = ["STEPS", "plan", "process"]
