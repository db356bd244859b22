"""Deployment exports of a compressed model: ONNX (dense or palettized)."""

from rlcompress.deploy.onnx_export import (
    export_onnx,
    index_bits,
    onnx_session,
    pack_indices,
    palettize_graph,
    run_onnx,
)

__all__ = ["export_onnx", "index_bits", "onnx_session", "pack_indices", "palettize_graph", "run_onnx"]
