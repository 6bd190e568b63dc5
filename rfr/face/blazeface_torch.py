"""BlazeFace short-range in PyTorch, built from MediaPipe's ``.tflite`` file: the GPU path of the fast detector.

The ``.tflite`` graph is read with the flatbuffer schema that ships with LiteRT (``ai_edge_litert.
schema_py_generated``) and replayed op by op in PyTorch (NCHW): CONV_2D, DEPTHWISE_CONV_2D, ADD, RELU, PAD,
MAX_POOL_2D, RESHAPE, CONCATENATION, with the float16 weights DEQUANTIZEd once to float32. Only the ops this
network uses are supported; any other raises :class:`UnsupportedGraph`. The module is fully convolutional like the
original: any input whose sides are multiples of 16 (rfr/face/blazeface.py), and batched. Agreement with LiteRT is
checked by tests/integration/test_detect_fast.py (same outputs to float tolerance).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

Floats = npt.NDArray[np.float32]

# tflite BuiltinOperator codes (tensorflow/lite/schema/schema.fbs)
ADD, CONCATENATION, CONV_2D, DEPTHWISE_CONV_2D, DEQUANTIZE = 0, 2, 3, 4, 6
MAX_POOL_2D, RELU, RESHAPE, PAD = 17, 19, 22, 34
SAME, VALID = 0, 1
ACT_NONE, ACT_RELU, ACT_RELU6 = 0, 1, 3
_NP_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 4: np.int64}


class UnsupportedGraph(ValueError):
    """The ``.tflite`` graph uses an op or option this port does not replay."""


@dataclass(frozen=True)
class Options:
    """The op options this port reads (tflite names), copied out of the flatbuffer objects."""

    strideH: int = 1
    strideW: int = 1
    padding: int = VALID
    fusedActivationFunction: int = ACT_NONE
    filterHeight: int = 1
    filterWidth: int = 1
    axis: int = 0
    newShape: tuple[int, ...] = ()

    @classmethod
    def of(cls, raw: Any) -> Options:
        if raw is None:
            return cls()
        fields = {name: getattr(raw, name) for name in cls.__dataclass_fields__ if hasattr(raw, name)}
        if "newShape" in fields:
            fields["newShape"] = tuple(int(v) for v in (fields["newShape"] if fields["newShape"] is not None else ()))
        return cls(**fields)


@dataclass
class Op:
    code: int
    inputs: list[int]
    outputs: list[int]
    options: Options


@dataclass
class Graph:
    """The subgraph: ops in execution order, constant tensors (float32 / int32 numpy), input and output ids."""

    ops: list[Op]
    constants: dict[int, np.ndarray[Any, Any]]
    inputs: list[int]
    outputs: list[int]
    names: dict[int, str] = field(default_factory=dict)


def read_graph(path: Path) -> Graph:
    """Parse a ``.tflite`` file's first subgraph; float16 constants behind DEQUANTIZE ops become float32."""
    from ai_edge_litert import schema_py_generated as schema  # type: ignore[import-untyped]

    model = schema.ModelT.InitFromPackedBuf(Path(path).read_bytes(), 0)
    sub = model.subgraphs[0]
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    constants: dict[int, np.ndarray[Any, Any]] = {}
    for i, tensor in enumerate(sub.tensors):
        data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
        if data is not None and len(data):
            dtype = _NP_TYPES.get(tensor.type)
            if dtype is None:
                raise UnsupportedGraph(f"constant tensor {tensor.name!r} of tflite type {tensor.type}")
            constants[i] = np.frombuffer(bytes(bytearray(data)), dtype=dtype).reshape(tuple(tensor.shape))
    ops = []
    for op in sub.operators:
        code = codes[op.opcodeIndex]
        if code == DEQUANTIZE:
            constants[op.outputs[0]] = constants[op.inputs[0]].astype(np.float32)
            continue
        ops.append(Op(code, list(op.inputs), list(op.outputs), Options.of(op.builtinOptions)))
    names = {i: t.name.decode() if isinstance(t.name, bytes) else str(t.name) for i, t in enumerate(sub.tensors)}
    return Graph(ops, constants, list(sub.inputs), list(sub.outputs), names)


