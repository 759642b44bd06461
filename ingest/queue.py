"""The persistent work queue: documents to (re)process, kept in the catalog so it survives any crash.

A job is claimed with a lease and completed inside the transaction that stores its results, so after a
kill -9 a claimed-but-unfinished job runs again and a finished one never does. Enqueueing a job that
already exists bumps its generation instead of adding a second one; if that happens while the job is
being worked on, completing the older generation puts the job back, because the file changed meanwhile.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ingest.catalog import Catalog
from ingest.process import alive

PROCESS = "process"  # parse and chunk a document
MAX_ATTEMPTS = 3  # claims of one job that never finished (the process died on it) before it is given up
CRASHED = (  # a document given up: the reason its status shows
    f"reading it stopped memory3 {MAX_ATTEMPTS} times (a parser crash?); "
    "it is tried again when the file changes"
)


@dataclass(frozen=True)
class Job:
    id: int
    document_id: int
    kind: str
    gen: int
    attempts: int


class JobQueue:
    def __init__(self, catalog: Catalog, lease_s: float = 600.0):
        self.catalog = catalog
        self.lease_s = lease_s

    def enqueue(self, document_id: int, kind: str = PROCESS) -> None:
        """Queue the document: its content is new (a change) or asked for again (a retry). Its unfinished
        claims count its current content only, so they start again from zero: a change made after two
        crashes must not be given up after one more, or unread."""
        with self.catalog.atomic():
            self.catalog.db.execute(
                "INSERT INTO jobs (document_id, kind, enqueued_at) VALUES (?, ?, ?)"
                " ON CONFLICT (document_id, kind) DO UPDATE SET gen = gen + 1, attempts = 0",
                (document_id, kind, time.time()),
            )

    def claim(self) -> Job | None:
        """Lease the oldest free job to this process, or None when there is nothing to do. Leases that ran
        out or whose process is gone are freed first, so the job of a worker killed mid-way runs again."""
        with self.catalog.atomic():
            self.reclaim()
            row = self.catalog.db.execute(
                "SELECT id, document_id, kind, gen, attempts FROM jobs"
                " WHERE lease_until IS NULL ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            self.catalog.db.execute(
                "UPDATE jobs SET lease_pid = ?, lease_until = ?, attempts = attempts + 1 WHERE id = ?",
                (os.getpid(), time.time() + self.lease_s, row[0]),
            )
        return Job(row[0], row[1], row[2], row[3], row[4] + 1)

    def complete(self, job: Job) -> None:
        """Call inside the transaction that stores the job's results."""
        with self.catalog.atomic():
            done = self.catalog.db.execute("DELETE FROM jobs WHERE id = ? AND gen = ?", (job.id, job.gen))
            if not done.rowcount:
                self.release(job)

    def release(self, job: Job) -> None:
        """Give a claimed job back unfinished, for another try."""
        with self.catalog.atomic():
            self.catalog.db.execute(
                "UPDATE jobs SET lease_pid = NULL, lease_until = NULL WHERE id = ?", (job.id,)
            )

    def reclaim(self) -> int:
        """Free the jobs whose lease ran out or whose process is gone; returns how many."""
        with self.catalog.atomic():
            leases = self.catalog.db.execute(
                "SELECT id, lease_pid, lease_until FROM jobs WHERE lease_until IS NOT NULL"
            ).fetchall()
            now = time.time()
            stale = [(job_id,) for job_id, pid, until in leases if until < now or not alive(pid)]
            self.catalog.db.conn.executemany(
                "UPDATE jobs SET lease_pid = NULL, lease_until = NULL WHERE id = ?", stale
            )
        return len(stale)
