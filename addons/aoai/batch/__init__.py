"""Batch and Files APIs: stored files, batch input validation, batch objects and their jobs."""
