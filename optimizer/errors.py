"""The optimizer's typed errors: each names what was wrong in one line."""

from __future__ import annotations

from aideploy.errors import AideployError, InputError, NotSupportedError

__all__ = [
    "DISTILLATION_NOT_SUPPORTED",
    "CalibrationDataError",
    "InvalidModelError",
    "OptimizationCancelledError",
    "OptimizationFailedError",
    "UnsafeModelError",
    "UnsupportedModelError",
]

DISTILLATION_NOT_SUPPORTED = (
    "method: 'distillation' is not supported yet; use quantization, pruning, graph or auto"
)
"""The one message for distillation, from the command and the library alike."""


class InvalidModelError(InputError):
    """The file is not a model aideploy can read: wrong format, truncated, inconsistent."""


class UnsafeModelError(InvalidModelError):
    """Loading the file would mean unpickling arbitrary objects or reading outside its folder."""


class UnsupportedModelError(NotSupportedError):
    """A valid model this optimization cannot handle (for example nothing to prune)."""


class CalibrationDataError(InputError):
    """The ``.npz`` data does not fit the model: missing names, wrong shapes or dtypes."""


class OptimizationCancelledError(AideployError):
    """The caller set the cancel event; the partial output was removed."""


class OptimizationFailedError(AideployError):
    """An optimized artifact failed the checker or its test inference, so it is not reported."""
