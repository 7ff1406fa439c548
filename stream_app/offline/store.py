"""The offline store: immutable Parquet files, partitioned by date and model, under one URL.

Layout (hive-style, so any Parquet reader can prune it)::

    {root}/features/date=2023-11-14/model=fraud/p0-00000000000000001200-00000000000000001699.parquet
    {root}/labels/date=2023-11-14/model=fraud/p0-....parquet

``features`` rows are scored events (the vector as scored, its score and model version);
``labels`` rows are labels the learner joined to them. ``date`` is the UTC day of the event's
timestamp (of the label's, for labels).

**Atomic, immutable.** A file is written under a hidden temporary name (``.name.pid.tmp``,
which readers skip, as Arrow's and Spark's dataset readers skip names starting with ``.`` or
``_``) in its final folder, flushed to disk, then renamed: a reader sees the whole file or
none of it, also after a ``kill -9`` mid-write. A file is never written again; a sink that
replays a batch writes the same rows again, and :meth:`OfflineStore.read` keeps one row per
``event_id``. On object stores (``s3://``, ``gs://``) a PUT is atomic already and the rename is
a copy; the same code runs.

**URLs.** ``file://PATH`` (relative paths are taken from the working directory), any URL
``pyarrow.fs.FileSystem.from_uri`` knows (``s3://``, ``gs://``, ``hdfs://``, ``abfs://``), and
otherwise any ``fsspec`` protocol (``memory://`` included), through ``pyarrow.fs.FSSpecHandler``.

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as root:
...     store = OfflineStore(f"file://{root}")
...     rows = [{"event_id": "e1", "model": "m", "event_timestamp": 0.0, "v": 1},
...             {"event_id": "e1", "model": "m", "event_timestamp": 0.0, "v": 1},
...             {"event_id": "e2", "model": "m", "event_timestamp": 90000.0, "v": 2}]
...     written = store.write("features", pa.Table.from_pylist(rows), "p0-1-3")
...     again = store.write("features", pa.Table.from_pylist(rows[:1]), "p0-1-1")  # a replay
...     [p.split(root)[1] for p in written], store.read("features").column("v").to_pylist()
(['/features/date=1970-01-01/model=m/p0-1-3.parquet', '/features/date=1970-01-02/model=m/p0-1-3.parquet'], [1, 2])
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from stream_app.errors import ConfigError

__all__ = ["KINDS", "OfflineStore", "day", "dedupe", "open_filesystem"]

#: the two datasets of the store, and the timestamp column each is partitioned by
KINDS = {"features": "event_timestamp", "labels": "label_timestamp"}


def day(ts: float) -> str:
    """The UTC date of an epoch timestamp, as the partition names it.

    >>> day(1700000000.0)
    '2023-11-14'
    """
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d")


def open_filesystem(url: str) -> tuple[pafs.FileSystem, str, bool]:
    """``(filesystem, root path, local)`` for a store URL.

    >>> fs, root, local = open_filesystem("file:///tmp/x")
    >>> type(fs).__name__, root, local
    ('LocalFileSystem', '/tmp/x', True)
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not rest:
        raise ConfigError(f"offline store URL needs a scheme and a path, got {url!r}")
    if scheme == "file":
        return pafs.LocalFileSystem(), str(Path(rest).resolve()), True
    try:
        fs, root = pafs.FileSystem.from_uri(url)
        return fs, root.rstrip("/"), False
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        pass
    try:
        import fsspec

        ffs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise ConfigError(f"offline store URL {url!r}: no filesystem for {scheme!r} ({exc})") \
            from exc
    return pafs.PyFileSystem(pafs.FSSpecHandler(ffs)), root.rstrip("/"), False


def dedupe(table: pa.Table, key: str = "event_id") -> pa.Table:
    """One row per ``key``: the first (files are read in name order; a replay's copies are
    the same rows).

    >>> dedupe(pa.table({"event_id": ["a", "b", "a"], "v": [1, 2, 3]})).column("v").to_pylist()
    [1, 2]
    """
    first: dict[str, int] = {}
    for i, k in enumerate(table.column(key).to_pylist()):
        first.setdefault(k, i)
    if len(first) == table.num_rows:
        return table
    return table.take(pa.array(sorted(first.values()), pa.int64()))


