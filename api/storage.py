"""Where model artifacts live: a local directory by default, object storage by URL.

One small interface: the API stages uploads and optimizer outputs on local disk (they must be
validated and measured there anyway), then :meth:`ArtifactStore.put` moves them in. Consumers
that need a file (the optimizer, a local deployment) ask for :meth:`ArtifactStore.local_path`.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from aideploy.errors import InputError


class ArtifactStore(Protocol):
    def put(self, source: Path, key: str) -> str:
        """Move the local file or directory ``source`` in under ``key``; return its location."""

    def local_path(self, location: str) -> Path:
        """A local path holding the artifact at ``location`` (downloaded once if remote)."""

    def delete_prefix(self, key: str) -> None:
        """Remove everything stored under ``key`` (a model and all it derived)."""

    def modification_times(self, key: str) -> dict[str, float]:
        """Every file stored under ``key``: its key and when it was written (epoch seconds)."""


class LocalArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, source: Path, key: str) -> str:
        """A rename on the same filesystem; across filesystems a copy into a hidden temporary
        name first, renamed once complete, so a failed copy (a full disk) leaves nothing."""
        target = self._resolve(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        try:
            shutil.move(source, partial)
            if target.is_dir():  # put again (a resumed job): the new content replaces it
                remove_path(target)
            os.replace(partial, target)
        except BaseException:
            remove_path(partial)
            raise
        return str(target)

    def local_path(self, location: str) -> Path:
        return Path(location)

    def delete_prefix(self, key: str) -> None:
        remove_path(self._resolve(key))

    def modification_times(self, key: str) -> dict[str, float]:
        times = {}
        for folder, _, files in os.walk(self._resolve(key)):
            for name in files:
                path = Path(folder, name)
                try:
                    times[path.relative_to(self.root).as_posix()] = path.stat().st_mtime
                except FileNotFoundError:  # removed meanwhile
                    continue
        return times

    def _resolve(self, key: str) -> Path:
        target = (self.root / key).resolve()
        if not target.is_relative_to(self.root):
            raise InputError(f"artifact key {key!r} escapes the store")
        return target


class ObjectArtifactStore:
    """``s3://``, ``gs://``, ``az://`` (any fsspec URL) with a local read cache in the data dir.

    Cloud deployments read their model from here, so they need this store."""

    def __init__(self, url: str, cache_dir: Path) -> None:
        import fsspec  # the cloud filesystems are optional extras

        self.url = url.rstrip("/")
        protocol = url.split("://", 1)[0]
        try:
            self.fs: Any = fsspec.filesystem(protocol)
        except (ImportError, ValueError) as exc:
            raise InputError(
                f"artifact_store_url: no filesystem for {protocol}:// ({exc}); "
                f"install the matching fsspec package (s3fs, gcsfs or adlfs)"
            ) from None
        self.cache_dir = cache_dir

    def put(self, source: Path, key: str) -> str:
        location = f"{self.url}/{key}"
        self.fs.put(str(source), location, recursive=source.is_dir())
        if source.is_dir():
            shutil.rmtree(source)
        else:
            source.unlink()
        return location

    def local_path(self, location: str) -> Path:
        relative = location.removeprefix(self.url).lstrip("/")
        cached = self.cache_dir / relative
        if not cached.exists():
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_name(cached.name + ".partial")
            self.fs.get(location, str(partial), recursive=self.fs.isdir(location))
            partial.rename(cached)
        return cached

    def delete_prefix(self, key: str) -> None:
        location = f"{self.url}/{key}"
        if self.fs.exists(location):
            self.fs.rm(location, recursive=True)
        remove_path(self.cache_dir / key)

    def modification_times(self, key: str) -> dict[str, float]:
        base = self.fs._strip_protocol(self.url).rstrip("/") + "/"
        found: dict[str, Any] = self.fs.find(f"{self.url}/{key}", detail=True)
        return {
            path.removeprefix(base): _written_at(info)
            for path, info in found.items()
            if info.get("type") != "directory"
        }


def _written_at(info: dict[str, Any]) -> float:
    """When an object was written, from whichever field its filesystem reports (S3, GCS,
    Azure, memory); now when none does, so an object of unknown age is never taken as old."""
    for field in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(field)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return time.time()


def remove_path(path: Path) -> None:
    """Remove a file or a folder tree; nothing when it does not exist."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def is_object_url(url: str) -> bool:
    """Whether ``url`` names object storage (any fsspec URL but a local ``file://`` path)."""
    return "://" in url and not url.startswith("file://")


def open_artifact_store(url: str, data_dir: Path) -> ArtifactStore:
    """The store for ``settings.effective_artifact_store_url``."""
    if is_object_url(url):
        return ObjectArtifactStore(url, data_dir / "artifact-cache")
    return LocalArtifactStore(Path(url.removeprefix("file://")))
