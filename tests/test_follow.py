"""QueueLogFollower on real files in tmp_path with real asyncio: appends, partial lines, rename
rotation (with the writer still appending to the renamed file), copy-truncate, a missing file, NUL
runs, overlong lines, and restarts from the checkpoint.

Whatever the file does, the events must be exactly those of a batch import of the content written
(each once, none lost). Waits are wait-until loops on the follower's progress, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import time
from pathlib import Path

import orjson
import pytest

from callpulse.sources.follow import MAX_LINE_BYTES, QueueLogFollower, read_checkpoint
from callpulse.sources.queue_log import read_stream

REPO = Path(__file__).resolve().parents[1]
_DATA = REPO.parent / "shared" / "data"
DATA = (_DATA if _DATA.exists() else Path("/work/shared/data")) / "queue_log"
HELPDESK = DATA / "us_it_helpdesk_2018.queue_log"
NUL_FILES = ["freepbx_2022_20220801.queue_log", "freepbx_2022_20221005.queue_log", "freepbx_2022_current.queue_log"]
SOURCE = "asterisk:pbx1"
POLL = 0.005
TIMEOUT = 10.0
ROTATED_IDLE = 0.05  # how long a rotated file must stay unchanged before it is let go (2 s by default)


def batch_import(data: bytes) -> list[dict]:
    return list(read_stream(io.BytesIO(data), SOURCE))


def by_id(events: list[dict]) -> list[dict]:
    return sorted(events, key=lambda e: e["event_id"])


async def wait_until(condition, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(POLL)


class Running:
    """A follower run in a task, publishing like the real publisher: events, then commit."""

    def __init__(self, log: Path, checkpoint: Path, commit: bool = True, **options):
        options.setdefault("rotated_idle_seconds", ROTATED_IDLE)
        self.follower = QueueLogFollower(log, checkpoint, SOURCE, poll_seconds=POLL, **options)
        self.events: list[dict] = []
        self.batches = 0
        self.commit = commit
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for batch in self.follower.batches():
            self.batches += 1
            self.events.extend(batch.events)
            if self.commit and batch.commit is not None:
                batch.commit()

    @property
    def lines(self) -> int:
        return self.follower.mapper.lines

    async def read_lines(self, n: int) -> None:
        await wait_until(lambda: self.lines >= n, f"{n} lines (at {self.lines})")
        assert self.lines == n

    async def more_polls(self, n: int = 3) -> None:
        start = self.follower.polls
        await wait_until(lambda: self.follower.polls >= start + n, f"{n} more polls")

    async def rotated_let_go(self) -> None:
        await wait_until(lambda: self.follower._rotated is None, "the rotated file to be let go")

    async def stop(self) -> list[dict]:
        self.follower.stop()
        await asyncio.wait_for(self.task, TIMEOUT)
        return self.events


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


@pytest.fixture
def helpdesk_lines() -> list[bytes]:
    lines = HELPDESK.read_bytes().splitlines(keepends=True)
    assert len(lines) == 1000
    return lines


async def test_appends_partial_line_rotation_and_copy_truncate_each_arrive_once(tmp_path, helpdesk_lines):
    log, checkpoint = tmp_path / "queue_log", tmp_path / "queue_log.checkpoint"
    a, b, c_old, c_new, d = (b"".join(helpdesk_lines[i:j]) for i, j in
                             ((0, 300), (300, 500), (500, 550), (550, 800), (800, 1000)))
    log.write_bytes(a)
    run = Running(log, checkpoint)
    await run.read_lines(300)

    # Appends, the last line in two pieces: nothing of it shows until its newline is there.
    *whole, last = b.splitlines(keepends=True)
    append(log, b"".join(whole) + last[:20])
    await run.read_lines(499)
    seen = len(run.events)
    await run.more_polls()
    assert run.lines == 499 and len(run.events) == seen
    append(log, last[20:])
    await run.read_lines(500)

    # Rename rotation: the old file still gets lines, the name is missing for a while, then a new file.
    os.rename(log, tmp_path / "queue_log.1")
    append(tmp_path / "queue_log.1", c_old)
    await run.read_lines(550)
    await run.more_polls()
    log.write_bytes(c_new)
    await run.read_lines(800)

    # Copy-truncate: the content is copied away and the file emptied in place, then written again.
    (tmp_path / "queue_log.2").write_bytes(log.read_bytes())
    with open(log, "r+b") as f:
        f.truncate(0)
    append(log, d)
    await run.read_lines(1000)

    events = await run.stop()
    assert (run.follower.rotations, run.follower.truncations) == (1, 1)
    assert len({e["event_id"] for e in events}) == len(events)  # nothing twice
    assert by_id(events) == by_id(batch_import(a + b + c_old + c_new + d))  # nothing lost, same content


async def test_partial_line_left_in_a_rotated_file_is_skipped_when_the_file_is_let_go(tmp_path, helpdesk_lines):
    """The old file ended without a newline (a crash, or a line cut); it was rotated and nothing
    more came. The held text is not mapped (cut text gives wrong fields, and an id a replay of the
    full line would not match): it is counted as a skip once the old file is let go."""
    log = tmp_path / "queue_log"
    old, new = b"".join(helpdesk_lines[:30]), b"".join(helpdesk_lines[30:60])
    log.write_bytes(old[:-1])  # the newline of line 30 never made it
    run = Running(log, tmp_path / "cp")
    await run.read_lines(29)
    await run.more_polls()
    assert run.lines == 29
    os.rename(log, tmp_path / "queue_log.1")
    log.write_bytes(new)
    await run.read_lines(59)
    await run.rotated_let_go()
    await run.read_lines(60)  # the partial line counts as read (and skipped)
    events = await run.stop()
    assert run.follower.skips.counts["partial_line_at_rotation"] == 1
    assert by_id(events) == by_id(batch_import(b"".join(helpdesk_lines[:29]) + new))


async def test_lines_written_to_the_renamed_file_after_the_new_one_appeared_arrive_once_in_order(
        tmp_path, helpdesk_lines):
    """logrotate renames queue_log and creates an empty one; Asterisk writes to the renamed file
    until `logger reload`, then to the new one."""
    log, rotated = tmp_path / "queue_log", tmp_path / "queue_log.1"
    a, b1, b2, c = (b"".join(helpdesk_lines[i:j]) for i, j in ((0, 300), (300, 320), (320, 350), (350, 600)))
    log.write_bytes(a)
    run = Running(log, tmp_path / "cp", rotated_idle_seconds=TIMEOUT)  # not let go while the test writes
    mapped: list[bytes] = []  # the lines in the order they reach the mapper
    map_raw_line = run.follower.mapper.map_raw_line
    run.follower.mapper.map_raw_line = lambda raw: (mapped.append(raw + b"\n"), map_raw_line(raw))[1]
    await run.read_lines(300)
    os.rename(log, rotated)
    log.write_bytes(b"")  # logrotate's `create`
    await wait_until(lambda: run.follower.rotations == 1, "the rotation")
    await run.more_polls()
    append(rotated, b1)  # before the reload: still the old file
    await run.read_lines(320)
    await run.more_polls()
    append(rotated, b2)  # the last lines before the reload, and the first after it, both seen by the
    append(log, c)  # same poll (no await in between): the old file must be read first
    await run.read_lines(600)
    run.follower.rotated_idle_seconds = ROTATED_IDLE
    await run.rotated_let_go()
    events = await run.stop()
    assert run.follower.rotations == 1
    assert b"".join(mapped) == a + b1 + b2 + c  # each line once, in the order written
    assert len({e["event_id"] for e in events}) == len(events)
    assert by_id(events) == by_id(batch_import(a + b1 + b2 + c))


async def test_partial_line_in_the_renamed_file_completed_later_arrives_complete_once(tmp_path, helpdesk_lines):
    log, rotated = tmp_path / "queue_log", tmp_path / "queue_log.1"
    a, c1, c2 = (b"".join(helpdesk_lines[i:j]) for i, j in ((0, 100), (101, 104), (104, 200)))
    line = helpdesk_lines[100]
    log.write_bytes(a + line[:20])
    run = Running(log, tmp_path / "cp", rotated_idle_seconds=TIMEOUT)  # not let go while the test writes
    await run.read_lines(100)
    os.rename(log, rotated)
    log.write_bytes(c1)  # the new file already has lines
    await run.read_lines(103)
    await run.more_polls()
    append(rotated, line[20:])  # the writer finishes its line in the old file
    await run.read_lines(104)
    append(log, c2)
    await run.read_lines(200)
    run.follower.rotated_idle_seconds = ROTATED_IDLE
    await run.rotated_let_go()
    events = await run.stop()
    assert "partial_line_at_rotation" not in run.follower.skips.counts
    assert len({e["event_id"] for e in events}) == len(events)
    assert by_id(events) == by_id(batch_import(a + c1 + line + c2))  # read in that order, the line whole


async def test_restart_while_a_rotated_file_is_still_read_goes_on_reading_both(tmp_path, helpdesk_lines):
    log, rotated, checkpoint = tmp_path / "queue_log", tmp_path / "queue_log.1", tmp_path / "cp"
    a, b, c = (b"".join(helpdesk_lines[i:j]) for i, j in ((0, 300), (300, 350), (350, 600)))
    log.write_bytes(a)
    first = Running(log, checkpoint, rotated_idle_seconds=TIMEOUT)
    await first.read_lines(300)
    os.rename(log, rotated)
    log.write_bytes(b"")
    await wait_until(lambda: first.follower.rotations == 1, "the rotation")
    await first.more_polls()  # the batch that moved to the new file is committed
    before = await first.stop()
    saved = read_checkpoint(checkpoint)
    assert saved["inode"] == os.stat(log).st_ino
    assert (saved["rotated"]["inode"], saved["rotated"]["offset"]) == (os.stat(rotated).st_ino, len(a))

    append(rotated, b)  # written to the old file while the follower was down
    append(log, c)
    second = Running(log, checkpoint)
    await second.read_lines(300)
    await second.rotated_let_go()
    await second.more_polls()
    after = await second.stop()
    assert "rotated" not in read_checkpoint(checkpoint)
    assert by_id(before + after) == by_id(batch_import(a + b + c))
    assert len({e["event_id"] for e in before + after}) == len(before + after)


async def test_truncated_and_refilled_beyond_the_offset_is_detected_by_the_first_bytes(tmp_path, helpdesk_lines):
    log, checkpoint = tmp_path / "queue_log", tmp_path / "cp"
    first, second = b"".join(helpdesk_lines[:100]), b"".join(helpdesk_lines[100:400])
    log.write_bytes(first)
    run = Running(log, checkpoint)
    await run.read_lines(100)
    log.write_bytes(second)  # truncates and writes more than before in one go: size never drops below offset
    await run.read_lines(400)
    events = await run.stop()
    assert by_id(events) == by_id(batch_import(first + second))


async def test_waits_for_a_missing_file(tmp_path, helpdesk_lines):
    log = tmp_path / "queue_log"
    run = Running(log, tmp_path / "cp")
    await run.more_polls()
    assert run.events == []
    log.write_bytes(b"".join(helpdesk_lines[:50]))
    await run.read_lines(50)
    events = await run.stop()
    assert by_id(events) == by_id(batch_import(b"".join(helpdesk_lines[:50])))


async def test_restart_from_checkpoint_continues_without_repeats(tmp_path, helpdesk_lines):
    log, checkpoint = tmp_path / "queue_log", tmp_path / "cp"
    a, b = b"".join(helpdesk_lines[:420]), b"".join(helpdesk_lines[420:])
    log.write_bytes(a)
    first = Running(log, checkpoint)
    await first.read_lines(420)
    before = await first.stop()
    saved = read_checkpoint(checkpoint)
    assert saved["offset"] == len(a) and saved["inode"] == os.stat(log).st_ino
    assert not (tmp_path / "cp.tmp").exists()

    append(log, b)
    second = Running(log, checkpoint)
    await second.read_lines(580)
    after = await second.stop()
    assert not {e["event_id"] for e in before} & {e["event_id"] for e in after}
    # With the mapper's state in the checkpoint, the events are those of one uninterrupted import.
    assert by_id(before + after) == by_id(batch_import(a + b))

    third = Running(log, checkpoint)  # nothing new: nothing again
    await third.more_polls()
    assert await third.stop() == []


async def test_a_backlog_is_read_in_bounded_batches(tmp_path, helpdesk_lines):
    log = tmp_path / "queue_log"
    log.write_bytes(b"".join(helpdesk_lines))
    run = Running(log, tmp_path / "cp", max_batch_bytes=4096)
    await run.read_lines(1000)
    events = await run.stop()
    assert run.batches >= len(b"".join(helpdesk_lines)) // 4096
    assert by_id(events) == by_id(batch_import(b"".join(helpdesk_lines)))


async def test_checkpoint_is_written_only_by_commit(tmp_path, helpdesk_lines):
    log, checkpoint = tmp_path / "queue_log", tmp_path / "cp"
    log.write_bytes(b"".join(helpdesk_lines[:100]))
    run = Running(log, checkpoint, commit=False)
    await run.read_lines(100)
    await run.stop()
    assert not checkpoint.exists()
    again = Running(log, checkpoint)  # so a restart reads the same lines again, with the same ids
    await again.read_lines(100)
    assert [e["event_id"] for e in await again.stop()] == [e["event_id"] for e in run.events]


async def test_rotation_while_stopped_finishes_the_old_file_first(tmp_path, helpdesk_lines):
    log, checkpoint = tmp_path / "queue_log", tmp_path / "cp"
    a, c, d = (b"".join(helpdesk_lines[i:j]) for i, j in ((0, 300), (300, 350), (350, 600)))
    log.write_bytes(a)
    first = Running(log, checkpoint)
    await first.read_lines(300)
    before = await first.stop()
    os.rename(log, tmp_path / "queue_log.1")
    append(tmp_path / "queue_log.1", c)  # written to the old file before it was let go
    log.write_bytes(d)
    second = Running(log, checkpoint)
    await second.read_lines(300)
    after = await second.stop()
    assert by_id(before + after) == by_id(batch_import(a + c + d))


async def test_copy_truncate_while_stopped_reads_the_new_content_from_the_start(tmp_path, helpdesk_lines):
    log, checkpoint = tmp_path / "queue_log", tmp_path / "cp"
    a, d = b"".join(helpdesk_lines[:300]), b"".join(helpdesk_lines[300:400])
    log.write_bytes(a)
    first = Running(log, checkpoint)
    await first.read_lines(300)
    before = await first.stop()
    with open(log, "r+b") as f:
        f.truncate(0)
        f.write(d)
    second = Running(log, checkpoint)
    await second.read_lines(100)
    after = await second.stop()
    assert by_id(before + after) == by_id(batch_import(a + d))


@pytest.mark.parametrize("name", NUL_FILES)
async def test_nul_file_resumes_from_a_checkpoint_taken_before_the_nul_run(tmp_path, name):
    data = (DATA / name).read_bytes()
    cut = data.index(b"\x00")
    assert data[cut - 1:cut] == b"\n"  # the run starts a line in these files
    prefix, rest = data[:cut], data[cut:]
    log, checkpoint = tmp_path / "queue_log", tmp_path / "cp"
    log.write_bytes(prefix)
    first = Running(log, checkpoint)
    await first.read_lines(prefix.count(b"\n"))
    before = await first.stop()

    append(log, rest)
    second = Running(log, checkpoint)
    await second.read_lines(rest.replace(b"\x00", b"").count(b"\n"))
    after = await second.stop()
    skips = second.follower.skips.counts
    assert skips["nul_bytes"] == len(re.findall(rb"\x00+", rest))
    assert skips["ignored:QUEUESTART"] == rest.count(b"|QUEUESTART")  # the line right after a run is read
    assert not [r for r in skips if r.startswith(("malformed", "unknown"))]

    whole = batch_import(data)
    assert by_id(before) == by_id(batch_import(prefix))
    assert by_id(after) == by_id([e for e in whole if e["event_id"] not in {x["event_id"] for x in before}])
    assert by_id(before + after) == by_id(whole)


async def test_nul_run_at_the_end_is_held_then_read_with_the_line_after_it(tmp_path, helpdesk_lines):
    """A crash leaves zeros at the end; the writer later continues right after them."""
    log = tmp_path / "queue_log"
    head, tail = b"".join(helpdesk_lines[:10]), b"".join(helpdesk_lines[10:20])
    log.write_bytes(head + b"\x00" * 78)
    run = Running(log, tmp_path / "cp")
    await run.read_lines(10)
    await run.more_polls()
    append(log, tail)
    await run.read_lines(20)
    events = await run.stop()
    assert run.follower.skips.counts["nul_bytes"] == 1
    assert by_id(events) == by_id(batch_import(head + tail))


async def test_checkpoint_is_json_with_the_file_identity(tmp_path, helpdesk_lines):
    log, checkpoint = tmp_path / "queue_log", tmp_path / "cp"
    log.write_bytes(b"".join(helpdesk_lines[:5]) + helpdesk_lines[5][:10])  # ends in a partial line
    run = Running(log, checkpoint)
    await run.read_lines(5)
    await run.stop()
    saved = orjson.loads(checkpoint.read_bytes())
    st = os.stat(log)
    assert (saved["device"], saved["inode"]) == (st.st_dev, st.st_ino)
    assert saved["offset"] == len(b"".join(helpdesk_lines[:5]))  # the partial line is not consumed
    assert saved["fingerprint_bytes"] == 64 and len(saved["fingerprint"]) == 64
    assert "waiting" in saved["mapper"]


async def test_a_long_nul_run_is_read_in_linear_time_holding_little(tmp_path, helpdesk_lines):
    """A copy-truncate by a writer without O_APPEND leaves a NUL run as long as the old file. It is
    shrunk as it is read: one skip, the lines around it arrive, little is held, and the other tasks
    run between the polls (the time is printed, not asserted)."""
    log = tmp_path / "queue_log"
    first, second = helpdesk_lines[0], helpdesk_lines[1]
    with open(log, "wb") as f:
        f.write(first)
        for _ in range(32):
            f.write(b"\x00" * (1 << 20))
        f.write(second)
    seen_polls = set()
    run = Running(log, tmp_path / "cp")  # 1 MB per poll: 33 polls

    async def other_task() -> None:
        while True:
            seen_polls.add(run.follower.polls)
            await asyncio.sleep(0)

    other = asyncio.create_task(other_task())
    cpu = time.process_time()
    await run.read_lines(2)
    cpu = time.process_time() - cpu
    other.cancel()
    events = await run.stop()
    print(f"32 MB NUL run: {cpu:.3f} s of CPU, {run.follower.polls} polls")
    assert run.follower.skips.counts["nul_bytes"] == 1
    assert run.follower.longest_pending <= len(second) + 1
    assert len(seen_polls) >= 16  # the loop ran other tasks while the run was read
    assert by_id(events) == by_id(batch_import(first + b"\x00" + second))


async def test_a_line_too_long_is_dropped_and_counted(tmp_path, helpdesk_lines):
    log, checkpoint = tmp_path / "queue_log", tmp_path / "cp"
    first, second = b"".join(helpdesk_lines[:10]), b"".join(helpdesk_lines[10:20])
    garbage = b"x" * (3 * MAX_LINE_BYTES)
    log.write_bytes(first + garbage[:MAX_LINE_BYTES // 2])
    run = Running(log, checkpoint)
    await run.read_lines(10)
    append(log, garbage[MAX_LINE_BYTES // 2:])  # it grows past the limit while held
    await run.more_polls()
    append(log, b"\n" + second)
    await run.read_lines(21)  # the dropped line counts as read
    events = await run.stop()
    assert run.follower.skips.counts["line_too_long"] == 1
    assert run.follower.longest_pending <= MAX_LINE_BYTES
    assert by_id(events) == by_id(batch_import(first + second))
    assert read_checkpoint(checkpoint)["offset"] == log.stat().st_size

    again = Running(log, checkpoint)  # a restart goes on after it: nothing again
    await again.more_polls()
    assert await again.stop() == []
