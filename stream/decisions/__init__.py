"""Decisions: from each frame's top-5 to a steady label, label segments and rule events (stream.decisions.hub)."""