class OfflineStore:
    """Write immutable Parquet files atomically; read a date range of one kind, deduplicated."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root, self._local = open_filesystem(url)

    def _folder(self, kind: str, date: str, model: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
        return f"{self.root}/{kind}/date={date}/model={model}"

    def write(self, kind: str, table: pa.Table, name: str) -> list[str]:
        """Write ``table``'s rows as ``name.parquet`` in each (date, model) folder they fall
        in; returns the paths, each complete before it is visible."""
        if table.num_rows == 0:
            return []
        ts = table.column(KINDS[kind]).to_pylist()
        models = table.column("model").to_pylist()
        groups: dict[tuple[str, str], list[int]] = {}
        for i, (t, m) in enumerate(zip(ts, models, strict=True)):
            groups.setdefault((day(t), m), []).append(i)
        paths = []
        for (date, model), idx in sorted(groups.items()):
            part = table if len(idx) == table.num_rows else table.take(pa.array(idx, pa.int64()))
            paths.append(self._write_file(self._folder(kind, date, model), name, part))
        return paths

    def _write_file(self, folder: str, name: str, table: pa.Table) -> str:
        final = f"{folder}/{name}.parquet"
        tmp = f"{folder}/.{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        self.fs.create_dir(folder, recursive=True)
        try:
            pq.write_table(table, tmp, filesystem=self.fs, compression="zstd")
            if self._local:  # durable before it is visible (a crash of the host, not only ours)
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self.fs.move(tmp, final)
        except BaseException:
            try:
                self.fs.delete_file(tmp)
            except OSError:
                pass
            raise
        return final

    def files(self, kind: str, *, from_date: str | None = None, to_date: str | None = None,
              model: str | None = None) -> list[str]:
        """The visible files of ``kind`` within the dates (inclusive) and model, by name."""
        base = f"{self.root}/{kind}"
        if self.fs.get_file_info(base).type == pafs.FileType.NotFound:
            return []
        out = []
        for info in self.fs.get_file_info(pafs.FileSelector(base, recursive=True)):
            if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet") \
                    or info.base_name.startswith((".", "_")):
                continue
            parts = dict(p.split("=", 1) for p in info.path[len(base) + 1:].split("/")[:-1]
                         if "=" in p)
            date, m = parts.get("date", ""), parts.get("model", "")
            if (from_date and date < from_date) or (to_date and date > to_date) \
                    or (model is not None and m != model):
                continue
            out.append(info.path)
        return sorted(out)

    def temp_files(self) -> list[pafs.FileInfo]:
        """Temporary files left by writers that died mid-write (readers never see them)."""
        if self.fs.get_file_info(self.root).type == pafs.FileType.NotFound:
            return []
        return [i for i in self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True))
                if i.type == pafs.FileType.File and i.base_name.startswith(".")
                and i.base_name.endswith(".tmp")]

    def sweep(self, older_than_s: float = 3600.0) -> int:
        """Delete temporary files older than ``older_than_s`` (a live writer's are younger)."""
        import time

        old = [i for i in self.temp_files()
               if i.mtime is not None and time.time() - i.mtime.timestamp() > older_than_s]
        for info in old:
            self.fs.delete_file(info.path)
        return len(old)

    def read(self, kind: str, *, from_date: str | None = None, to_date: str | None = None,
             model: str | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """Every row of ``kind`` in the dates and model, one per ``event_id``."""
        tables = [pq.read_table(p, filesystem=self.fs, columns=columns)
                  for p in self.files(kind, from_date=from_date, to_date=to_date, model=model)]
        if not tables:
            return pa.table({})
        return dedupe(pa.concat_tables(tables, promote_options="default"))

    def count(self, kind: str, **where: str | None) -> int:
        """Distinct ``event_id``s of ``kind`` (see :meth:`read`)."""
        t = self.read(kind, columns=["event_id"], **where)  # type: ignore[arg-type]
        return 0 if t.num_rows == 0 else len(pc.unique(t.column("event_id")))
