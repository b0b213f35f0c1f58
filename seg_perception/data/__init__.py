"""Datasets in their official on-disk layouts, and the paired transforms."""
