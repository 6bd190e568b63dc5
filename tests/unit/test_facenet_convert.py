"""FaceNet GraphDef -> facenet-pytorch conversion pieces, on synthetic inputs (the real graph is in integration)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rfr.models.facenet_convert import ConversionError, identity_bn_state, map_conv_scopes, new_inception_resnet_v1
from rfr.models.tf_graph import load_frozen_graph


def test_scope_mapping_matches_facenet_pytorch_names() -> None:
    scopes = [
        "Conv2d_1a_3x3",
        "Conv2d_4b_3x3",
        "Repeat/block35_1/Branch_0/Conv2d_1x1",
        "Repeat/block35_1/Branch_2/Conv2d_0c_3x3",
        "Repeat/block35_1/Branch_2/Conv2d_0a_1x1",
        "Repeat/block35_1/Branch_2/Conv2d_0b_3x3",
        "Repeat/block35_5/Conv2d_1x1",
        "Mixed_6a/Branch_0/Conv2d_1a_3x3",
        "Mixed_6a/Branch_1/Conv2d_1a_3x3",
        "Mixed_6a/Branch_1/Conv2d_0a_1x1",
        "Mixed_6a/Branch_1/Conv2d_0b_3x3",
        "Repeat_1/block17_10/Branch_1/Conv2d_0c_7x1",
        "Repeat_1/block17_10/Branch_1/Conv2d_0a_1x1",
        "Repeat_1/block17_10/Branch_1/Conv2d_0b_1x7",
        "Mixed_7a/Branch_0/Conv2d_0a_1x1",
        "Mixed_7a/Branch_0/Conv2d_1a_3x3",
        "Repeat_2/block8_3/Branch_0/Conv2d_1x1",
        "Block8/Conv2d_1x1",
    ]
    modules = {m.scope: (m.module, m.folded_bn) for m in map_conv_scopes(scopes)}
    assert modules == {
        "Conv2d_1a_3x3": ("conv2d_1a", True),
        "Conv2d_4b_3x3": ("conv2d_4b", True),
        "Repeat/block35_1/Branch_0/Conv2d_1x1": ("repeat_1.0.branch0", True),
        "Repeat/block35_1/Branch_2/Conv2d_0a_1x1": ("repeat_1.0.branch2.0", True),
        "Repeat/block35_1/Branch_2/Conv2d_0b_3x3": ("repeat_1.0.branch2.1", True),
        "Repeat/block35_1/Branch_2/Conv2d_0c_3x3": ("repeat_1.0.branch2.2", True),
        "Repeat/block35_5/Conv2d_1x1": ("repeat_1.4.conv2d", False),
        "Mixed_6a/Branch_0/Conv2d_1a_3x3": ("mixed_6a.branch0", True),
        "Mixed_6a/Branch_1/Conv2d_0a_1x1": ("mixed_6a.branch1.0", True),
        "Mixed_6a/Branch_1/Conv2d_0b_3x3": ("mixed_6a.branch1.1", True),
        "Mixed_6a/Branch_1/Conv2d_1a_3x3": ("mixed_6a.branch1.2", True),
        "Repeat_1/block17_10/Branch_1/Conv2d_0a_1x1": ("repeat_2.9.branch1.0", True),
        "Repeat_1/block17_10/Branch_1/Conv2d_0b_1x7": ("repeat_2.9.branch1.1", True),
        "Repeat_1/block17_10/Branch_1/Conv2d_0c_7x1": ("repeat_2.9.branch1.2", True),
        "Mixed_7a/Branch_0/Conv2d_0a_1x1": ("mixed_7a.branch0.0", True),
        "Mixed_7a/Branch_0/Conv2d_1a_3x3": ("mixed_7a.branch0.1", True),
        "Repeat_2/block8_3/Branch_0/Conv2d_1x1": ("repeat_3.2.branch0", True),
        "Block8/Conv2d_1x1": ("block8.conv2d", False),
    }
    model_modules = dict(new_inception_resnet_v1().named_modules())
    assert all(name in model_modules for name, _ in modules.values())


@pytest.mark.parametrize("scope", ["Logits/Conv", "Repeat/block17_1/Conv2d_1x1", "Mixed_6a/Branch_0/a/b"])
def test_unknown_scopes_are_rejected(scope: str) -> None:
    with pytest.raises(ConversionError):
        map_conv_scopes([scope])


def test_identity_batch_norm_is_exact() -> None:
    bias = torch.randn(64)
    bn = torch.nn.BatchNorm2d(64, eps=0.001)
    bn.load_state_dict({k.removeprefix("bn."): v for k, v in identity_bn_state("bn", bias, 0.001).items()})
    bn.eval()
    x = torch.randn(2, 64, 9, 9) * 10
    with torch.inference_mode():
        assert torch.equal(bn(x), x + bias[None, :, None, None])


def test_frozen_graph_constants_decode(tmp_path: Path) -> None:
    from tensorboard.compat.proto import graph_pb2

    graph = graph_pb2.GraphDef()
    weights = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    packed = graph.node.add(name="w", op="Const")
    packed.attr["value"].tensor.dtype = 1
    packed.attr["value"].tensor.tensor_shape.dim.add(size=2)
    packed.attr["value"].tensor.tensor_shape.dim.add(size=3)
    packed.attr["value"].tensor.tensor_shape.dim.add(size=4)
    packed.attr["value"].tensor.tensor_content = weights.tobytes()
    splat = graph.node.add(name="ones", op="Const")
    splat.attr["value"].tensor.dtype = 1
    splat.attr["value"].tensor.tensor_shape.dim.add(size=5)
    splat.attr["value"].tensor.float_val.append(1.0)
    conv = graph.node.add(name="conv", op="Conv2D", input=["x", "w"])
    conv.attr["padding"].s = b"SAME"
    conv.attr["strides"].list.i.extend([1, 2, 2, 1])
    path = tmp_path / "g.pb"
    path.write_bytes(graph.SerializeToString())

    loaded = load_frozen_graph(path)

    np.testing.assert_array_equal(loaded.const("w"), weights)
    np.testing.assert_array_equal(loaded.const("ones"), np.ones(5, dtype=np.float32))
    assert loaded.nodes["conv"].inputs == ("x", "w")
    assert loaded.nodes["conv"].attrs == {"padding": "SAME", "strides": (1, 2, 2, 1)}
    assert [n.name for n in loaded.ops("Const")] == ["w", "ones"]
