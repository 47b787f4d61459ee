"""Convert an fp32 ONNX graph to fp16 compute, for strongly typed runtimes (TensorRT-RTX).

A strongly typed builder runs each layer in the type the graph says, so "FP16" means the graph
itself must be fp16. No converter ships with virtime's dependencies, so this one does the small
amount the GigaTIME graphs need: every float32 initializer, ``Constant``, ``ConstantOfShape`` and
``Cast``-to-float becomes float16; inputs that ONNX requires to stay float32 (``Resize`` roi and
scales) get a ``Cast`` back; graph outputs stay float32 (cast at the end) and so do graph inputs unless
``keep_io_float32=False``, so callers hand in and get back the same arrays as with the fp32 graph. Subgraphs (``If``/``Loop``)
are not converted and are rejected.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from virtime.errors import ModelMismatchError

if TYPE_CHECKING:
    import onnx

__all__ = ["cached_fp16_onnx", "convert_onnx_file_fp16", "convert_to_fp16"]

logger = logging.getLogger(__name__)

# (op_type -> input positions whose type is fixed to float32 by the ONNX spec)
_FLOAT32_ONLY_INPUTS: dict[str, tuple[int, ...]] = {"Resize": (1, 2), "Upsample": (1,)}
_SUBGRAPH_OPS = {"If", "Loop", "Scan"}


def _to_fp16_tensor(tensor: onnx.TensorProto) -> onnx.TensorProto:
    import numpy as np
    from onnx import numpy_helper

    arr = numpy_helper.to_array(tensor)
    big = np.abs(arr[np.isfinite(arr)]).max(initial=0.0)
    if big > 65504.0:
        logger.warning("tensor %s has values up to %.3g, beyond float16; they saturate", tensor.name, big)
    out = numpy_helper.from_array(np.clip(arr, -65504.0, 65504.0).astype(np.float16), tensor.name)
    return out


def convert_to_fp16(model: onnx.ModelProto, *, keep_io_float32: bool = True) -> onnx.ModelProto:
    """Return an fp16 copy of ``model`` (see module docstring for what is converted)."""
    import onnx
    from onnx import TensorProto, helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    for node in g.node:
        if node.op_type in _SUBGRAPH_OPS:
            raise ModelMismatchError(f"fp16 conversion does not handle {node.op_type} subgraphs")

    for i, init in enumerate(g.initializer):
        if init.data_type == FLOAT:
            g.initializer[i].CopyFrom(_to_fp16_tensor(init))

    for node in g.node:
        for attr in node.attribute:
            if node.op_type in ("Constant", "ConstantOfShape") and attr.type == onnx.AttributeProto.TENSOR:
                if attr.t.data_type == FLOAT:
                    attr.t.CopyFrom(_to_fp16_tensor(attr.t))
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
                attr.i = HALF

    new_nodes: list[onnx.NodeProto] = []
    counter = 0
    for node in g.node:
        for pos in _FLOAT32_ONLY_INPUTS.get(node.op_type, ()):
            if pos < len(node.input) and node.input[pos]:
                counter += 1
                name = f"{node.input[pos]}__fp32_{counter}"
                new_nodes.append(helper.make_node("Cast", [node.input[pos]], [name], to=FLOAT))
                node.input[pos] = name
        new_nodes.append(node)

    init_names = {t.name for t in g.initializer}
    head: list[onnx.NodeProto] = []
    for inp in g.input:
        if inp.name in init_names or inp.type.tensor_type.elem_type != FLOAT:
            continue
        if keep_io_float32:
            inner = f"{inp.name}__fp16"
            for node in new_nodes:
                for k, name in enumerate(node.input):
                    if name == inp.name:
                        node.input[k] = inner
            head.append(helper.make_node("Cast", [inp.name], [inner], to=HALF))
        else:
            inp.type.tensor_type.elem_type = HALF

    tail: list[onnx.NodeProto] = []
    for out in g.output:
        if out.type.tensor_type.elem_type != FLOAT:
            continue
        inner = f"{out.name}__fp16"
        for node in new_nodes:
            for k, name in enumerate(node.output):
                if name == out.name:
                    node.output[k] = inner
            for k, name in enumerate(node.input):
                if name == out.name:
                    node.input[k] = inner
        tail.append(helper.make_node("Cast", [inner], [out.name], to=FLOAT))

    del g.node[:]
    g.node.extend(head + new_nodes + tail)
    del g.value_info[:]
    m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
    onnx.checker.check_model(m)
    return m


def convert_onnx_file_fp16(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, keep_io_float32: bool = True
) -> Path:
    """Convert the ONNX file ``src`` to fp16 and write it atomically to ``dst``."""
    import onnx

    from virtime.io import atomic_path

    dst = Path(dst)
    converted = convert_to_fp16(onnx.load(str(src)), keep_io_float32=keep_io_float32)
    with atomic_path(dst, mode=0o644) as tmp:  # 0o644: a cache folder is often shared
        onnx.save(converted, str(tmp))
    return dst


def cached_fp16_onnx(src: str | os.PathLike[str], cache_dir: str | os.PathLike[str]) -> Path:
    """The fp16 conversion of the ONNX file ``src``, kept in ``cache_dir/onnx`` and verified.

    The entry's sidecar records the sha256 of the source graph it was converted from and of its
    own bytes; a truncated, altered or unvouched entry is converted again with a warning (see
    :func:`virtime.engines.engine_cache.cached_file`), so a damaged cache never crashes a run.
    """
    from virtime.engines.engine_cache import cached_file
    from virtime.engines.hashing import file_sha256

    digest = file_sha256(src)
    dst = Path(cache_dir) / "onnx" / f"{digest[:16]}-fp16.onnx"
    return cached_file(
        dst, {"source_sha256": digest, "keep_io_float32": True},
        lambda tmp: convert_onnx_file_fp16(src, tmp),
        kind="fp16 ONNX conversion",
    )
