"""What every pass shares: a typed config and ``run(artifact, out_dir) -> artifact``.

A pass never touches its input: it reads one ONNX file and writes a new one into ``out_dir``,
so ``auto`` can run many passes over the same artifact and keep whichever measures best.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import onnx

__all__ = ["Pass", "PassConfig", "has_external_data", "needs_external_data", "save_model"]

_PROTOBUF_LIMIT = 1_800_000_000
"""Above this the model's weights go to an external data file (protobuf caps at 2 GB)."""


class PassConfig(BaseModel):
    """Base of the pass configs: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ConfigT = TypeVar("ConfigT", bound=PassConfig)


class Pass(ABC, Generic[ConfigT]):
    """One optimization technique."""

    name: ClassVar[str]
    """Short identifier; also the stem of the file the pass writes."""

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    def output_path(self, out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        return out_dir / f"{self.name}.onnx"

    @abstractmethod
    def run(self, artifact: Path, out_dir: Path) -> Path:
        """Write the transformed model into ``out_dir`` and return its path."""

    def describe(self) -> dict[str, object]:
        """Name and config, as recorded in the report."""
        return {"pass": self.name, **self.config.model_dump(mode="json")}


def needs_external_data(path: Path) -> bool:
    """Whether the model at ``path`` (with its external data) is too large for one protobuf."""
    from optimizer.model_info import external_data_files, load_onnx

    files = external_data_files(load_onnx(path), path.parent)
    return path.stat().st_size + sum(file.stat().st_size for file in files) > _PROTOBUF_LIMIT


def has_external_data(path: Path) -> bool:
    """Whether any weight of the model at ``path`` lives in a file beside it."""
    from optimizer.model_info import external_data_files, load_onnx

    return bool(external_data_files(load_onnx(path), path.parent))


def save_model(model: onnx.ModelProto, path: Path) -> Path:
    """Save, putting weights in ``<name>.data`` beside it when the file would be too large."""
    import onnx

    external = model.ByteSize() > _PROTOBUF_LIMIT
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location=f"{path.stem}.data" if external else None,
        size_threshold=1024,
    )
    return path
