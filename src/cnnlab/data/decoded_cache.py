"""On-disk cache of decoded, resized uint8 images, so later runs skip JPEG/PNG decoding.

One SQLite file (stdlib, no server) with a row per (file path, stored side, channels) that
records the file's size and mtime_ns when it was decoded. Squares made another way than the
default centre crop (``--crop-mode squash|border``) have their rows in a second table keyed by
that way too, so a squashed image is never served for a centre-cropped one, and a cache file
stays readable by cnnlab versions that know only the first table. A lookup matches only when the file
on disk still has that size and mtime, so a changed file is re-decoded alone; writing it again
replaces its row, so edits do not pile up stale entries. The side is the stored square's
(``cnnlab.data.crop``: 256 px for a 224-px model with crop_pct 0.875, 224 px without margin), and
those pixels depend on nothing else, so each storage has its own entries and runs that store the
same side share theirs.

Why SQLite, measured on this machine (2 cores, AMD EPYC) for 50,000 CIFAR-sized entries
(3 KB) and 2,000 224-px entries (150 KB), reading into one preallocated array:

    store                         write 50k   read 50k (warm / cold OS cache)   read 2k x 150 KB
    one file per image            2.5 s       0.58 s / 6.3 s                     0.10 s / 0.55 s
    SQLite, 64 KiB pages, WAL     0.65 s      0.41 s / 0.43 s                    0.08 s / 1.1 s

Many tiny files are slow to write and very slow to read cold; SQLite is as fast warm and
gives safety for free: writes are transactions (an interrupted run leaves no half entry),
WAL mode lets several runs read and write at once, and a busy timeout serialises writers.
Any SQLite failure (read-only or full disk, NFS without locks, a damaged file) turns the
cache off with one warning: the cache may make a run faster, never make it fail.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("cnnlab")

CACHE_ENV = "CNNLAB_CACHE_DIR"  # replaces ~/.cache/cnnlab; decoded images go to <it>/decoded/
NO_CACHE_ENV = "CNNLAB_NO_CACHE"  # 1/true/yes: decode every run, read and write nothing
# Bump when decode_image's output changes (resampling, colour rules): old pixels are dropped.
FORMAT_VERSION = 1
PAGE_SIZE = 65536  # large pages: a 150 KB image spans 3 pages instead of 37 (2x faster reads)
BUSY_TIMEOUT_S = 120.0  # another run writing its batch: wait, do not fail
# Files per SELECT: one query joining 240 keys (position, path, size, mtime) read 70,000 MNIST
# entries in 0.14 s of CPU, against 0.37 s for one query per file (bench/bench_warm_data.py);
# 240 x 4 + 3 parameters stay under the 999 older SQLite builds allow.
LOAD_CHUNK = 240

_SCHEMA = """
CREATE TABLE decoded (
    path TEXT NOT NULL, side INTEGER NOT NULL, channels INTEGER NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, pixels BLOB NOT NULL,
    PRIMARY KEY (path, side, channels)
)"""
CENTER_FIT = "center"  # the default crop mode: its rows are in ``decoded``, the others in FIT_TABLE
FIT_TABLE = "decoded_fit"
_FIT_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {FIT_TABLE} (
    path TEXT NOT NULL, side INTEGER NOT NULL, channels INTEGER NOT NULL, fit TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, pixels BLOB NOT NULL,
    PRIMARY KEY (path, side, channels, fit)
)"""


def cache_root() -> Path:
    """cnnlab's cache folder: ``$CNNLAB_CACHE_DIR`` or ``~/.cache/cnnlab``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cnnlab").expanduser()


def cache_file() -> Path:
    """The SQLite file holding decoded images."""
    return cache_root() / "decoded" / "decoded.sqlite"


def cache_enabled() -> bool:
    """False when ``CNNLAB_NO_CACHE`` is set to a true value."""
    return os.environ.get(NO_CACHE_ENV, "").strip().lower() not in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class FileKey:
    """What identifies one version of a file: absolute path, size in bytes, mtime in ns."""

    path: str
    size: int
    mtime_ns: int


def file_key(path: Path | str) -> FileKey | None:
    """The key of ``path`` as it is now on disk, or None when it cannot be stat'ed."""
    return _stat_key(os.path.abspath(path))  # string-only: no symlink resolution, no extra syscalls


