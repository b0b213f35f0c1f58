"""Placeholder: filled in by the tiramisu network work."""
