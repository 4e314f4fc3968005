"""ONNX Runtime's offline graph optimization, saved to a file.

``basic`` (constant folding, redundant-node removal) is provider-independent and is the first
step of every other method; ``extended`` adds ONNX Runtime's CPU fusions (GELU, LayerNorm,
attention) that other runtimes may not understand. ``all`` is deliberately not offered: its
layout transforms are specific to the machine that ran them.

ONNX Runtime writes the optimized model's external data references relative to the *new*
folder, so weights stored beside the input are inlined first (or, for models too large for
one protobuf, written to ``graph.data`` beside the output).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from optimizer.passes.base import Pass, PassConfig, has_external_data, needs_external_data

__all__ = ["GraphOptimization", "GraphOptimizationConfig"]


class GraphOptimizationConfig(PassConfig):
    level: Literal["basic", "extended"] = "basic"


class GraphOptimization(Pass[GraphOptimizationConfig]):
    name = "graph"

    def run(self, artifact: Path, out_dir: Path) -> Path:
        import onnxruntime as ort

        output = self.output_path(out_dir)
        options = ort.SessionOptions()
        options.graph_optimization_level = (
            ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            if self.config.level == "basic"
            else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        )
        options.optimized_model_filepath = str(output)
        options.log_severity_level = 3
        source: str | bytes = str(artifact)
        if needs_external_data(artifact):
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name", f"{output.stem}.data"
            )
        elif has_external_data(artifact):
            import onnx

            source = onnx.load(str(artifact)).SerializeToString()
        ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        return output
