"""Bulk submission: ``BatchSubmitter`` pays for each job exactly once, follows and downloads it.

The package splits a batch's decisions from its I/O (see ``DESIGN.md``): ``plan`` (what to do
with a job given its journal record), ``gate`` (whether the budget and the accounts let a create
go now), ``verdicts`` (what a create's error means for the job and the batch) and ``follow``
(which followed tasks are due for a refresh) are pure functions over plain data; ``submitter``
is the I/O around them, one coroutine per job's life.
"""

from vidu_async.batch.submitter import BatchObserver, BatchOptions, BatchSubmitter, account_label

__all__ = ["BatchObserver", "BatchOptions", "BatchSubmitter", "account_label"]
