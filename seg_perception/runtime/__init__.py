"""The inference runtime: backends, the pipeline and drivable-area post-processing."""
