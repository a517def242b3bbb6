"""The data folder's store: files and their bounds, expiry, and batch jobs shared by processes."""

from __future__ import annotations

import threading

import pytest

from aoai.batch.store import DataStore, Full

DAY = 86_400


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def store(folder, clock, **bounds) -> DataStore:
    return DataStore(folder, bounds.pop("max_bytes", 1_000_000), clock=clock, **bounds)


def test_a_file_is_kept_read_and_deleted(tmp_path, clock):
    data = store(tmp_path, clock)
    record = data.add_file("in.jsonl", "batch", b'{"a":1}\n', None)
    assert record.id.startswith("file-") and len(record.id) == 5 + 32
    assert record.to_json() == {
        "id": record.id,
        "object": "file",
        "bytes": 8,
        "created_at": 1_700_000_000,
        "filename": "in.jsonl",
        "purpose": "batch",
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }
    assert data.get_file(record.id) == record
    assert data.file_path(record.id).read_bytes() == b'{"a":1}\n'
    assert data.delete_file(record.id) is True
    assert data.get_file(record.id) is None and not data.file_path(record.id).exists()
    assert data.delete_file(record.id) is False


def test_another_store_on_the_folder_sees_the_files(tmp_path, clock):
    one, two = store(tmp_path, clock), store(tmp_path, clock)
    record = one.add_file("a.jsonl", "batch", b"x", None)
    assert two.get_file(record.id) == record
    assert store(tmp_path, clock).usage()["count"] == 1  # and a restart


def test_lists_page_in_either_order_and_by_purpose(tmp_path, clock):
    data = store(tmp_path, clock)
    ids = [data.add_file(f"{i}.jsonl", "batch" if i % 2 == 0 else "assistants", b"x", None).id for i in range(5)]
    page, more = data.list_files(None, None, 2, "asc")
    assert [r.id for r in page] == ids[:2] and more
    page, more = data.list_files(None, ids[1], 10, "asc")
    assert [r.id for r in page] == ids[2:] and not more
    page, more = data.list_files(None, None, 10, "desc")
    assert [r.id for r in page] == ids[::-1] and not more
    page, _ = data.list_files("batch", ids[4], 10, "desc")
    assert [r.id for r in page] == [ids[2], ids[0]]


def test_files_without_expiry_are_bounded_as_azure_bounds_them(tmp_path, clock):
    data = store(tmp_path, clock, max_files=2, max_files_with_expiry=3)
    data.add_file("a", "batch", b"x", None)
    data.add_file("b", "batch", b"x", None)
    with pytest.raises(Full) as e:
        data.add_file("c", "batch", b"x", None)
    assert e.value.code == "quotaExceeded"
    assert e.value.message == "The quota for files without expiry is reached. The maximum is 2."
    data.add_file("c", "batch", b"x", int(clock.now) + 14 * DAY)  # with an expiry it still fits
    with pytest.raises(Full, match=r"files with expiry is reached\. The maximum is 3"):
        data.add_file("d", "batch", b"x", int(clock.now) + 14 * DAY)
    assert len(list((tmp_path / "scratch").iterdir())) == 0  # nothing left behind


def test_the_bytes_of_all_files_are_bounded(tmp_path, clock):
    data = store(tmp_path, clock, max_bytes=10)
    data.add_file("a", "batch", b"x" * 6, None)
    with pytest.raises(Full, match="total size"):
        data.add_file("b", "batch", b"x" * 5, None)
    data.add_file("b", "batch", b"x" * 4, None)
    assert data.usage()["bytes"] == 10


def test_outputs_are_moved_in_and_count_too(tmp_path, clock):
    data = store(tmp_path, clock, max_files=1)
    path = data.scratch("out")
    path.write_bytes(b'{"custom_id":"t"}\n')
    record = data.add_file_from(path, "out.jsonl", "batch_output", None)
    assert len(record.id) == 5 + 36 and not path.exists()
    assert data.file_path(record.id).read_bytes() == b'{"custom_id":"t"}\n'
    path.write_bytes(b"y")
    with pytest.raises(Full):
        data.add_file_from(path, "out2.jsonl", "batch_output", None)
    assert path.exists()  # left where it was


