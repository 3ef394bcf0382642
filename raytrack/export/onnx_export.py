"""ONNX export of a TrackMLP and ONNX Runtime inference.

The exported graph takes ``state`` (N, 7) float32 in physical units and returns ``state_end``
(N, 4) float32: the normalisation and the target decoding are part of the graph. The batch
dimension is dynamic (``batch``). The file is self-contained (weights embedded, no external data
file) and is written atomically.

Exporter choice: ``torch.onnx.export(..., dynamo=True)`` (the default and maintained exporter in
torch >= 2.9) with ``dynamic_shapes``. The default opset here is 18, the lowest the dynamo
exporter implements without a version conversion; there GELU is exported as ``Erf``-based
arithmetic, which any ONNX Runtime >= 1.14 runs (the fused ``Gelu`` op needs opset 20).
The exporter writes ``CastLike`` for dtype promotions; ONNX Runtime has no CPU kernel for it and
warns once per node at session creation, so every ``CastLike`` whose target type the graph
records is written as the equivalent ``Cast`` (see :func:`cast_like_to_cast`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.fx.config

from raytrack.files import replacing
from raytrack.models.jacobian import JacobianModel
from raytrack.models.mlp import N_INPUTS, N_OUTPUTS, TrackMLP

if TYPE_CHECKING:
    from onnxscript import ir

INPUT_NAME = "state"
OUTPUT_NAME = "state_end"
JACOBIAN_NAME = "jacobian"
DEFAULT_OPSET = 18


def export_onnx(
    model: TrackMLP, path: str | os.PathLike, opset_version: int = DEFAULT_OPSET
) -> None:
    """Export ``model`` (in eval mode) to one self-contained ONNX file at ``path``, atomically.

    A run's ``model.onnx`` comes from :func:`export_onnx_pair` (with its Jacobian's file): the
    same outputs from a graph traced once for both; this export alone is the cheaper trace when
    only the model is wanted (timings, benchmarks)."""
    _save(_exported(model, opset_version), path)


def export_jacobian_onnx(
    model: TrackMLP, path: str | os.PathLike, opset_version: int = DEFAULT_OPSET
) -> None:
    """Export ``model`` with its Jacobian to ``path`` (``model_jacobian.onnx``), atomically.

    Input ``state`` (N, 7); outputs ``state_end`` (N, 4) and ``jacobian`` (N, 4, 5), float32,
    ``jacobian[i, a, b] = d state_end_a / d state_b`` over x, y, tx, ty, qop (see
    :mod:`raytrack.models.jacobian`).
    """
    _save(_exported(model, opset_version, with_jacobian=True), path)


def export_onnx_pair(
    model: TrackMLP,
    path: str | os.PathLike,
    jacobian_path: str | os.PathLike,
    opset_version: int = DEFAULT_OPSET,
) -> None:
    """:func:`export_jacobian_onnx` to ``jacobian_path``, and :func:`export_onnx` to ``path``
    as that graph's ``state_end`` alone (the Jacobian's nodes removed, then onnxscript's
    optimiser, the exporter's own pass without its fusions of transformer patterns, none of
    which an MLP has): one trace for both files, whose ``state_end`` is then one
    computation, because the exporter's tracing is most of an export's time."""
    program = _exported(model, opset_version, with_jacobian=True)
    _save(program, jacobian_path)
    _save(_state_end_only(program), path)


def _exported(model: TrackMLP, opset_version: int, with_jacobian: bool = False) -> ir.Model:
    example = torch.zeros(2, N_INPUTS, dtype=torch.float32)
    example[:, 4] = 1e-4  # a plausible q/p; values do not matter for tracing
    batch = torch.export.Dim("batch")
    was_training = model.training
    model.eval()
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                JacobianModel(model).eval() if with_jacobian else model,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME, JACOBIAN_NAME] if with_jacobian else [OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                opset_version=opset_version,
                dynamo=True,
                verbose=False,
                # The Jacobian's graph is half again the model's, and ONNX Runtime's graph
                # optimisations at session creation do what the exporter's optimiser would.
                optimize=not with_jacobian,
            )
    finally:
        model.train(was_training)
    cast_like_to_cast(program.model)
    return program.model


def _state_end_only(model: ir.Model) -> ir.Model:
    """``model`` (the Jacobian's graph, changed in place) without its ``jacobian`` output and
    the nodes only that output used, optimised (constant folding, dead code)."""
    import onnxscript
    from onnxscript import ir

    outputs = model.graph.outputs
    outputs[:] = [v for v in outputs if v.name == OUTPUT_NAME]
    ir.passes.common.RemoveUnusedNodesPass()(model)
    return onnxscript.optimizer.optimize(model)


def _save(model: ir.Model, path: str | os.PathLike) -> None:
    from onnxscript import ir

    with replacing(path) as tmp:
        ir.save(model, str(tmp))
        _check_self_contained(tmp)


def cast_like_to_cast(model: ir.Model) -> int:
    """Replace, in place, each ``CastLike(x, like)`` of an ``onnx_ir`` model whose ``like`` has a
    known element type by ``Cast(x, to=that type)``; returns how many were replaced.

    Without optimisation (the Jacobian's export) the exporter leaves them in the graph, and ONNX
    Runtime, which has no CPU kernel for ``CastLike``, prints "Could not find a CPU kernel and
    hence can't constant fold CastLike node" for each at every session creation.
    """
    from onnxscript import ir

    replaced = 0
    for graph in (model.graph, *model.graph.subgraphs()):
        for node in list(graph):
            if node.op_type != "CastLike" or node.domain != "":
                continue
            like = node.inputs[1]
            target = _element_type(like)
            if target is None:  # unknown until run time: CastLike it stays
                continue
            cast = ir.node("Cast", [node.inputs[0]], {"to": target}, name=node.name)
            ir.convenience.replace_nodes_and_values(
                graph, node, [node], [cast], node.outputs, cast.outputs
            )
            replaced += 1
            # a Constant read only for its type is now unused, which ONNX Runtime warns about
            producer = like.producer()
            unused = not like.uses() and not like.is_graph_output()
            if producer is not None and producer.op_type == "Constant" and unused:
                graph.remove(producer, safe=True)
    return replaced


def _element_type(value: ir.Value) -> ir.DataType | None:
    """The element type of an ``onnx_ir`` value: recorded, or that of its ``Constant``."""
    if value.dtype is not None:
        return value.dtype
    producer = value.producer()
    # the exporter records no type on the outputs of the Constant nodes it writes itself
    if producer is not None and producer.op_type == "Constant" and "value" in producer.attributes:
        return producer.attributes["value"].value.dtype
    return None


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's known-harmless warnings (progress prints: ``verbose=False``), and
    keep the traced source's stack traces out of the graph.

    torch 2.13 logs "torchvision is not installed. Skipping torchvision::nms" (and friends) at
    WARNING level on every export, and torch.export emits a FutureWarning about ``LeafSpec``
    from its own internals. Neither concerns this model.
    """
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    # Without it every node keeps the Python stack that traced it, the source paths of the
    # machine that exported, in the shipped file; recording them is also a part of the trace.
    stack_traces = torch.fx.config.do_not_emit_stack_traces
    torch.fx.config.do_not_emit_stack_traces = True
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            yield
    finally:
        torch.fx.config.do_not_emit_stack_traces = stack_traces
        logger.setLevel(level)


def _check_self_contained(path: Path) -> None:
    """Fail if any tensor of the exported graph lives in an external data file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    external = [
        t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL
    ]
    if external:
        raise RuntimeError(f"{path}: exporter wrote external data for {external[:5]}")
    onnx.checker.check_model(proto)


def onnx_session(path: str | os.PathLike, intra_op_num_threads: int | None = None):
    """An onnxruntime InferenceSession on the CPU provider (threads: None = ORT default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if intra_op_num_threads is not None:
        options.intra_op_num_threads = int(intra_op_num_threads)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_predict(
    path: str | os.PathLike, inputs: np.ndarray, intra_op_num_threads: int | None = None
) -> np.ndarray:
    """Run the exported model on (N, 7) physical inputs; returns (N, 4) float32."""
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    if inputs.ndim != 2 or inputs.shape[1] != N_INPUTS:
        raise ValueError(f"inputs must have shape (N, {N_INPUTS}), got {inputs.shape}")
    session = onnx_session(path, intra_op_num_threads)
    (out,) = session.run([OUTPUT_NAME], {INPUT_NAME: inputs})
    if out.shape != (inputs.shape[0], N_OUTPUTS):
        raise RuntimeError(f"{path}: output shape {out.shape}, expected ({inputs.shape[0]}, 4)")
    return out


def onnx_predict_with_jacobian(
    path: str | os.PathLike, inputs: np.ndarray, intra_op_num_threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model_jacobian.onnx`` on (N, 7) inputs: (N, 4) end states, (N, 4, 5) Jacobians."""
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    if inputs.ndim != 2 or inputs.shape[1] != N_INPUTS:
        raise ValueError(f"inputs must have shape (N, {N_INPUTS}), got {inputs.shape}")
    session = onnx_session(path, intra_op_num_threads)
    end, jac = session.run([OUTPUT_NAME, JACOBIAN_NAME], {INPUT_NAME: inputs})
    return end, jac