def _stat_key(absolute: str) -> FileKey | None:
    try:
        st = os.stat(absolute)
    except OSError:
        return None
    return FileKey(absolute, st.st_size, st.st_mtime_ns)


def file_keys(paths: Sequence[Path | str]) -> list[FileKey | None]:
    """:func:`file_key` of each of ``paths``: one stat per file, as now on disk.

    A listing's files share a few folders, so each folder is made absolute once and its files'
    names appended (``abspath(folder) + name`` is ``abspath(folder/name)`` for a plain name).
    """
    folders: dict[str, str] = {}
    keys = []
    for path in paths:
        text = os.fspath(path)
        head, name = os.path.split(text)
        if name in ("", os.curdir, os.pardir):
            keys.append(file_key(text))
            continue
        folder = folders.get(head)
        if folder is None:
            folder = folders[head] = os.path.join(os.path.abspath(head), "")
        keys.append(_stat_key(folder + name))
    return keys


class DecodedCache:
    """Decoded (channels, side, side) uint8 images keyed by :class:`FileKey`.

    Not shared between threads: each thread or process opens its own. ``read_only``: finds images,
    never writes (not even creates the file): the processes of a multi-process run other than
    rank 0 read what rank 0 wrote.
    """

    def __init__(self, path: Path | None = None, read_only: bool = False) -> None:
        self.path = Path(path) if path is not None else cache_file()
        self.read_only = read_only
        self._db: sqlite3.Connection | None = None
        self._broken = False

    def _connect_read_only(self) -> sqlite3.Connection | None:
        if not self.path.is_file():
            self._broken = True  # nothing cached yet: nothing to find
            return None
        db = self._db = sqlite3.connect(
            f"{self.path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None
        )
        if db.execute("PRAGMA user_version").fetchone()[0] != FORMAT_VERSION:
            self._broken = True
            self.close()
        return self._db

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is not None or self._broken:
            return self._db
        try:
            if self.read_only:
                return self._connect_read_only()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # only takes effect on a new file
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; a cache may lose the last commit
            if db.execute("PRAGMA user_version").fetchone()[0] != FORMAT_VERSION:
                with db:  # new file or old format: (re)create under the write lock, re-checked
                    db.execute("BEGIN IMMEDIATE")
                    if db.execute("PRAGMA user_version").fetchone()[0] != FORMAT_VERSION:
                        db.execute("DROP TABLE IF EXISTS decoded")
                        db.execute(f"DROP TABLE IF EXISTS {FIT_TABLE}")
                        db.execute(_SCHEMA)
                        db.execute(f"PRAGMA user_version={FORMAT_VERSION}")
            db.execute(_FIT_SCHEMA)  # files written before --crop-mode have only ``decoded``
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
        return self._db

    def _fail(self, exc: Exception) -> None:
        log.warning("decoded-image cache %s not usable (%s); decoding without it", self.path, exc)
        self._broken = True
        self.close()

    def load(
        self, keys: list[FileKey | None], side: int, channels: int, out: np.ndarray, fit: str = CENTER_FIT
    ) -> np.ndarray:
        """Fills ``out[i]`` for every key found; returns a bool array of the hits.

        An entry is a hit only when its recorded size and mtime are the key's (the file as it is now)
        and its square was made the way ``fit`` says (``decode.Fit.key``).
        """
        hits = np.zeros(len(keys), dtype=bool)
        db = self._connect()
        if db is None or (fit != CENTER_FIT and not self._has_fit_table(db)):
            return hits
        listed = [(i, key) for i, key in enumerate(keys) if key is not None]
        try:
            for start in range(0, len(listed), LOAD_CHUNK):
                rows = self._select(db, listed[start : start + LOAD_CHUNK], side, channels, fit)
                if rows:  # one copy per chunk rather than a small array per image
                    found = [i for i, _ in rows]
                    pixels = b"".join(blob for _, blob in rows)
                    out[found] = np.frombuffer(pixels, dtype=np.uint8).reshape(len(found), *out.shape[1:])
                    hits[found] = True
        except sqlite3.Error as exc:
            self._fail(exc)
            hits[:] = False
        return hits

    def _has_fit_table(self, db: sqlite3.Connection) -> bool:
        """A read-only open of a file written before --crop-mode has no FIT_TABLE (nothing to find)."""
        try:
            return db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (FIT_TABLE,)).fetchone() is not None
        except sqlite3.Error as exc:
            self._fail(exc)
            return False

    @staticmethod
    def _select(
        db: sqlite3.Connection, listed: list[tuple[int, FileKey]], side: int, channels: int, fit: str
    ) -> list[tuple[int, bytes]]:
        """(position, pixels) of each of ``listed`` whose entry has its key's size and mtime: one query."""
        table, same_fit, fit_value = ("decoded", "", ()) if fit == CENTER_FIT else (FIT_TABLE, " AND d.fit = ?", (fit,))
        query = (
            f"WITH k(i, path, size, mtime_ns) AS (VALUES {','.join(['(?,?,?,?)'] * len(listed))}) "
            f"SELECT k.i, d.pixels FROM k JOIN {table} d ON d.path = k.path AND d.side = ? AND d.channels = ? "
            f"AND d.size = k.size AND d.mtime_ns = k.mtime_ns AND length(d.pixels) = ?{same_fit}"
        )
        params = [value for i, key in listed for value in (i, key.path, key.size, key.mtime_ns)]
        return db.execute(query, (*params, side, channels, channels * side * side, *fit_value)).fetchall()

    def save(
        self, entries: Iterable[tuple[FileKey, np.ndarray]], side: int, channels: int, fit: str = CENTER_FIT
    ) -> int:
        """Stores (key, (channels, side, side) uint8 image) pairs, their squares made as ``fit`` says, in one
        transaction; returns the count."""
        if self.read_only:
            return 0
        db = self._connect()
        if db is None:
            return 0
        fit_column = () if fit == CENTER_FIT else (fit,)
        rows = [
            (key.path, side, channels, *fit_column, key.size, key.mtime_ns, np.ascontiguousarray(image).tobytes())
            for key, image in entries
        ]
        if not rows:
            return 0  # do not take the write lock for nothing
        table = "decoded" if fit == CENTER_FIT else FIT_TABLE
        try:
            with db:  # one transaction: all rows or, if interrupted, none
                db.execute("BEGIN IMMEDIATE")
                db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
        except sqlite3.Error as exc:
            self._fail(exc)
            return 0
        return len(rows)

    def stats(self) -> tuple[int, int]:
        """(entries, bytes on disk)."""
        if not self.path.exists():
            return 0, 0
        db = self._connect()
        count = 0
        if db is not None:
            tables = ["decoded", FIT_TABLE] if self._has_fit_table(db) else ["decoded"]
            count = sum(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in tables)
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return int(count), size

    def prune(self) -> int:
        """Deletes the entries whose file is gone or changed; returns how many."""
        db = self._connect() if self.path.exists() else None
        if db is None:
            return 0
        stale = set()
        for table in ("decoded", FIT_TABLE):
            for path, size, mtime_ns in db.execute(f"SELECT DISTINCT path, size, mtime_ns FROM {table}"):
                key = file_key(path)
                if key is None or (key.size, key.mtime_ns) != (size, mtime_ns):
                    stale.add((path, size, mtime_ns))
        with db:
            db.execute("BEGIN IMMEDIATE")
            for table in ("decoded", FIT_TABLE):
                db.executemany(f"DELETE FROM {table} WHERE path=? AND size=? AND mtime_ns=?", sorted(stale))
        db.execute("VACUUM")  # give the space back to the disk
        return len(stale)

    def clear(self) -> None:
        """Deletes the cache file (and its WAL); the next run starts empty."""
        self.close()
        for p in self.path.parent.glob(self.path.name + "*"):
            p.unlink(missing_ok=True)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> DecodedCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
