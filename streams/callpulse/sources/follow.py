"""Follow a live Asterisk ``queue_log`` like ``tail -F``, with a checkpoint.

`QueueLogFollower.batches()` yields a `Batch` of canonical events for the lines appended since the
last poll; the batch's `commit` (called by the publisher once the events are on Kafka) atomically
writes the checkpoint: the file's identity (device, inode, and a fingerprint of its first bytes),
the offset after the batch's last complete line, and the mapper's state (calls waiting or talking,
agents' queues and pauses), so a restart maps the next lines exactly as an uninterrupted run would.

What the file may do, and what the follower does:
- lines are appended: read them; a last line without its newline is held until the newline comes;
- rename rotation (``queue_log`` -> ``queue_log.1``, a new ``queue_log``): read the new file from
  its start, and keep reading the old one through the open handle (first, in each poll) until it
  has not grown for `rotated_idle_seconds` and `ROTATED_IDLE_POLLS` polls: Asterisk goes on
  writing to the renamed file until ``logger reload``. A partial line still held when the old file
  is let go is skipped (``partial_line_at_rotation``): its text is cut, mapping it would give wrong
  fields and an id that a replay of the full line would not match. While both files are read, the
  checkpoint names both. If the follower was down during the rotation, the old file is found again
  in the same directory by its inode and read first;
- copy-truncate (the file shrinks below what was read, or its first bytes change): read from the start;
- runs of NUL bytes (left by a crash or a copy-truncate): skipped and counted, reading goes on. A
  run is as long as the old file after a copy-truncate by a writer without O_APPEND, so it is
  shrunk to one NUL as it is read (the mapper takes that NUL as a line break and counts it);
- a line longer than `MAX_LINE_BYTES` (garbage, not Asterisk's): dropped and counted
  (``line_too_long``), so what is held in memory stays bounded;
- the file is missing for a while: wait for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from . import Batch, Skips
from .queue_log import QueueLogMapper, _safe_example, decode

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
FINGERPRINT_BYTES = 64  # enough to tell two queue_log files apart: their first line differs
READ_CHUNK = 1 << 16
MAX_LINE_BYTES = 1 << 16  # Asterisk's lines are about 8 KB at most (ast_queue_log's buffer, main/logger.c)
ROTATED_IDLE_POLLS = 3  # a rotated file is let go after this many polls without growth ...
ROTATED_IDLE_SECONDS = 2.0  # ... and this long (the default of `rotated_idle_seconds`)
_NUL_RUN = re.compile(rb"\x00+")


@dataclass
class _OpenFile:
    """A file being read: its handle and identity, and how far it has been read."""

    handle: Any  # an unbuffered binary file (FileIO)
    device: int
    inode: int
    offset: int  # bytes consumed: everything before it has been turned into lines
    read_to: int  # bytes read: `offset` plus what `pending` holds (NUL runs shrunk) or drops
    pending: bytes = b""  # a partial last line, read from `offset` on
    dropping: bool = False  # the line being read is too long: drop it up to its newline
    head: bytes = b""  # the file's first FINGERPRINT_BYTES bytes, as last seen
    idle_polls: int = 0  # once rotated: polls since it last grew ...
    grew_at: float = 0.0  # ... and when that was (time.monotonic())


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
    how much one poll reads, so a long backlog is published in pieces. `rotated_idle_seconds`: how
    long a rotated file must stay unchanged before it is let go."""

    def __init__(self, path: str | Path, checkpoint_path: str | Path, source: str, poll_seconds: float = 0.5,
                 *, max_batch_bytes: int = 1 << 20, rotated_idle_seconds: float = ROTATED_IDLE_SECONDS,
                 **mapper_options: Any):
        self.path = Path(path)
        self.checkpoint_path = Path(checkpoint_path)
        self.source = source
        self.poll_seconds = poll_seconds
        self.max_batch_bytes = max_batch_bytes
        self.rotated_idle_seconds = rotated_idle_seconds
        self.mapper = QueueLogMapper(source, **mapper_options)
        self.polls = 0  # polls done so far (lets tests wait for "at least one more poll")
        self.rotations = 0  # rename rotations followed
        self.truncations = 0  # copy-truncates (or replacements in place) detected
        self.longest_pending = 0  # the most bytes ever held for a partial line (<= MAX_LINE_BYTES)
        self._file: _OpenFile | None = None  # the file under the name
        self._rotated: _OpenFile | None = None  # the file renamed away, still read until it is idle
        self._resume: dict | None = None  # the checkpoint, until the file it names is found again
        self._budget = 0  # bytes this poll may still read
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
                if batch is not None or self._budget <= 0:  # the poll stopped at max_batch_bytes
                    await asyncio.sleep(0)  # there may be more right away; let the other tasks run first
                    continue
                await asyncio.sleep(self.poll_seconds)
        finally:
            self.close()

    def close(self) -> None:
        for f in (self._file, self._rotated):
            if f is not None:
                f.handle.close()
        self._file = self._rotated = None

    # ---- one poll ------------------------------------------------------------------------------

    def poll(self) -> Batch | None:
        """Read what is new. A Batch if the files were read further (its events may be empty: the
        checkpoint still has to move past lines that map to nothing), else None."""
        self._start()
        self.polls += 1
        self._budget = self.max_batch_bytes
        before = self._positions()
        lines: list[bytes] = []
        self._read_new_lines(lines)
        if not lines and self._positions() == before:
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
        if self._resume is None:
            return
        self.mapper.load_state(self._resume.get("mapper", {}))
        rotated = self._resume.get("rotated")
        if rotated is not None:  # stopped while a rotated file was still read: go on reading it
            path = self._find_rotated(rotated)
            if path is None:
                log.warning("queue_log %s: the rotated file named in the checkpoint was not found (compressed or "
                            "deleted?): lines written to it after the checkpoint are lost", self.path)
            else:
                self._rotated = self._open(path, rotated["offset"])
                self._rotated.grew_at = time.monotonic()

    def _read_new_lines(self, lines: list[bytes]) -> None:
        if self._file is None:
            self._file = self._open_first() if self._resume is not None else self._open_path(0)
        if self._rotated is not None and not self._read_rotated(lines):
            return  # stopped at max_batch_bytes: the rest comes with the next poll
        f = self._file
        if f is None:
            return  # no file under the name yet: wait for it
        if self._was_truncated(f):
            log.warning("queue_log %s was truncated or replaced in place (copy-truncate?): reading it from the start",
                        self.path)
            self.truncations += 1
            if f.pending and not f.dropping:
                lines.append(f.pending)  # taken as it is
            f.handle.seek(0)
            f.offset = f.read_to = 0
            f.pending, f.dropping, f.head = b"", False, b""
        if not self._read_available(f, lines):
            return
        if self._path_identity() in (None, (f.device, f.inode)):
            return  # same file, or no file under the name for now (keep the old one: it may still grow)
        # Rotated: the name is another file now. Keep reading the old one (Asterisk writes to it
        # until `logger reload`) and start the new one.
        if self._rotated is not None:  # rotated again before the previous one was let go
            self._let_go(self._rotated, lines)
        self._rotated = f
        f.idle_polls, f.grew_at = 0, time.monotonic()
        self.rotations += 1
        log.info("queue_log %s was rotated: following the new file (and the old one until it stops growing)",
                 self.path)
        self._file = self._open_path(0)
        if self._file is not None:
            self._read_available(self._file, lines)

    def _read_rotated(self, lines: list[bytes]) -> bool:
        """Read the rotated file; let it go once it has been idle long enough and the new file is
        there. False if `max_batch_bytes` were read first."""
        f = self._rotated
        assert f is not None
        read_to = f.read_to
        if not self._read_available(f, lines):
            return False
        now = time.monotonic()
        if f.read_to != read_to:
            f.idle_polls, f.grew_at = 0, now
        else:
            f.idle_polls += 1
        if (self._file is not None and f.idle_polls >= ROTATED_IDLE_POLLS
                and now - f.grew_at >= self.rotated_idle_seconds):
            self._let_go(f, lines)
            self._rotated = None
        return True

    def _let_go(self, f: _OpenFile, lines: list[bytes]) -> None:
        """Close a rotated file for good. What it holds after its last newline will never be
        completed: text up to a NUL run is a line (the run is a line break), the rest is skipped."""
        done, nul, partial = f.pending.rpartition(b"\x00")
        if nul:
            lines.append(done + nul)
        if partial and not f.dropping:
            self._skip_line("partial_line_at_rotation", partial)
        f.pending, f.dropping, f.offset = b"", False, f.read_to
        f.handle.close()
        log.info("queue_log %s: the rotated file (inode %d) stopped growing: no longer read", self.path, f.inode)

    def _read_available(self, f: _OpenFile, lines: list[bytes]) -> bool:
        """Append the lines now complete in the file to `lines`; True if the end was reached,
        False if this poll's `max_batch_bytes` were read first."""
        while self._budget > 0:
            chunk = f.handle.read(min(READ_CHUNK, self._budget))
            if not chunk:
                break
            self._budget -= len(chunk)
            self._add_chunk(f, chunk, lines)
        else:
            return False
        if len(f.head) < FINGERPRINT_BYTES:
            f.head = os.pread(f.handle.fileno(), FINGERPRINT_BYTES, 0)
        return True

    def _add_chunk(self, f: _OpenFile, chunk: bytes, lines: list[bytes]) -> None:
        """Split a chunk just read into lines. Only the chunk is searched, never what is held, so
        a long run without a newline costs its length once (not its length squared)."""
        last_newline = chunk.rfind(b"\n")
        if last_newline >= 0:
            f.offset = f.read_to + last_newline + 1
        f.read_to += len(chunk)
        if b"\x00" in chunk:  # keep one NUL per run: the mapper counts it and takes it as a line break
            chunk = _NUL_RUN.sub(b"\x00", chunk)
            if chunk[:1] == b"\x00" and f.pending[-1:] == b"\x00":
                chunk = chunk[1:]  # the run began in the previous chunk: still one run
        *complete, rest = chunk.split(b"\n")
        for part in complete:
            if f.dropping:
                f.dropping = False  # the newline of the line too long to keep
            elif len(f.pending) + len(part) > MAX_LINE_BYTES:
                self._skip_line("line_too_long", f.pending or part)
            else:
                lines.append(f.pending + part)
            f.pending = b""
        if f.dropping:
            return
        if len(f.pending) + len(rest) > MAX_LINE_BYTES:
            self._skip_line("line_too_long", f.pending or rest)
            f.pending, f.dropping = b"", True
            return
        f.pending += rest
        self.longest_pending = max(self.longest_pending, len(f.pending))

    def _skip_line(self, reason: str, raw: bytes) -> None:
        """A line read but not given to the mapper: counted as a line, and in the skips."""
        self.mapper.lines += 1
        self.mapper._skip(reason, _safe_example(decode(raw[:200]).replace("\x00", "").split("|")))

    @staticmethod
    def _was_truncated(f: _OpenFile) -> bool:
        fd = f.handle.fileno()
        if os.fstat(fd).st_size < f.read_to:
            return True
        return bool(f.head) and os.pread(fd, len(f.head), 0) != f.head

    def _positions(self) -> tuple:
        return tuple(None if f is None else (f.inode, f.offset) for f in (self._file, self._rotated))

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
        return _OpenFile(handle, st.st_dev, st.st_ino, offset, offset,
                         head=os.pread(handle.fileno(), FINGERPRINT_BYTES, 0))

    def _open_first(self) -> _OpenFile | None:
        """After a restart: the checkpointed file at its offset if it is still the file under the
        name (same first bytes, not shorter); else that file under another name in the same
        directory (it was rotated meanwhile: finish it first); else the file under the name from 0."""
        cp = self._resume
        assert cp is not None
        current = self._open_path(0)
        if current is not None and self._is_checkpointed(current, cp):
            current.handle.seek(cp["offset"])
            current.offset = current.read_to = cp["offset"]
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

    @staticmethod
    def _is_checkpointed(f: _OpenFile, cp: Mapping[str, Any]) -> bool:
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
                if candidate.device == cp["device"] and self._is_checkpointed(candidate, cp):
                    return Path(entry.path)
            finally:
                candidate.handle.close()
        return None

    def _checkpoint(self) -> dict:
        # Just after a rotation the new file may be gone again: then the rotated file is the
        # position (a restart finds it by its inode and goes on from there).
        f = self._file or self._rotated
        assert f is not None
        checkpoint = {"version": CHECKPOINT_VERSION, "path": str(self.path), **self._position(f),
                      "mapper": self.mapper.state()}
        if self._rotated is not None and self._rotated is not f:
            checkpoint["rotated"] = self._position(self._rotated)  # still read: a restart reads it too
        return checkpoint

    @staticmethod
    def _position(f: _OpenFile) -> dict:
        return {"device": f.device, "inode": f.inode, "offset": f.offset,
                "fingerprint": _fingerprint(f.head), "fingerprint_bytes": len(f.head)}
