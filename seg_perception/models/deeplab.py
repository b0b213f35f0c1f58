"""Placeholder: filled in by the deeplab network work."""
