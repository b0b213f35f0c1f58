"""Placeholder: filled in by the unet network work."""
