"""Core ML export of a decoded ``.rlc`` model: an ML program whose shared layers are look-up
tables holding exactly the ``.rlc``'s centroids.

The decoded network (weights exactly ``codebook[indices]``) is traced and converted to an ML
program in fp32, then every conv and linear weight is palettized with a custom LUT function that
returns the weight's own distinct values as the table (so no value is re-estimated or rounded)
and each weight's position in it. Core ML tables hold 2, 4, 8, 16, 64 or 256 entries (1, 2, 3,
4, 6 or 8 bits; 3 bits needs iOS 18 / macOS 15): a layer with k between those sizes is stored
at the next size up, its extra entries unused, and the report says so; a layer with more than
256 distinct values cannot be palettized and is an error. Pruned positions are one more
distinct value (0) when 0 is not a centroid.

coremltools converts and saves on Linux but cannot run a model there, so the export is verified
by reading the saved program back and checking that every table and index tensor reproduces the
``.rlc``'s weights bit for bit. ``coremltools`` is the ``[coreml]`` extra.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlcompress.clustering.sharing import shared_layers, unshare
from rlcompress.deploy.onnx_export import require

LUT_BITS = (1, 2, 3, 4, 6, 8)


def lut_bits(distinct: int) -> int:
    """Bits of the smallest Core ML look-up table with at least ``distinct`` entries."""
    for bits in LUT_BITS:
        if 2**bits >= distinct:
            return bits
    raise ValueError(f"{distinct} distinct values: Core ML look-up tables hold at most 256")


def exact_lut(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A look-up table of ``weight``'s distinct values (padded to a Core ML size by repeating
    the last one) and each element's index in it."""
    flat = np.asarray(weight).reshape(-1)
    values = np.unique(flat)
    size = 2 ** lut_bits(len(values))
    lut = np.concatenate([values, np.full(size - len(values), values[-1], dtype=values.dtype)])
    return lut, np.searchsorted(values, flat).astype(np.uint8)


def _convert(net: nn.Module, input_shape: tuple[int, ...], ct: object) -> object:
    traced = torch.jit.trace(net, torch.zeros(1, *input_shape))
    batch = ct.RangeDim(lower_bound=1, upper_bound=4096, default=1)
    # folding batch norm (or a scale) into a conv's weights would rescale every output channel
    # and destroy the shared values: those passes are removed
    pipeline = ct.PassPipeline.DEFAULT
    pipeline.remove_passes([p for p in pipeline.passes if p.startswith("common::fuse_conv_")
                            or p == "common::fuse_linear_bias"])
    return ct.convert(traced, inputs=[ct.TensorType(name="input", shape=(batch, *input_shape))],
                      outputs=[ct.TensorType(name="logits")], convert_to="mlprogram",
                      compute_precision=ct.precision.FLOAT32, pass_pipeline=pipeline,
                      minimum_deployment_target=ct.target.iOS18)


def export_coreml(model: nn.Module, path: str | Path, input_shape: tuple[int, ...]) -> dict:
    """Write ``model`` (a decoded ``.rlc`` model) as a Core ML ``.mlpackage`` with its shared
    layers palettized to exactly their codebooks; verify it; return sizes and per-layer bits."""
    ct = require("coremltools", "coreml")
    from coremltools.optimize.coreml import (
        OpPalettizerConfig,
        OptimizationConfig,
        palettize_weights,
    )

    net = copy.deepcopy(model).float().eval().to(memory_format=torch.contiguous_format)
    expected = {n: m.weight.detach().numpy().copy() for n, m in shared_layers(net).items()}
    if not expected:
        raise ValueError("a Core ML palettized export needs a weight-shared model (an .rlc file)")
    layers = {n: int(len(np.unique(w))) for n, w in expected.items()}
    too_big = {n: k for n, k in layers.items() if k > 256}
    if too_big:
        raise ValueError(f"Core ML look-up tables hold at most 256 entries; these layers have "
                         f"more distinct values: {too_big}")
    unshare(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("coremltools").setLevel(logging.ERROR)
        mlmodel = _convert(net, input_shape, ct)
        cfg = OpPalettizerConfig(mode="custom", lut_function=exact_lut, weight_threshold=1)
        mlmodel = palettize_weights(mlmodel, OptimizationConfig(
            op_type_configs={"conv": cfg, "linear": cfg}))
    path = Path(path)
    mlmodel.save(str(path))
    matched = verify_coreml(path, expected)
    return {
        "file": str(path), "bytes": sum(f.stat().st_size for f in path.rglob("*") if f.is_file()),
        "layers": {n: {"distinct": k, "lut_bits": lut_bits(k),
                       "padded": 2 ** lut_bits(k) != k} for n, k in layers.items()},
        "verified_layers": matched,
    }


def read_luts(path: str | Path) -> list[np.ndarray]:
    """The dense weight each ``constexpr_lut_to_dense`` op of a saved ML program computes."""
    ct = require("coremltools", "coreml")
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    saved = ct.models.MLModel(str(path), skip_model_load=True)
    spec = saved.get_spec()
    prog = milproto_load(model_spec=spec, specification_version=spec.specificationVersion,
                         file_weights_dir=saved.weights_dir)
    dense = []
    for function in prog.functions.values():
        for op in function.operations:
            if op.op_type == "constexpr_lut_to_dense":
                lut, idx = op.inputs["lut"].val, op.inputs["indices"].val
                if lut.size != lut.shape[-2] * lut.shape[-1] or lut.shape[-1] != 1:
                    raise ValueError(f"{op.name}: grouped or vector tables are not produced here")
                dense.append(lut.reshape(-1)[idx.astype(np.int64)])
    return dense


def verify_coreml(path: str | Path, expected: dict[str, np.ndarray]) -> int:
    """Check that every expected weight is reproduced bit for bit by exactly one look-up table
    of the saved program; returns how many were; raises ``ValueError`` otherwise."""
    dense = read_luts(path)
    used: set[int] = set()
    for name, weight in expected.items():
        hits = [i for i, d in enumerate(dense) if i not in used and d.shape == weight.shape
                and d.dtype == weight.dtype and np.array_equal(d, weight)]
        if not hits:
            raise ValueError(f"{path}: no look-up table reproduces layer {name} exactly")
        used.add(hits[0])
    return len(used)
