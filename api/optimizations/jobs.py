"""The optimization job: run ``optimizer.optimize`` in a worker thread, store the artifact and
the measured percentages on the optimized-model row.

It starts from the model's serving ONNX, not the upload: a PyTorch model was converted once, at
upload, in a confined child (TorchScript from its sample data), so the optimizer converts
nothing again and torch never loads in this process; that ONNX is also exactly what an original
deployment serves, so the percentages compare against what runs. The upload's sample data,
checked against that ONNX at upload, goes along as ``data``: int8-static calibrates on it, and
accuracy is measured on it (the task metric on its labels, else fidelity to the original)
instead of on inputs generated from the signature.
"""

from __future__ import annotations

import logging
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio.from_thread
import anyio.to_thread

from aideploy.errors import InputError
from aideploy.schema import OptimizationRequest, OptimizationStatus
from api.context import ApiContext
from api.db.tables import JobRow, ModelRow, OptimizedModelRow
from api.models.orphans import remove_work_folders
from api.models.service import model_key

log = logging.getLogger("aideploy.api.optimizations")

_PROGRESS_EVERY_SECONDS = 1.0


class OptimizationJobHandler:
    async def run(self, context: ApiContext, job: JobRow) -> None:
        from optimizer import optimize

        async with context.database.session() as session:
            row = await session.get(OptimizedModelRow, job.subject_id)
            if row is None:
                return  # the model was deleted meanwhile; nothing to produce
            model = await session.get(ModelRow, row.original_model_id)
            assert model is not None  # the optimized row cascades with its model
            request = OptimizationRequest.model_validate(row.request)
            source, sample = model.serving_path, model.sample_data_path
        if source is None:
            raise InputError(
                f"model: {row.original_model_id} was uploaded before PyTorch models were converted to ONNX "
                "at upload; upload it again (with sample_data for TorchScript) to optimize it"
            )
        work_dir = context.settings.data_dir / "work" / "optimize" / row.id
        if work_dir.exists():
            shutil.rmtree(work_dir)  # a resumed job starts from a clean folder
        work_dir.parent.mkdir(parents=True, exist_ok=True)
        local_source = await anyio.to_thread.run_sync(context.store.local_path, source)
        local_data = (
            await anyio.to_thread.run_sync(context.store.local_path, sample) if sample else None
        )

        last_report = [0.0]

        def progress(event: Any) -> None:
            """Called on the optimizer's thread; shows the step in the row's ``metadata``."""
            log.debug("optimization %s: %s", row.id, event)
            now = time.monotonic()
            if now - last_report[0] >= _PROGRESS_EVERY_SECONDS or event.step >= event.total:
                last_report[0] = now
                anyio.from_thread.run(_record_progress, context, row.id, event)

        result = await anyio.to_thread.run_sync(
            partial(
                optimize,
                local_source,
                request,
                work_dir,
                data=local_data,
                progress=progress,
                cancel=context.stopping,
            )
        )
        relative = _relative(result.artifact, work_dir)
        key = f"{model_key(row.original_model_id)}/optimized/{row.id}"
        location = await anyio.to_thread.run_sync(context.store.put, work_dir, key)
        unmet = list(result.unmet_targets)
        async with context.database.session() as session:
            stored = await session.get(OptimizedModelRow, row.id)
            if stored is None:
                await anyio.to_thread.run_sync(context.store.delete_prefix, key)
                return
            stored.status = OptimizationStatus.COMPLETED.value
            stored.storage_path = f"{location}/{relative}"
            stored.size_reduction_percentage = result.size_reduction_percentage
            stored.latency_reduction_percentage = result.latency_reduction_percentage
            stored.accuracy_change_percentage = result.accuracy_change_percentage
            stored.metadata_ = {
                **stored.metadata_,
                "precision": result.precision or stored.metadata_.get("precision"),
                "accuracy_metric": result.accuracy_metric,
                "data_generated": result.data_generated,
                "targets_met": result.targets_met,
                "unmet_targets": unmet,
                "report_path": f"{location}/{_relative(result.report, work_dir)}",
                "notes": list(result.notes),
                "candidates": [
                    {
                        "name": candidate.name,
                        "precision": candidate.precision,
                        "size_reduction_percentage": candidate.size_reduction_percentage,
                        "latency_reduction_percentage": candidate.latency_reduction_percentage,
                        "accuracy_change_percentage": candidate.accuracy.change_pp,
                        "targets_met": candidate.targets_met,
                    }
                    for candidate in result.candidates
                ],
            }
            stored.status_reason = (
                None if result.targets_met else "targets not met: " + "; ".join(unmet)
            )

    async def fail(self, context: ApiContext, job: JobRow, reason: str) -> None:
        """Record the reason (secrets masked: it may quote an exception) and drop the work
        folder of the failed run."""
        async with context.database.session() as session:
            row = await session.get(OptimizedModelRow, job.subject_id)
            if row is not None:
                row.status = OptimizationStatus.FAILED.value
                row.status_reason = context.redactor(reason)
        await anyio.to_thread.run_sync(
            remove_work_folders, context.settings.data_dir, [job.subject_id]
        )


def _relative(path: Path, folder: Path) -> str:
    """Where ``path`` sits in ``folder``, which the store keeps as one unit."""
    return path.resolve().relative_to(folder.resolve()).as_posix()


async def _record_progress(context: ApiContext, optimized_id: str, event: Any) -> None:
    async with context.database.session() as session:
        stored = await session.get(OptimizedModelRow, optimized_id)
        if stored is not None:
            stored.metadata_ = {
                **stored.metadata_,
                "progress": {"step": event.step, "total": event.total, "message": event.message},
            }
