"""Placeholder: filled in by the fcn network work."""
