"""Placeholder: filled in by the context network work."""
