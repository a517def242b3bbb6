"""Azure OpenAI's Files and Batch APIs: `store` keeps files and batch jobs in a data folder
(SQLite metadata, contents on disk) that every worker shares and that outlives restarts;
`files` shapes Azure's file objects, checks uploads and pages lists; `jsonl` validates a batch's
input file, `results` moves the batch object and shapes its result lines, and `runner` runs the
jobs. The stage answering the routes is aoai/stages/batches.py."""

from .store import DataStore, FileRecord, Full

__all__ = ["DataStore", "FileRecord", "Full"]
