"""relist's pure core: bytes, policy, facts and time in; bytes, record and reply out."""

from relist.core.pipeline import INGRESS_STEPS, STEPS, plan, process

__all__ = ["INGRESS_STEPS", "STEPS", "plan", "process"]
