"""ONNX export of a decoded ``.rlc`` model: dense float weights, or a palettized graph.

The palettized graph keeps every shared layer as its codebook (a float constant) and its
indices at ceil(log2 k) bits each, packed ``64 // bits`` to a uint64 word (no index straddles
two words, so 3-bit indices waste 1 bit in 64 and 11-bit ones 9), and computes the weight inside
the graph: BitShift and BitwiseAnd unpack the indices, Gather looks them up, Reshape restores
the weight's shape. ONNX has no integer type narrower than 8 bits that onnxruntime computes
with, and Gather takes only int32/int64 indices, so words of packed indices plus a Cast are the
narrowest storage that runs. The dense graph is the same network with plain float weights.

Both are produced with PyTorch's TorchScript-based exporter (``dynamo=False``: the dynamo
exporter needs ``onnxscript``) with a dynamic batch dimension, and checked with
``onnx.checker``. ``onnx`` and ``onnxruntime`` are the ``[onnx]`` extra.
"""

from __future__ import annotations

import copy
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlcompress.clustering.sharing import shared_layers, unshare
from rlcompress.fileio import atomic_path

OPSET = 18  # BitwiseAnd needs 18


def require(module: str, extra: str) -> object:
    """Import an optional dependency or fail with the pip command that installs it."""
    try:
        return __import__(module)
    except ImportError as exc:
        raise ImportError(f"{module} is needed for this export: pip install 'rlcompress[{extra}]'") from exc


def index_bits(count: int) -> int:
    """Bits per stored index for ``count`` codebook entries (1 to 16)."""
    return max(1, math.ceil(math.log2(max(count, 2))))


def pack_indices(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack non-negative integers below ``2**bits`` into uint64 words: element i goes to word
    i // (64 // bits) at bit offset (i mod (64 // bits)) * bits."""
    flat = np.asarray(values, dtype=np.uint64).ravel()
    per = 64 // bits
    padded = np.zeros(math.ceil(len(flat) / per) * per, dtype=np.uint64)
    padded[: len(flat)] = flat
    shifts = np.arange(per, dtype=np.uint64) * np.uint64(bits)
    return np.bitwise_or.reduce(padded.reshape(-1, per) << shifts, axis=1)


def _unpack_nodes(onnx: object, name: str, packed: np.ndarray, bits: int, shape: tuple,
                  count: int) -> tuple[list, list]:
    """Nodes and initializers computing int64 tensor ``name`` of ``shape`` from ``packed``."""
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    p = f"{name}__packed"
    inits = [numpy_helper.from_array(packed, p),
             numpy_helper.from_array(np.asarray(shape, dtype=np.int64), f"{name}__shape")]
    per = 64 // bits
    inits += [numpy_helper.from_array(np.arange(per, dtype=np.uint64) * np.uint64(bits), f"{name}__shifts"),
              numpy_helper.from_array(np.array([(1 << bits) - 1], dtype=np.uint64), f"{name}__mask"),
              numpy_helper.from_array(np.array([1], dtype=np.int64), f"{name}__axis"),
              numpy_helper.from_array(np.array([-1], dtype=np.int64), f"{name}__flat"),
              numpy_helper.from_array(np.array([0], dtype=np.int64), f"{name}__start"),
              numpy_helper.from_array(np.array([count], dtype=np.int64), f"{name}__count")]
    nodes = [
        helper.make_node("Unsqueeze", [p, f"{name}__axis"], [f"{name}__col"]),
        helper.make_node("BitShift", [f"{name}__col", f"{name}__shifts"], [f"{name}__sh"],
                         direction="RIGHT"),
        helper.make_node("BitwiseAnd", [f"{name}__sh", f"{name}__mask"], [f"{name}__lanes"]),
        helper.make_node("Reshape", [f"{name}__lanes", f"{name}__flat"], [f"{name}__all"]),
        helper.make_node("Slice", [f"{name}__all", f"{name}__start", f"{name}__count"],
                         [f"{name}__small"]),
        helper.make_node("Cast", [f"{name}__small"], [f"{name}__i64"], to=onnx.TensorProto.INT64),
        helper.make_node("Reshape", [f"{name}__i64", f"{name}__shape"], [name]),
    ]
    return nodes, inits


def palettize_graph(model_proto: object, onnx: object) -> dict[str, int]:
    """Replace every int64 ``*.indices`` initializer by bit-packed indices and the nodes that
    unpack them (in place); returns bits per layer."""
    graph = model_proto.graph
    found = {}
    new_nodes, keep_inits = [], []
    for init in graph.initializer:
        if not init.name.endswith(".indices") or init.data_type != onnx.TensorProto.INT64:
            keep_inits.append(init)
            continue
        values = onnx.numpy_helper.to_array(init)
        bits = index_bits(int(values.max()) + 1)
        nodes, inits = _unpack_nodes(onnx, init.name, pack_indices(values, bits), bits,
                                     tuple(values.shape), values.size)
        new_nodes += nodes
        keep_inits += inits
        found[init.name.removesuffix(".indices")] = bits
    del graph.initializer[:]
    graph.initializer.extend(keep_inits)
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes + old)  # the unpacking depends on constants only: it goes first
    return found


def compact_names(graph: object) -> None:
    """Short names for every tensor but the graph's inputs and outputs, no node names or doc
    strings (in place): the exporter's path-like names (``/layer3/layer3.2/shortcut/Where_
    output_0``) took more bytes than a 2-bit ResNet-20's weights."""
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if name == "" or name in keep:
            return name
        return names.setdefault(name, format(len(names), "x"))

    for init in graph.initializer:
        init.name = short(init.name)
    for node in graph.node:
        node.name, node.doc_string = "", ""
        node.input[:] = [short(n) for n in node.input]
        node.output[:] = [short(n) for n in node.output]
    del graph.value_info[:]


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, ...],
                palettized: bool = True) -> dict:
    """Write ``model`` (a decoded ``.rlc`` model) as ONNX with a dynamic batch dimension.

    ``palettized``: shared layers stay codebook + packed indices inside the graph; otherwise
    every weight is a dense float tensor. Returns the file size and the bits of each layer.
    """
    onnx = require("onnx", "onnx")
    net = copy.deepcopy(model).float().eval().to(memory_format=torch.contiguous_format)
    if not palettized:
        unshare(net)
    elif not shared_layers(net):
        raise ValueError("a palettized export needs a weight-shared model (an .rlc file)")
    example = torch.zeros(1, *input_shape)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(net, (example,), str(raw), dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        proto = onnx.load(str(raw))
    bits = palettize_graph(proto, onnx) if palettized else {}
    compact_names(proto.graph)
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(Path(path)) as tmp_path:
        onnx.save(proto, str(tmp_path))
    return {"file": str(path), "bytes": Path(path).stat().st_size,
            "variant": "palettized" if palettized else "dense", "index_bits": bits}


def onnx_session(path: str | Path, threads: int = 0) -> object:
    """An onnxruntime CPU inference session for ``path``."""
    ort = require("onnxruntime", "onnx")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(session: object, x: torch.Tensor) -> torch.Tensor:
    """Logits of an onnxruntime session for a float batch."""
    return torch.from_numpy(session.run(None, {"input": x.float().contiguous().numpy()})[0])
