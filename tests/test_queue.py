"""The persistent job queue: idempotent enqueue, leases, completion, and reclaiming dead workers' jobs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.catalog import Catalog
from ingest.queue import JobQueue


def document(catalog: Catalog, tmp_path: Path, name: str = "a.txt") -> int:
    folder = catalog.folders()[0] if catalog.folders() else catalog.add_folder(tmp_path)
    return catalog.insert_document(folder.id, name, 1, 1, None)


def test_enqueueing_twice_gives_one_job(catalog: Catalog, tmp_path: Path):
    queue = JobQueue(catalog)
    doc = document(catalog, tmp_path)
    queue.enqueue(doc)
    queue.enqueue(doc)
    job = queue.claim()
    assert job is not None and job.document_id == doc
    assert queue.claim() is None  # leased, and there is no second one
    queue.complete(job)
    assert catalog.counts()["jobs"] == 0


def test_jobs_come_out_oldest_first(catalog: Catalog, tmp_path: Path):
    queue = JobQueue(catalog)
    docs = [document(catalog, tmp_path, f"{i}.txt") for i in range(3)]
    for doc in reversed(docs):
        queue.enqueue(doc)
    claimed = [queue.claim() for _ in docs]
    assert [job.document_id for job in claimed] == list(reversed(docs))


def test_a_job_enqueued_again_while_worked_on_runs_again(catalog: Catalog, tmp_path: Path):
    queue = JobQueue(catalog)
    doc = document(catalog, tmp_path)
    queue.enqueue(doc)
    first = queue.claim()
    queue.enqueue(doc)  # the file changed while it was being parsed
    queue.complete(first)
    second = queue.claim()
    assert second is not None and second.id == first.id and second.gen == first.gen + 1
    queue.complete(second)
    assert queue.claim() is None


def test_a_released_job_can_be_claimed_again(catalog: Catalog, tmp_path: Path):
    queue = JobQueue(catalog)
    queue.enqueue(document(catalog, tmp_path))
    job = queue.claim()
    queue.release(job)
    again = queue.claim()
    assert again.id == job.id and again.attempts == 2


def test_jobs_survive_closing_the_catalog(tmp_path: Path):
    catalog = Catalog(tmp_path / "c.db")
    JobQueue(catalog).enqueue(document(catalog, tmp_path))
    catalog.close()
    catalog = Catalog(tmp_path / "c.db")
    assert JobQueue(catalog).claim() is not None
    catalog.close()


def test_reclaim_frees_jobs_of_dead_processes_and_expired_leases_only(catalog: Catalog, tmp_path: Path):
    queue = JobQueue(catalog)
    docs = [document(catalog, tmp_path, f"{i}.txt") for i in range(3)]
    for doc in docs:
        queue.enqueue(doc)
    jobs = [queue.claim() for _ in docs]
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    catalog.db.execute("UPDATE jobs SET lease_pid = ? WHERE id = ?", (int(dead.stdout), jobs[0].id))
    catalog.db.execute("UPDATE jobs SET lease_until = 0 WHERE id = ?", (jobs[1].id,))
    assert queue.reclaim() == 2
    assert {queue.claim().id, queue.claim().id} == {jobs[0].id, jobs[1].id}
    assert queue.claim() is None  # jobs[2] is still ours, leased and alive


def test_deleting_a_document_removes_its_job(catalog: Catalog, tmp_path: Path):
    queue = JobQueue(catalog)
    doc = document(catalog, tmp_path)
    queue.enqueue(doc)
    catalog.delete_documents([doc])
    assert queue.claim() is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["crash", "change"]), max_size=12))
def test_a_claims_attempts_count_the_content_since_it_last_changed(tmp_path_factory, events):
    """Unfinished claims (the process died) are counted per content: enqueueing a changed file started from
    the old count, so a change made after MAX_ATTEMPTS crashes was given up unread."""
    folder = tmp_path_factory.mktemp("queue")
    catalog = Catalog(folder / "c.db")
    queue = JobQueue(catalog)
    doc = document(catalog, folder)
    queue.enqueue(doc)
    since_change = 0
    for event in events:
        if event == "crash":
            job = queue.claim()
            assert job.attempts == since_change + 1
            queue.release(job)
            since_change += 1
        else:
            queue.enqueue(doc)
            since_change = 0
    assert queue.claim().attempts == since_change + 1
    catalog.close()
