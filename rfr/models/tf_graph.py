"""Read a TensorFlow frozen ``GraphDef`` (.pb) without TensorFlow.

The protobuf messages come from ``tensorboard.compat.proto`` (TensorBoard ships the compiled TF protos).
Only what the FaceNet conversion needs is decoded: the ``Const`` tensors as numpy arrays and each node's
op, inputs and scalar/list attributes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

AttrScalar = int | float | bool | str | tuple[int, ...] | tuple[float, ...] | None

# tensorflow/core/framework/types.proto
_DTYPES: dict[int, np.dtype[Any]] = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
}
_VALUE_FIELDS = {1: "float_val", 2: "double_val", 3: "int_val", 9: "int64_val", 10: "bool_val"}


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: dict[str, AttrScalar]


@dataclass(frozen=True)
class FrozenGraph:
    nodes: dict[str, Node]
    constants: dict[str, npt.NDArray[Any]]

    def const(self, name: str) -> npt.NDArray[Any]:
        try:
            return self.constants[name]
        except KeyError:
            raise KeyError(f"graph has no constant {name!r}") from None

    def ops(self, op: str) -> list[Node]:
        return [node for node in self.nodes.values() if node.op == op]


def load_frozen_graph(path: Path) -> FrozenGraph:
    """Parse a binary GraphDef and decode its constants."""
    from tensorboard.compat.proto import graph_pb2

    graph = graph_pb2.GraphDef()
    graph.ParseFromString(path.read_bytes())
    nodes: dict[str, Node] = {}
    constants: dict[str, npt.NDArray[Any]] = {}
    for node_def in graph.node:
        attrs = {key: _attr_value(value) for key, value in node_def.attr.items() if key != "value"}
        nodes[node_def.name] = Node(node_def.name, node_def.op, tuple(node_def.input), attrs)
        if node_def.op == "Const":
            constants[node_def.name] = decode_tensor(node_def.attr["value"].tensor)
    logger.debug("loaded %s: %d nodes, %d constants", path, len(nodes), len(constants))
    return FrozenGraph(nodes=nodes, constants=constants)


def decode_tensor(tensor: Any) -> npt.NDArray[Any]:
    """TensorProto -> numpy array (``tensor_content`` bytes, or the typed ``*_val`` fields, broadcast if short)."""
    dtype = _DTYPES.get(int(tensor.dtype))
    if dtype is None:
        raise ValueError(f"unsupported TensorProto dtype {tensor.dtype}")
    shape = tuple(int(dim.size) for dim in tensor.tensor_shape.dim)
    count = int(np.prod(shape, dtype=np.int64))
    if tensor.tensor_content:
        flat = np.frombuffer(tensor.tensor_content, dtype=dtype)
    else:
        flat = np.asarray(list(getattr(tensor, _VALUE_FIELDS[int(tensor.dtype)])), dtype=dtype)
        if flat.size == 1 and count != 1:
            flat = np.full(count, flat[0], dtype=dtype)
        elif flat.size == 0:
            flat = np.zeros(count, dtype=dtype)
    if flat.size != count:
        raise ValueError(f"tensor has {flat.size} values for shape {shape}")
    return flat.reshape(shape).astype(dtype.newbyteorder("="), copy=True)


def _attr_value(value: Any) -> AttrScalar:
    kind = value.WhichOneof("value")
    if kind == "s":
        return bytes(value.s).decode("utf-8", errors="replace")
    if kind in ("i", "f", "b", "type"):
        scalar: int | float | bool = getattr(value, kind)
        return scalar
    if kind == "list":
        if len(value.list.i):
            return tuple(int(v) for v in value.list.i)
        if len(value.list.f):
            return tuple(float(v) for v in value.list.f)
        return ()
    if kind == "shape":
        return tuple(int(dim.size) for dim in value.shape.dim)
    return None
