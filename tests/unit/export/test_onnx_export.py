"""The ONNX export's graph surgery (raytrack.export.onnx_export); the exported models against
torch are tested with the other readers in test_model_bin.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def test_cast_like_becomes_cast_and_onnx_runtime_loads_the_graph_silently(capfd) -> None:
    """The Jacobian's export (not optimised) kept CastLike nodes, on which ONNX Runtime printed
    "Could not find a CPU kernel and hence can't constant fold CastLike" at every session
    creation (issue 17): the export writes them as Casts, which compute the same."""
    import onnx
    import onnx_ir as ir
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from raytrack.export.onnx_export import cast_like_to_cast

    # the exporter's pattern (torch.arange of the Jacobian): constant int64 CastLike'd to the
    # type of another constant, then used with the input
    five = helper.make_tensor("", TensorProto.INT64, [], [5])
    zero = helper.make_tensor("", TensorProto.FLOAT, [], [0.0])
    nodes = [
        helper.make_node("Constant", [], ["five"], value=five),
        helper.make_node("Constant", [], ["like"], value=zero),
        helper.make_node("CastLike", ["five", "like"], ["five_f"]),
        helper.make_node("CastLike", ["x", "x"], ["x_same"]),  # a typed input as the target
        helper.make_node("Mul", ["x_same", "five_f"], ["y"]),
    ]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph(nodes, "g", [x_info], [y_info])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model = ir.serde.deserialize_model(proto)
    assert cast_like_to_cast(model) == 2
    fixed = ir.serde.serialize_model(model)
    onnx.checker.check_model(fixed)
    assert [n.op_type for n in fixed.graph.node].count("CastLike") == 0
    x = np.array([1.5, -2.0], dtype=np.float32)
    capfd.readouterr()
    session = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x})
    assert capfd.readouterr().err == ""
    assert y.dtype == np.float32 and np.array_equal(y, x * 5)


def test_the_exported_file_carries_no_source_paths(tmp_path) -> None:
    """The exporter records the Python stack that traced each node; a shipped model.onnx would
    carry the exporting machine's source paths (and the trace would take longer)."""
    import raytrack
    from raytrack.export.onnx_export import export_onnx_pair

    from .helpers import make_model

    model = make_model((8,), "silu", 0, base="line", inputs="state", target="residual")
    export_onnx_pair(model, tmp_path / "model.onnx", tmp_path / "model_jacobian.onnx")
    source = str(Path(raytrack.__file__).parent).encode()
    for name in ("model.onnx", "model_jacobian.onnx"):
        content = (tmp_path / name).read_bytes()
        assert source not in content and b"raytrack/models" not in content, name
