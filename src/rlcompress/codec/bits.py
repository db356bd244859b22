"""Index payloads: fixed-width bit packing and ANS entropy coding.

Bit packing is written here with NumPy (a few vectorised lines; no maintained library packs
arbitrary 1..16-bit widths). Entropy coding uses ``constriction``'s ANS coder, which reaches
the empirical entropy to within a fraction of a percent (REFERENCES.md).
"""

from __future__ import annotations

import numpy as np


def bits_for(alphabet: int) -> int:
    """Bits per index for an alphabet of ``alphabet`` symbols (at least 1)."""
    return max(1, int(np.ceil(np.log2(max(alphabet, 2)))))


def pack(indices: np.ndarray, bits: int) -> np.ndarray:
    """Pack non-negative integers below 2**bits into a uint8 array, MSB first."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in [1, 16], got {bits}")
    idx = np.asarray(indices, dtype=np.uint32).ravel()
    if idx.size and int(idx.max()) >= 1 << bits:
        raise ValueError(f"index {int(idx.max())} does not fit in {bits} bits")
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint32)
    return np.packbits(((idx[:, None] >> shifts) & 1).astype(np.uint8).ravel())


def unpack(data: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack`: ``count`` integers of ``bits`` bits each."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in [1, 16], got {bits}")
    need = (count * bits + 7) // 8
    data = np.asarray(data, dtype=np.uint8)
    if data.size != need:
        raise ValueError(f"packed payload has {data.size} bytes, expected {need}")
    flat = np.unpackbits(data)[: count * bits].reshape(count, bits).astype(np.int64)
    return flat @ (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))


def _model(counts: np.ndarray):  # noqa: ANN202 - constriction model object
    import constriction

    counts = np.asarray(counts, dtype=np.float64)
    # probabilities are rebuilt from stored integer counts, so encoder and decoder agree exactly
    return constriction.stream.model.Categorical(counts / counts.sum(), perfect=False)


def ans_encode(indices: np.ndarray, alphabet: int) -> tuple[np.ndarray, np.ndarray]:
    """Entropy-code indices; returns (payload as uint8, symbol counts as uint32)."""
    import constriction

    idx = np.asarray(indices, dtype=np.int32).ravel()
    # constriction needs at least two symbols in a model, even for a one-entry codebook
    counts = np.bincount(idx, minlength=max(alphabet, 2)).astype(np.uint32)
    coder = constriction.stream.stack.AnsCoder()
    if idx.size:
        coder.encode_reverse(idx, _model(counts))
    words = coder.get_compressed().astype("<u4")
    return words.view(np.uint8).copy(), counts


def ans_decode(payload: np.ndarray, counts: np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`ans_encode`."""
    import constriction

    payload = np.asarray(payload, dtype=np.uint8)
    if payload.size % 4:
        raise ValueError("ANS payload is not a whole number of 32-bit words")
    if int(np.asarray(counts, dtype=np.int64).sum()) != count:
        raise ValueError("ANS symbol counts do not add up to the index count")
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    coder = constriction.stream.stack.AnsCoder(payload.view("<u4").astype(np.uint32))
    out = np.asarray(coder.decode(_model(counts), count), dtype=np.int64)
    if not coder.is_empty():
        raise ValueError("ANS payload has trailing data")
    return out


def entropy_bits(indices: np.ndarray, alphabet: int) -> float:
    """Empirical entropy of the indices in bits per symbol."""
    counts = np.bincount(np.asarray(indices, dtype=np.int64).ravel(), minlength=alphabet)
    p = counts[counts > 0] / max(counts.sum(), 1)
    return float(-(p * np.log2(p)).sum())