def test_expired_files_read_as_deleted_and_are_swept(tmp_path, clock):
    data = store(tmp_path, clock, max_files_with_expiry=2)
    record = data.add_file("a", "batch", b"x", int(clock.now) + 14 * DAY)
    data.add_file("b", "batch", b"x", int(clock.now) + 20 * DAY)
    clock.now += 14 * DAY
    assert data.get_file(record.id) is None
    assert [r.filename for r in data.list_files(None, None, 10, "asc")[0]] == ["b"]
    assert not data.file_path(record.id).exists()  # the list swept it
    data.add_file("c", "batch", b"x", int(clock.now) + 14 * DAY)  # its room is free again


def batch(batch_id: str, status: str = "validating") -> dict:
    return {"id": batch_id, "object": "batch", "status": status}


def test_batches_are_kept_listed_and_saved(tmp_path, clock):
    data = store(tmp_path, clock)
    for i in range(3):
        data.add_batch(batch(f"batch_{i}"), "gpt-4o-batch", 100)
    assert data.get_batch("batch_1") == batch("batch_1")
    page, more = data.list_batches(None, 2)
    assert [b["id"] for b in page] == ["batch_2", "batch_1"] and more
    page, more = data.list_batches("batch_1", 2)
    assert [b["id"] for b in page] == ["batch_0"] and not more
    data.save_batch(batch("batch_1", "in_progress"), {"next_line": 7})
    assert data.get_batch("batch_1")["status"] == "in_progress"
    assert data.progress("batch_1") == {"next_line": 7}
    data.save_batch(batch("batch_1", "finalizing"))
    assert data.progress("batch_1") == {"next_line": 7}  # kept when not given
    assert data.progress("batch_x") == {} and data.get_batch("batch_x") is None


def test_enqueued_tokens_count_the_unfinished_jobs_of_a_deployment(tmp_path, clock):
    data = store(tmp_path, clock)
    data.add_batch(batch("batch_a"), "d1", 100)
    data.add_batch(batch("batch_b"), "d1", 50)
    data.add_batch(batch("batch_c"), "d2", 7)
    assert data.enqueued_tokens("d1") == 150
    data.save_batch(batch("batch_a", "completed"))
    assert data.enqueued_tokens("d1") == 50 and data.enqueued_tokens("d3") == 0


def test_finished_batches_make_room_for_new_ones(tmp_path, clock):
    data = store(tmp_path, clock, max_batches=2)
    data.add_batch(batch("batch_a", "completed"), "d", 1)
    data.add_batch(batch("batch_b"), "d", 1)
    data.add_batch(batch("batch_c"), "d", 1)
    assert data.get_batch("batch_a") is None
    with pytest.raises(Full, match="batch jobs"):
        data.add_batch(batch("batch_d"), "d", 1)


def test_a_job_is_claimed_by_exactly_one_of_two_processes(tmp_path, clock):
    one, two = store(tmp_path, clock), store(tmp_path, clock)
    for i in range(20):
        one.add_batch(batch(f"batch_{i}"), "d", 1)
    one.add_batch(batch("batch_done", "completed"), "d", 1)
    got: dict[str, list[str]] = {}

    def claim(name: str, data: DataStore) -> None:
        got[name] = data.claim(name, 30)

    threads = [threading.Thread(target=claim, args=(n, s)) for n, s in (("one", one), ("two", two))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = got["one"] + got["two"]
    assert sorted(claimed) == sorted(f"batch_{i}" for i in range(20))  # each once, the finished never
    assert one.claim("one", 30) == [] and two.claim("two", 30) == []


def test_leases_expire_renew_and_release(tmp_path, clock):
    one, two = store(tmp_path, clock), store(tmp_path, clock)
    one.add_batch(batch("batch_a"), "d", 1)
    assert one.claim("one", 30) == ["batch_a"]
    clock.now += 20
    assert one.renew("one", "batch_a", 30)
    clock.now += 20
    assert two.claim("two", 30) == []  # renewed: still held
    clock.now += 11
    assert two.claim("two", 30) == ["batch_a"]  # lapsed: taken over
    assert not one.renew("one", "batch_a", 30)  # the first holder learns it lost it
    one.release("one", "batch_a")  # a lost job's release changes nothing
    assert one.claim("one", 30) == []
    two.release("two", "batch_a")
    assert one.claim("one", 30) == ["batch_a"]


def test_ids_never_leave_the_folder(tmp_path, clock):
    data = store(tmp_path, clock)
    with pytest.raises(ValueError):
        data.file_path("../x")
    assert data.get_file("../../etc/passwd") is None
