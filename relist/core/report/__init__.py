"""Diagnostics from the store, pure: the per-post report (``aggregate``, ``text``,
``html``, ``svg``) and the story of one post (``story``, ``story_text``).  The store is
read at the edge (relist.edge.history); nothing here does IO."""

__all__ = ["aggregate", "html", "notes", "story", "story_text", "svg", "text"]
