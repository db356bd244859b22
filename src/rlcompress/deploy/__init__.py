"""Deployment exports of a compressed model: ONNX (dense or palettized) and Core ML."""

from rlcompress.deploy.coreml_export import exact_lut, export_coreml, lut_bits, verify_coreml
from rlcompress.deploy.onnx_export import (
    export_onnx,
    index_bits,
    onnx_session,
    pack_indices,
    palettize_graph,
    run_onnx,
)

__all__ = ["exact_lut", "export_coreml", "lut_bits", "verify_coreml", "export_onnx", "index_bits", "onnx_session", "pack_indices", "palettize_graph", "run_onnx"]
