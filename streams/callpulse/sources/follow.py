"""Follow a live Asterisk ``queue_log`` like ``tail -F``, with a checkpoint.

`QueueLogFollower.batches()` yields a `Batch` of canonical events for the lines appended since the
last poll; the batch's `commit` (called by the publisher once the events are on Kafka) atomically
writes the checkpoint: the file's identity (device, inode, and a fingerprint of its first bytes),
the offset after the batch's last complete line, and the mapper's state (calls waiting or talking,
agents' queues and pauses), so a restart maps the next lines exactly as an uninterrupted run would.

What the file may do, and what the follower does:
- lines are appended: read them; a last line without its newline is held until the newline comes;
- rename rotation (``queue_log`` -> ``queue_log.1``, a new ``queue_log``): finish the old file
  through the open handle (a held partial line is then taken as it is), then read the new one from
  its start. If the follower was down during the rotation, the old file is found again in the same
  directory by its inode and finished first;
- copy-truncate (the file shrinks below the offset, or its first bytes change): read from the start;
- runs of NUL bytes (left by a crash or a copy-truncate): skipped and counted, reading goes on;
- the file is missing for a while: wait for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Mapping

import orjson

from . import Batch, Skips
from .queue_log import QueueLogMapper

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
FINGERPRINT_BYTES = 64  # enough to tell two queue_log files apart: their first line differs
READ_CHUNK = 1 << 16


@dataclass
class _OpenFile:
    """The file being read: its handle and identity, and how far it has been read."""

    handle: Any  # an unbuffered binary file (FileIO)
    device: int
    inode: int
    offset: int  # bytes consumed: everything before it has been turned into events
    pending: bytes = b""  # a partial last line, from `offset` on
    head: bytes = b""  # the file's first FINGERPRINT_BYTES bytes, as last seen


def _fingerprint(head: bytes) -> str:
    return hashlib.sha256(head).hexdigest()


def write_checkpoint(path: Path, checkpoint: Mapping[str, Any]) -> None:
    """Write the checkpoint atomically: a reader sees the old one or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(checkpoint))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> dict | None:
    """The saved checkpoint, or None if there is none. A checkpoint that cannot be read is an
    error (not a silent restart from the beginning): delete it to start over."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    checkpoint = orjson.loads(data)
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint version {checkpoint.get('version')!r}")
    return checkpoint


class QueueLogFollower:
    """Turns a growing queue_log file into batches of events; see the module doc.

    Options (`include_caller`, `agent_aliases`) go to `QueueLogMapper`. `max_batch_bytes` bounds
    how much one batch reads, so a long backlog is published in pieces."""

    def __init__(self, path: str | Path, checkpoint_path: str | Path, source: str, poll_seconds: float = 0.5,
                 *, max_batch_bytes: int = 1 << 20, **mapper_options: Any):
        self.path = Path(path)
        self.checkpoint_path = Path(checkpoint_path)
        self.source = source
        self.poll_seconds = poll_seconds
        self.max_batch_bytes = max_batch_bytes
        self.mapper = QueueLogMapper(source, **mapper_options)
        self.polls = 0  # polls done so far (lets tests wait for "at least one more poll")
        self.rotations = 0  # rename rotations followed
        self.truncations = 0  # copy-truncates (or replacements in place) detected
        self._file: _OpenFile | None = None
        self._finished: _OpenFile | None = None  # the file left at the last rotation (closed)
        self._resume: dict | None = None  # the checkpoint, until the file it names is found again
        self._started = False
        self._stopped = False

    @property
    def skips(self) -> Skips:
        return self.mapper.skips

    def stop(self) -> None:
        """Make `batches()` end after its current poll."""
        self._stopped = True

    async def batches(self) -> AsyncIterator[Batch]:
        """Batches of new events, forever (until `stop()`); polls every `poll_seconds` when idle."""
        self._start()
        try:
            while not self._stopped:
                batch = self.poll()
                if batch is not None:
                    yield batch
                    await asyncio.sleep(0)  # a long backlog must not starve the other tasks
                    continue  # there may be more right away
                await asyncio.sleep(self.poll_seconds)
        finally:
            self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.handle.close()
            self._file = None

    # ---- one poll ------------------------------------------------------------------------------

    def poll(self) -> Batch | None:
        """Read what is new. A Batch if any line was completed (its events may be empty: the
        checkpoint still has to move past lines that map to nothing), else None."""
        self._start()
        self.polls += 1
        lines: list[bytes] = []
        self._read_new_lines(lines)
        if not lines:
            return None
        timed = []
        for raw in lines:
            timed += self.mapper.map_raw_line(raw)
        timed.sort(key=lambda te: te[0])  # stable: the events of one line keep their order
        checkpoint = self._checkpoint()  # taken now: the next poll moves on before this commit
        return Batch([e for _, e in timed], commit=lambda: write_checkpoint(self.checkpoint_path, checkpoint))

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        self._resume = read_checkpoint(self.checkpoint_path)
        if self._resume is not None:
            self.mapper.load_state(self._resume.get("mapper", {}))

    def _read_new_lines(self, lines: list[bytes]) -> None:
        if self._file is None:
            self._file = self._open_first() if self._resume is not None else self._open_path(0)
            if self._file is None:
                return  # no file yet: wait for it
        f = self._file
        if self._was_truncated(f):
            log.warning("queue_log %s was truncated or replaced in place (copy-truncate?): reading it from the start",
                        self.path)
            self.truncations += 1
            self._take_pending(f, lines)
            f.handle.seek(0)
            f.offset, f.head = 0, b""
        if not self._read_available(f, lines):
            return  # stopped at max_batch_bytes: the rest comes with the next poll
        if self._path_identity() in (None, (f.device, f.inode)):
            return  # same file, or no file under the name for now (keep the old one: it may still grow)
        # Rotated: the name is another file now. Finish the old one, then start the new one.
        self._read_available(f, lines, to_end=True)
        self._take_pending(f, lines)
        f.handle.close()
        self._finished = f
        self.rotations += 1
        log.info("queue_log %s was rotated: following the new file", self.path)
        self._file = self._open_path(0)
        if self._file is not None:
            self._read_available(self._file, lines)

    def _read_available(self, f: _OpenFile, lines: list[bytes], to_end: bool = False) -> bool:
        """Append the complete lines now in the file to `lines`; True if the end was reached,
        False if `max_batch_bytes` were read first (unless `to_end`)."""
        read = 0
        while to_end or read < self.max_batch_bytes:
            chunk = f.handle.read(READ_CHUNK if to_end else min(READ_CHUNK, self.max_batch_bytes - read))
            if not chunk:
                break
            read += len(chunk)
            *complete, f.pending = (f.pending + chunk).split(b"\n")
            for raw in complete:
                lines.append(raw)
                f.offset += len(raw) + 1
        else:
            return False
        if len(f.head) < FINGERPRINT_BYTES:
            f.head = os.pread(f.handle.fileno(), FINGERPRINT_BYTES, 0)
        return True

    @staticmethod
    def _take_pending(f: _OpenFile, lines: list[bytes]) -> None:
        """A partial last line whose file is left behind is taken as it is."""
        if f.pending:
            lines.append(f.pending)
            f.offset += len(f.pending)
            f.pending = b""

    @staticmethod
    def _was_truncated(f: _OpenFile) -> bool:
        fd = f.handle.fileno()
        if os.fstat(fd).st_size < f.offset + len(f.pending):
            return True
        return bool(f.head) and os.pread(fd, len(f.head), 0) != f.head

    # ---- opening files -------------------------------------------------------------------------

    def _path_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _open_path(self, offset: int) -> _OpenFile | None:
        try:
            return self._open(self.path, offset)
        except FileNotFoundError:
            return None

    @staticmethod
    def _open(path: Path, offset: int) -> _OpenFile:
        handle = open(path, "rb", buffering=0)
        st = os.fstat(handle.fileno())
        handle.seek(offset)
        return _OpenFile(handle, st.st_dev, st.st_ino, offset, head=os.pread(handle.fileno(), FINGERPRINT_BYTES, 0))

    def _open_first(self) -> _OpenFile | None:
        """After a restart: the checkpointed file at its offset if it is still the file under the
        name (same first bytes, not shorter); else that file under another name in the same
        directory (it was rotated meanwhile: finish it first); else the file under the name from 0."""
        cp = self._resume
        assert cp is not None
        current = self._open_path(0)
        if current is not None and self._is_checkpointed(current):
            current.handle.seek(cp["offset"])
            current.offset = cp["offset"]
            self._resume = None
            return current
        rotated = self._find_rotated(cp)
        if rotated is not None:
            if current is not None:
                current.handle.close()
            log.info("queue_log %s was rotated while stopped: finishing %s first", self.path, rotated)
            old = self._open(rotated, cp["offset"])
            self._resume = None
            return old
        if current is None:
            return None  # neither file is there yet: wait
        log.warning("queue_log %s is not the checkpointed file and the old one was not found (compressed or "
                    "deleted?): reading the new file from the start; lines written to the old file after the "
                    "checkpoint are lost", self.path)
        self._resume = None
        return current

    def _is_checkpointed(self, f: _OpenFile) -> bool:
        cp = self._resume
        assert cp is not None
        head = f.head[: cp["fingerprint_bytes"]]
        return (len(head) == cp["fingerprint_bytes"] and _fingerprint(head) == cp["fingerprint"]
                and os.fstat(f.handle.fileno()).st_size >= cp["offset"])

    def _find_rotated(self, cp: Mapping[str, Any]) -> Path | None:
        try:
            entries = list(os.scandir(self.path.parent))
        except FileNotFoundError:
            return None
        for entry in entries:
            if entry.inode() != cp["inode"] or not entry.is_file() or Path(entry.path) == self.path:
                continue
            candidate = self._open(Path(entry.path), 0)
            try:
                if candidate.device == cp["device"] and self._is_checkpointed(candidate):
                    return Path(entry.path)
            finally:
                candidate.handle.close()
        return None

    def _checkpoint(self) -> dict:
        # Just after a rotation the new file may be gone again: then the finished old file is the
        # position (a restart finds it by its inode and moves on from its end).
        f = self._file or self._finished
        assert f is not None
        return {
            "version": CHECKPOINT_VERSION,
            "path": str(self.path),
            "device": f.device,
            "inode": f.inode,
            "offset": f.offset,
            "fingerprint": _fingerprint(f.head),
            "fingerprint_bytes": len(f.head),
            "mapper": self.mapper.state(),
        }
