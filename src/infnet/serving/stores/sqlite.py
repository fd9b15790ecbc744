"""The embedded feature store: one SQLite file in WAL mode (readers never block the loader).

A load replaces all users and items in one transaction, so every read sees exactly one
feature version; a lookup is one SELECT (the user, the candidates through json_each, and
the current version) on the calling thread's own connection.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import orjson

from infnet.serving.stores.base import FeatureStore, Snapshot, StoreMeta, StoreUnavailable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, rec BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, rec BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS loads (version TEXT PRIMARY KEY, meta TEXT NOT NULL) WITHOUT ROWID;
"""
_FETCH = (
    "SELECT 0, id, rec FROM users WHERE id = ?1 "
    "UNION ALL SELECT 1, id, rec FROM items WHERE id IN (SELECT value FROM json_each(?2)) "
    "UNION ALL SELECT 2, value, NULL FROM meta WHERE key = 'version'"
)


class SQLiteStore(FeatureStore):
    """A connection per thread, reopened when the file at `path` is another file than the
    one it has open (a new load moved over it), so the server reads the store on disk.
    Lookups run on worker threads: a lock held by a writer never stalls the event loop."""

    def __init__(self, path: str | Path, *, timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.timeout_s = timeout_s
        self._local = threading.local()

    def _file_id(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _connect(self, create: bool = False) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        file_id = self._file_id()
        if conn is not None and not create:
            if file_id == self._local.file_id:
                return conn
            conn.close()  # the file was replaced (or removed): open what is there now
            self._local.conn = None
        if not create and file_id is None:
            raise StoreUnavailable(
                f"feature store {self.path} does not exist; load it with `infnet serve load-features`"
            )
        try:
            mode = "rwc" if create else "rw"
            conn = sqlite3.connect(
                f"file:{self.path}?mode={mode}",
                uri=True,
                timeout=self.timeout_s,
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as err:
            raise StoreUnavailable(f"feature store {self.path}: {err}") from None
        if not create:
            self._local.conn, self._local.file_id = conn, file_id
        return conn

    def write(self, snapshot: Snapshot) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect(create=True)
        try:
            conn.executescript(_SCHEMA)
            meta = snapshot.meta.model_dump_json()
            with conn:  # one transaction: readers see the old or the new snapshot, never a mix
                conn.execute("DELETE FROM users")
                conn.execute("DELETE FROM items")
                conn.executemany(
                    "INSERT INTO users VALUES (?, ?)",
                    zip(snapshot.user_ids, map(bytes, snapshot.user_records), strict=True),
                )
                conn.executemany(
                    "INSERT INTO items VALUES (?, ?)",
                    zip(snapshot.item_ids, map(bytes, snapshot.item_records), strict=True),
                )
                conn.execute(
                    "INSERT OR REPLACE INTO loads VALUES (?, ?)", (snapshot.meta.version, meta)
                )
                conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('version', ?)", (snapshot.meta.version,)
                )
        except sqlite3.Error as err:  # locked by another writer, disk full: nothing changed
            raise StoreUnavailable(
                f"feature store {self.path}: the load was not written ({err}); the previous "
                "features are unchanged"
            ) from None
        finally:
            conn.close()

    def fetch(self, user: str, items: list[str]) -> tuple[str, bytes | None, list[bytes | None]]:
        try:
            rows = self._connect().execute(_FETCH, (user, orjson.dumps(items))).fetchall()
        except sqlite3.Error as err:
            self._local.conn = None
            raise StoreUnavailable(f"feature store {self.path}: {err}") from None
        user_rec, found, version = None, {}, None
        for kind, key, rec in rows:
            if kind == 0:
                user_rec = rec
            elif kind == 1:
                found[key] = rec
            else:
                version = key
        if version is None:
            raise StoreUnavailable(
                f"feature store {self.path} holds no features; run `infnet serve load-features`"
            )
        return version, user_rec, [found.get(i) for i in items]

    def meta(self, version: str | None = None) -> StoreMeta:
        try:
            conn = self._connect()
            if version is None:
                row = conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
                version = row[0] if row else None
            row = conn.execute("SELECT meta FROM loads WHERE version = ?", (version,)).fetchone()
        except sqlite3.Error as err:
            self._local.conn = None
            raise StoreUnavailable(f"feature store {self.path}: {err}") from None
        if row is None:
            raise StoreUnavailable(
                f"feature store {self.path} holds no features; run `infnet serve load-features`"
            )
        return StoreMeta.model_validate_json(row[0])

    def ping(self) -> None:
        self.meta()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
