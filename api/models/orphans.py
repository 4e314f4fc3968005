"""Leftovers of interrupted work, removed at start-up (before the API takes requests or resumes
jobs) and when a model is deleted.

- ``staging/``: uploads that were arriving or being checked when the process died. No upload
  runs before start-up ends, so everything there is left over.
- ``work/<kind>/<id>`` (optimizer work folders; ``work/onnx``, where the local runner kept its
  ONNX conversions before PyTorch uploads were converted at upload) and the object store's
  read cache ``artifact-cache/models/<id>``: folders named by the model or optimized model they
  belong to; those whose model is gone are removed. (A resumed optimization empties its own
  work folder.)
- Artifacts with no row: the files an upload stored under ``models/<id>/`` (the upload, its
  ONNX conversion, its sample data) before it died short of its commit, an optimized model
  stored by a job whose row is gone. These live in the artifact store, which
  replicas may share, so only those untouched for :data:`GRACE_SECONDS` go: another replica's
  upload may be between its store and its commit right now.

The data directory belongs to one API process (the local runner makes the same assumption).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread
from sqlalchemy import select

from api.db.engine import Database
from api.db.tables import ModelRow, OptimizedModelRow
from api.storage import ArtifactStore, remove_path

log = logging.getLogger("aideploy.api.models")

GRACE_SECONDS = 600.0
_MODELS = "models"


@dataclass
class SweepReport:
    """What the sweep removed (paths in the data directory, keys in the store)."""

    staging: list[str] = field(default_factory=list)
    work: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.staging) + len(self.work) + len(self.artifacts)


def work_folders(data_dir: Path) -> list[Path]:
    """The folders under ``data_dir`` that are named by the (optimized) model they hold."""
    roots = [*_subfolders(data_dir / "work"), data_dir / "artifact-cache" / _MODELS]
    return [folder for root in roots for folder in _subfolders(root)]


def remove_work_folders(data_dir: Path, ids: Iterable[str]) -> None:
    """Remove the work folders of the given (optimized) models."""
    wanted = set(ids)
    for folder in work_folders(data_dir):
        if folder.name in wanted:
            shutil.rmtree(folder, ignore_errors=True)


async def sweep_orphans(database: Database, store: ArtifactStore, data_dir: Path) -> SweepReport:
    async with database.sessions() as session:
        models = set(await session.scalars(select(ModelRow.id)))
        optimized = set(await session.scalars(select(OptimizedModelRow.id)))
    report = await anyio.to_thread.run_sync(_sweep, store, data_dir, models, optimized)
    if report.total:
        log.info(
            "start-up sweep removed %d staged upload(s), %d work folder(s), %d artifact(s) "
            "without a record",
            len(report.staging),
            len(report.work),
            len(report.artifacts),
        )
    return report


def _sweep(
    store: ArtifactStore, data_dir: Path, models: set[str], optimized: set[str]
) -> SweepReport:
    report = SweepReport()
    for entry in _subfolders(data_dir / "staging", files_too=True):
        _discard(entry, report.staging)
    for folder in work_folders(data_dir):
        if folder.name not in models and folder.name not in optimized:
            _discard(folder, report.work)
    horizon = time.time() - GRACE_SECONDS
    newest: dict[str, float] = {}
    for key, written in store.modification_times(_MODELS).items():
        prefix = _owner_prefix(key, models, optimized)
        if prefix is not None:
            newest[prefix] = max(written, newest.get(prefix, 0.0))
    for prefix, written in sorted(newest.items()):
        if written < horizon:
            store.delete_prefix(prefix)
            report.artifacts.append(prefix)
    return report


def _owner_prefix(key: str, models: set[str], optimized: set[str]) -> str | None:
    """The prefix to remove when ``key`` (``models/<id>/...``) belongs to no row, else ``None``.
    An optimized model's files (``models/<id>/optimized/<optimized id>/...``) go on their own
    when only the optimized row is missing."""
    parts = key.split("/")
    if len(parts) < 3 or parts[0] != _MODELS:
        return None
    if parts[1] not in models:
        return f"{_MODELS}/{parts[1]}"
    if len(parts) >= 4 and parts[2] == "optimized" and parts[3] not in optimized:
        return "/".join(parts[:4])
    return None


def _discard(path: Path, removed: list[str]) -> None:
    """Remove a leftover; one that cannot be removed is logged, and start-up goes on."""
    try:
        remove_path(path)
    except OSError as exc:
        log.warning("start-up sweep could not remove %s: %s", path, exc)
    else:
        removed.append(str(path))


def _subfolders(root: Path, *, files_too: bool = False) -> list[Path]:
    if not root.is_dir():
        return []
    return [entry for entry in root.iterdir() if files_too or entry.is_dir()]
