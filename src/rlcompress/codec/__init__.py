"""The compressed model file (``.rlc``): packed or entropy-coded indices plus codebooks."""

from rlcompress.codec.bits import ans_decode, ans_encode, bits_for, entropy_bits, pack, unpack
from rlcompress.codec.format import (
    FORMAT,
    VERSION,
    CodecError,
    inspect_file,
    load_compressed,
    save_compressed,
)
from rlcompress.codec.sizes import (
    float_state_bytes,
    layer_weight_count,
    model_layer_bits,
    paper_ratio,
    reference_sizes,
    size_report,
)

__all__ = [
    "FORMAT",
    "VERSION",
    "CodecError",
    "ans_decode",
    "ans_encode",
    "bits_for",
    "entropy_bits",
    "float_state_bytes",
    "inspect_file",
    "layer_weight_count",
    "load_compressed",
    "model_layer_bits",
    "pack",
    "paper_ratio",
    "reference_sizes",
    "save_compressed",
    "size_report",
    "unpack",
]
