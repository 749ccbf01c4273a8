"""The fsync of SQLite's write-ahead log, made by meterd, after each commit and before any answer.

With ``synchronous=FULL`` SQLite fsyncs the WAL inside ``COMMIT``: the writer thread waits for
the disk, and the next batch waits for the writer. In WAL mode ``FULL`` differs from
``NORMAL`` only by that fsync (``NORMAL`` syncs the WAL before each checkpoint, the database
after it, and the WAL's header when the log starts over). So meterd runs the writer's
connection with ``NORMAL`` and makes the fsync itself:

- an ordinary write (a meter, a key, a cancellation) syncs right after its ``COMMIT``, on the
  writer's thread (:meth:`WalSync.sync`), before it returns;
- a group commit of events hands its answers to :class:`WalSync`'s own thread
  (:meth:`WalSync.after_sync`), which fsyncs the log once for every commit handed to it so far
  and only then answers them. Meanwhile the writer already writes the next batch: on the
  stream bench the fsync had taken a sixth of the writer's time.

One fsync covers every commit made before it started (it flushes the file, whoever wrote it),
so an answer still never comes before its events are on the disk: an acknowledged event
survives a power loss exactly as under ``FULL``. What changes is that another connection may
read a commit for the few milliseconds before its fsync ends (under ``FULL`` it sees it only
after); no one has been told it is stored by then.

A failed fsync leaves the kernel's view of the file uncertain (dirty pages may have been
dropped), so the store stops writing: every request in the unsynced commits fails, and so
does every later write, until meterd restarts and reads the file again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger("meterd.storage")


class SyncFailed(OSError):
    """The write-ahead log could not be synced: nothing more is written until a restart."""


class WalSync:
    """fsyncs of ``<database>-wal``, inline or on a thread of its own (see the module)."""

    def __init__(self, database: str) -> None:
        self.path = database + "-wal"
        self.failure: SyncFailed | None = None
        self.on_failure: Callable[[SyncFailed], None] | None = None
        """Told once, on the thread that saw it, that a sync failed (the writer process exits,
        and the server starts a new one, which opens the file again)."""
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None
        self._lock = threading.Lock()
        """One open of the log at a time (the writer's thread and the syncing thread)."""
        self._ready = threading.Condition()
        self._waiting: list[Callable[[SyncFailed | None], None]] = []
        self._syncing = False
        self._closing = False
        self._thread: threading.Thread | None = None

    def sync(self) -> None:
        """fsync the log now (on the caller's thread); raises :class:`SyncFailed`."""
        if self.failure is not None:
            raise self.failure
        try:
            fd = self._log()
            if fd is not None:
                os.fdatasync(fd)
        except OSError as error:
            self._failed(error)
            assert self.failure is not None
            raise self.failure from error

    def after_sync(self, answer: Callable[[SyncFailed | None], None]) -> None:
        """Call ``answer`` on the syncing thread once a sync that started after this call ends
        (with the failure, if it failed)."""
        with self._ready:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="meterd-wal-sync", daemon=True
                )
                self._thread.start()
            self._waiting.append(answer)
            self._ready.notify_all()

    def drain(self) -> bool:
        """Wait until every answer handed over has been called; True if there were any."""
        with self._ready:
            waited = bool(self._waiting) or self._syncing
            while self._waiting or self._syncing:
                self._ready.wait()
        return waited

    def close(self) -> None:
        self.drain()
        with self._ready:
            self._closing = True
            self._ready.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._waiting and not self._closing:
                    self._ready.wait()
                if not self._waiting:
                    return
                answers, self._waiting = self._waiting, []
                self._syncing = True
            try:
                self.sync()
                failure = None
            except SyncFailed as error:
                failure = error
            for answer in answers:
                try:
                    answer(failure)
                except Exception:
                    log.exception("answering after a WAL sync failed")
            with self._ready:
                self._syncing = False
                self._ready.notify_all()

    def _log(self) -> int | None:
        """The log's descriptor; opened again if the file was replaced (SQLite deletes it
        when its last connection closes, and another process may have done so). None when
        there is no log: SQLite removes it only after checkpointing it into the database and
        syncing that, so nothing is left to sync."""
        with self._lock:
            try:
                found = os.stat(self.path)
            except FileNotFoundError:
                return None
            inode = (found.st_dev, found.st_ino)
            if self._fd is None or inode != self._inode:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                self._inode = inode
                _sync_directory(os.path.dirname(os.path.abspath(self.path)))
            return self._fd

    def _failed(self, error: OSError) -> None:
        with self._lock:
            first = self.failure is None
            if first:
                self.failure = SyncFailed(
                    error.errno,
                    f"the database's write-ahead log could not be synced ({error}); "
                    "meterd writes nothing more until it restarts",
                )
        if first:
            log.critical("%s", self.failure)
            if self.on_failure is not None:
                assert self.failure is not None
                self.on_failure(self.failure)


def _sync_directory(path: str) -> None:
    """A new log's name is durable only once its directory is synced (``FULL`` does this on
    the log's first sync, ``NORMAL`` only at the first checkpoint)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
