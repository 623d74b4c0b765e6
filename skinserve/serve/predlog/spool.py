"""The prediction log's local spool: this process's append-only file, and the replay of files nobody appends to."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import uuid
from pathlib import Path
from typing import IO, Any

from skinserve.serve.predlog.row import PredictionRow

# predictions-<pid>.jsonl is appended by <pid>; predictions-<pid>.jsonl.replaying-<claimer>-<token> is being replayed
# by <claimer>. The token keeps claimed names unique: rename() would silently replace an existing file.
SPOOL_NAME = re.compile(r"^predictions-(\d+)\.jsonl(?:\.replaying-(\d+)-[0-9a-f]+)?$")


class SpoolFiles:
    """This process's append-only spool file, and the claiming of spool files nobody alive is appending to.

    Not thread-safe: the writer calls it under its lock.
    """

    def __init__(self, directory: Path, pid: int) -> None:
        self.directory, self.pid = directory, pid
        self.path = directory / f"predictions-{pid}.jsonl"
        self.rows = 0  # appended since this file was last claimed
        self._file: IO[bytes] | None = None
        self._unsynced = False

    def append(self, records: list[dict[str, Any]], sync: bool) -> None:
        # flush() hands the bytes to the kernel, which is what survives a SIGKILL of this process; fsync, once per
        # batch, also survives a host crash. Rows from a full queue are fsync'ed by the writer's next loop instead,
        # so a request never waits on the disk.
        data = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
        try:
            if self._file is None:
                self._file = self._open()
            self._file.write(data)
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())
        except OSError:
            self.close()  # reopening repairs a torn last line before the next append
            raise
        self._unsynced = not sync
        self.rows += len(records)

    def sync(self) -> None:
        if self._file is not None and self._unsynced:
            self._unsynced = False  # a failing fsync is reported once, not on every loop of the writer
            os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def claim(self) -> list[Path]:
        """Rename to `*.replaying-<pid>-<token>` every spool file this process may replay: its own, and dead pids'.

        The rename is atomic, so of two processes claiming the same orphan exactly one gets it.
        """
        claimed = []
        for path in sorted(self.directory.glob("predictions-*.jsonl*")):
            match = SPOOL_NAME.match(path.name)
            if match is None:
                continue
            owner = int(match[2] or match[1])
            if owner == self.pid and match[2]:
                claimed.append(path)  # claimed earlier by this process (or a dead one that had its pid)
                continue
            if owner != self.pid and _process_alive(owner):
                continue
            if owner == self.pid:
                self.close()
            target = path.with_name(f"predictions-{match[1]}.jsonl.replaying-{self.pid}-{uuid.uuid4().hex[:12]}")
            try:
                path.rename(target)
            except FileNotFoundError:
                continue  # another process claimed it first
            if owner == self.pid:
                self.rows = 0
            claimed.append(target)
        return claimed

    def _open(self) -> IO[bytes]:
        self.directory.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+b")  # noqa: SIM115 - kept open across appends, closed by close(); + for pread
        size = os.fstat(file.fileno()).st_size
        if size and os.pread(file.fileno(), 1, size - 1) != b"\n":
            file.write(b"\n")  # a predecessor with this pid was killed mid-line: keep its torn line apart from ours
        return file


class SpoolReplay:
    """Reads one claimed spool file in chunks; a chunk stays pending until it has been inserted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.open("rb")
        self.remaining = sum(1 for _ in self.file)  # lines not yet read, for the spool gauge
        self.file.seek(0)
        self.pending: list[PredictionRow] = []
        self.corrupt = 0
        self.eof = False

    def chunk(self, size: int) -> list[PredictionRow]:
        """The next rows to insert: the same ones until `clear`; empty once the file is done."""
        while not self.pending and not self.eof:
            lines = list(itertools.islice(self.file, size))
            self.eof = len(lines) < size
            self.remaining = max(0, self.remaining - len(lines))
            for line in filter(bytes.strip, lines):
                try:
                    self.pending.append(PredictionRow.from_record(json.loads(line)))
                except (ValueError, TypeError, KeyError):
                    self.corrupt += 1  # a torn write (SIGKILL mid-line) or a damaged line: skipped, not fatal
        return self.pending

    def clear(self) -> None:
        self.pending = []

    def finish(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True