def _activation(x: torch.Tensor, kind: int) -> torch.Tensor:
    if kind == ACT_NONE:
        return x
    if kind == ACT_RELU:
        return F.relu(x)
    if kind == ACT_RELU6:
        return F.relu6(x)
    raise UnsupportedGraph(f"fused activation {kind}")


def _same_pad(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """TensorFlow's SAME padding: the extra pixel, if any, on the bottom / right."""
    pads = []
    for size, k, s in ((x.shape[3], kernel[1], stride[1]), (x.shape[2], kernel[0], stride[0])):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class BlazeFaceTorch(nn.Module):
    """The graph as a module: input (N, 3, H, W) float in [-1, 1]; outputs regressors (N, A, 16) and logits
    (N, A, 1), exactly the tflite outputs."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        self.graph = graph
        self.weights = nn.ParameterList()
        self._param: dict[int, int] = {}
        for op in graph.ops:
            if op.code in (CONV_2D, DEPTHWISE_CONV_2D):
                self._add(op.inputs[1], self._conv_weight(op))
                if len(op.inputs) > 2 and op.inputs[2] >= 0:
                    self._add(op.inputs[2], torch.from_numpy(graph.constants[op.inputs[2]].copy()))
            elif op.code not in (ADD, RELU, PAD, MAX_POOL_2D, RESHAPE, CONCATENATION):
                raise UnsupportedGraph(f"tflite op code {op.code}")

    def _add(self, tensor: int, value: torch.Tensor) -> None:
        self._param[tensor] = len(self.weights)
        self.weights.append(nn.Parameter(value.float(), requires_grad=False))

    def _conv_weight(self, op: Op) -> torch.Tensor:
        w = torch.from_numpy(self.graph.constants[op.inputs[1]].copy())  # tflite: OHWI; depthwise: 1HW(C*M)
        return w.permute(3, 0, 1, 2) if op.code == DEPTHWISE_CONV_2D else w.permute(0, 3, 1, 2)

    def _w(self, tensor: int) -> torch.Tensor:
        weight: torch.Tensor = self.weights[self._param[tensor]]
        return weight

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values: dict[int, torch.Tensor] = {self.graph.inputs[0]: x}
        for op in self.graph.ops:
            values[op.outputs[0]] = self._step(op, values)
        outs = [values[i] for i in self.graph.outputs]
        regressors = next(o for o in outs if o.shape[-1] == 16)
        logits = next(o for o in outs if o.shape[-1] == 1)
        return regressors, logits

    def _step(self, op: Op, values: dict[int, torch.Tensor]) -> torch.Tensor:
        x = values.get(op.inputs[0])
        o = op.options
        if op.code in (CONV_2D, DEPTHWISE_CONV_2D):
            assert x is not None
            w = self._w(op.inputs[1]).to(x.dtype)
            bias = self._w(op.inputs[2]).to(x.dtype) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            stride = (o.strideH, o.strideW)
            if o.padding == SAME:
                x = _same_pad(x, (w.shape[2], w.shape[3]), stride)
            groups = x.shape[1] if op.code == DEPTHWISE_CONV_2D else 1
            return _activation(F.conv2d(x, w, bias, stride=stride, groups=groups), o.fusedActivationFunction)
        if op.code == ADD:
            return _activation(values[op.inputs[0]] + values[op.inputs[1]], o.fusedActivationFunction)
        if op.code == RELU:
            assert x is not None
            return F.relu(x)
        if op.code == PAD:
            assert x is not None
            p = self.graph.constants[op.inputs[1]]  # NHWC: [[n0, n1], [top, bottom], [left, right], [c0, c1]]
            return F.pad(x, [int(p[2, 0]), int(p[2, 1]), int(p[1, 0]), int(p[1, 1]), int(p[3, 0]), int(p[3, 1])])
        if op.code == MAX_POOL_2D:
            assert x is not None
            if o.padding == SAME:
                x = _same_pad(x, (o.filterHeight, o.filterWidth), (o.strideH, o.strideW))
            return F.max_pool2d(x, (o.filterHeight, o.filterWidth), (o.strideH, o.strideW))
        if op.code == RESHAPE:  # NHWC (N, h, w, c) -> (N, h*w*c/last, last): back to tflite's layout first
            assert x is not None
            shape = self.graph.constants[op.inputs[1]] if len(op.inputs) > 1 and op.inputs[1] >= 0 else o.newShape
            last = int(shape[-1])
            return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, last)
        if op.code == CONCATENATION:
            return torch.cat([values[i] for i in op.inputs], dim=o.axis)
        raise UnsupportedGraph(f"tflite op code {op.code}")


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class TorchRunner:
    """:class:`rfr.face.fast_detector.Runner` over :class:`BlazeFaceTorch` on ``device``; on CUDA in float16
    (``half``), channels-last, under ``torch.inference_mode``."""

    name = "torch"

    def __init__(self, module: BlazeFaceTorch, device: torch.device, half: bool | None = None) -> None:
        self.device = device
        self.half = device.type == "cuda" if half is None else half
        self.dtype = torch.float16 if self.half else torch.float32
        self.module = module.to(device).eval()

    @classmethod
    def from_tflite(cls, model_path: Path, device: str = "auto") -> TorchRunner:
        """Build the module from the ``.tflite`` file.

        Raises:
            FileNotFoundError: the model file is missing.
            UnsupportedGraph: the file holds ops this port does not replay.
        """
        if not Path(model_path).is_file():
            raise FileNotFoundError(f"face detector model not found at {model_path}")
        runner = cls(BlazeFaceTorch(read_graph(Path(model_path))), resolve_device(device))
        logger.info("loaded face detector %s on PyTorch (%s)", Path(model_path).name, runner.device)
        return runner

    def run(self, batch: Floats) -> tuple[Floats, Floats]:
        """Regressors (N, A, 16) and logits (N, A) float32 of a batch (N, H, W, 3) float32 in [-1, 1]."""
        regressors, logits = self.run_tensor(torch.from_numpy(np.ascontiguousarray(batch)))
        return regressors.float().cpu().numpy(), logits.float().cpu().numpy()

    @torch.inference_mode()
    def run_tensor(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`run` on a tensor (N, H, W, 3) on any device; the results stay on this runner's device."""
        x = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).to(self.dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        regressors, logits = self.module(x)
        return regressors, logits.reshape(logits.shape[0], -1)

    def pyramid(self, frames: list[npt.NDArray[np.uint8]], levels: list[Any],
                cut: float) -> Iterator[list[tuple[npt.NDArray[np.int64], Floats, Floats]]]:
        """The fast detector's levels (:class:`rfr.face.fast_detector.Level`) of same-sized RGB uint8 frames, scaled,
        run and selected on this runner's device: per level, per frame, the indices of the anchors whose logit is
        at least ``cut``, with their regressors (K, 16) and logits (K,) as float32 numpy."""
        batch = torch.from_numpy(np.stack(frames))
        yield from self.pyramid_tensor(batch, levels, cut)

    @torch.inference_mode()
    def pyramid_tensor(self, frames: torch.Tensor, levels: list[Any],
                       cut: float) -> Iterator[list[tuple[npt.NDArray[np.int64], Floats, Floats]]]:
        """:meth:`pyramid` on a uint8 tensor (N, H, W, 3) on any device (e.g. JPEGs decoded by nvJPEG)."""
        from rfr.face.fast_detector import whole_input_size

        scaled = frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2).to(self.dtype)
        for level in levels:
            if (scaled.shape[3], scaled.shape[2]) != (level.width, level.height):
                shrink = scaled.shape[3] / level.width
                scaled = F.interpolate(scaled, size=(level.height, level.width), mode="bilinear",
                                       align_corners=False, antialias=shrink >= 2.0)
            x = scaled * (2.0 / 255.0) - 1.0
            input_w, input_h = whole_input_size(level)
            x = F.pad(x, [0, input_w - level.width, 0, input_h - level.height])
            regressors, logits = self.module(x.contiguous(memory_format=torch.channels_last))
            logits = logits.reshape(logits.shape[0], -1)
            hits = torch.nonzero(logits >= cut)  # (K, 2): frame, anchor; one device sync per level
            frame = hits[:, 0].cpu().numpy()
            anchor = hits[:, 1].cpu().numpy().astype(np.int64)
            regs = regressors[hits[:, 0], hits[:, 1]].float().cpu().numpy()
            logs = logits[hits[:, 0], hits[:, 1]].float().cpu().numpy()
            bounds = np.searchsorted(frame, np.arange(logits.shape[0] + 1))
            yield [(anchor[a:b], regs[a:b], logs[a:b]) for a, b in itertools.pairwise(bounds)]
