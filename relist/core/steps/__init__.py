"""The pipeline's steps, one module each.

Every step module has ``NAME`` (kebab-case, stored in the record and never renamed),
a docstring saying what and why, and ``apply(work, ctx) -> Work``.  The order lives
in ``relist.core.pipeline.STEPS``.
"""
