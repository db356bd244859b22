"""The ``.rlc`` compressed model file.

An ``.rlc`` file is a standard safetensors file (no pickles, memory-safe parsing) whose
metadata holds a JSON manifest. Per shared layer it stores:

* its cluster indices of the surviving weights, packed at ceil(log2 k) bits (``packed``) or
  ANS entropy-coded (``ans``), whichever is smaller, in the ``idx`` tensor;
* its codebook (float32, or float16 with ``codebook_dtype="float16"``) in ``book``;
* symbol counts (uint32) in ``freq``, for ``ans`` layers only;
* one bit per output filter in ``idx``, only when filters were pruned by masking.

Every other tensor of the state_dict (batch norm, biases, layers left unshared) is appended to
an ``f:<dtype>`` tensor. Per-layer payloads live at [offset, length] spans of these few
tensors, because a separate safetensors entry per parameter costs header bytes that matter in
a file of a few hundred KB. The manifest records the format version, the architecture spec
(which also carries the physical pruning structure), per-layer shape, k, bits, encoding and a
CRC-32 of every layer's payload and of every float tensor; the manifest itself carries a
SHA-256. Any damage is reported as :class:`CodecError`.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save
from torch import nn

from rlcompress.clustering.sharing import is_shared, prepare_shared, shared_layers
from rlcompress.codec.bits import ans_decode, ans_encode, bits_for, entropy_bits, pack, unpack
from rlcompress.fileio import write_bytes

FORMAT = "rlcompress"
VERSION = 1
ENCODINGS = ("auto", "packed", "ans")


class CodecError(ValueError):
    """Raised for a truncated, corrupted, unknown-version or inconsistent ``.rlc`` file."""


def _crc(*parts: np.ndarray) -> str:
    crc = 0
    for p in parts:
        crc = zlib.crc32(np.ascontiguousarray(p).tobytes(), crc)
    return f"{crc:08x}"


def _filter_keep(indices: np.ndarray, k: int, name: str) -> np.ndarray:
    flat = indices.reshape(indices.shape[0], -1)
    dead = flat == k
    if not np.all(dead.all(1) | (~dead).all(1)):
        raise CodecError(f"{name}: pruned positions do not form whole filters")
    return ~dead.all(1)


class _Blob:
    """Appends arrays of one dtype into a single tensor; returns [offset, length] spans."""

    def __init__(self, dtype: str) -> None:
        self.dtype, self.parts, self.size = dtype, [], 0

    def add(self, a: np.ndarray) -> list[int]:
        a = np.ascontiguousarray(a, dtype=self.dtype).ravel()
        self.parts.append(a)
        self.size += a.size
        return [self.size - a.size, a.size]

    def array(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, self.dtype)


def _encode_layer(name: str, module: nn.Module, encoding: str, blobs: dict[str, _Blob]) -> dict:
    book = module.codebook.detach().cpu().float().numpy().astype(blobs["book"].dtype)
    k = len(book)
    indices = module.indices.cpu().numpy()
    keep = _filter_keep(indices, k, name)
    symbols = indices[keep].ravel()
    bits = bits_for(k)
    payload, counts, chosen = pack(symbols, bits), None, "packed"
    if encoding in ("auto", "ans"):
        ans, freq = ans_encode(symbols, k)
        if encoding == "ans" or ans.nbytes + freq.nbytes < payload.nbytes:
            payload, counts, chosen = ans, freq, "ans"
    keep_bits = np.packbits(keep.astype(np.uint8)) if not keep.all() else None
    entry = {
        "name": name, "shape": list(indices.shape), "k": k, "bits": bits, "encoding": chosen,
        "count": int(symbols.size), "filters_kept": int(keep.sum()),
        "entropy": round(entropy_bits(symbols, k), 4),
        "idx": blobs["idx"].add(payload), "book": blobs["book"].add(book),
        "keep": blobs["idx"].add(keep_bits) if keep_bits is not None else None,
        "freq": blobs["freq"].add(counts) if counts is not None else None,
        "crc": _crc(payload, book, *(a for a in (keep_bits, counts) if a is not None)),
    }
    entry["bytes"] = int(payload.nbytes + book.nbytes + (keep_bits.nbytes if keep_bits is not None
                         else 0) + (counts.nbytes if counts is not None else 0))
    return entry


def save_compressed(
    model: nn.Module,
    spec: dict,
    path: str | Path,
    encoding: str = "auto",
    codebook_dtype: str = "float32",
    extra: dict | None = None,
) -> dict:
    """Write ``model`` (with shared layers) and its architecture ``spec`` to an ``.rlc`` file.

    Returns the manifest. ``extra`` is stored in the manifest as is (e.g. accuracy, policy).
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if codebook_dtype not in ("float32", "float16"):
        raise ValueError("codebook_dtype must be float32 or float16")
    # a handful of concatenated tensors instead of one per parameter: each safetensors entry
    # and checksum costs header bytes, which matter in a file of a few hundred KB
    blobs = {"idx": _Blob("uint8"), "book": _Blob(codebook_dtype), "freq": _Blob("uint32")}
    layers = [_encode_layer(n, m, encoding, blobs) for n, m in shared_layers(model).items()]
    shared = {e["name"] for e in layers}
    floats = []
    for key, value in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if (owner in shared and leaf in ("codebook", "indices")) or key.endswith(
                "num_batches_tracked"):  # the latter is training bookkeeping only
            continue
        arr = value.detach().cpu().contiguous().numpy()
        blob = blobs.setdefault(f"f:{arr.dtype}", _Blob(str(arr.dtype)))
        floats.append([key, list(arr.shape), str(arr.dtype), *blob.add(arr)])
    tensors = {n: b.array() for n, b in blobs.items()}
    manifest = {
        "format": FORMAT, "version": VERSION, "spec": spec, "layers": layers, "floats": floats,
        "crc": {n: _crc(t) for n, t in tensors.items() if n.startswith("f:")},
        "extra": extra or {},
    }
    text = json.dumps(manifest, separators=(",", ":"))
    meta = {"rlcompress": text, "rlcompress.sha256": hashlib.sha256(text.encode()).hexdigest()}
    blob = st_save(tensors, metadata=meta)
    write_bytes(path, blob)
    return manifest


def read_manifest(data: bytes) -> dict:
    """Parse and verify the manifest of an ``.rlc`` file's bytes."""
    if len(data) < 8:
        raise CodecError("file is too short to be an .rlc file")
    (hlen,) = struct.unpack("<Q", data[:8])
    if hlen > len(data) - 8:
        raise CodecError("file is truncated (header runs past the end)")
    try:
        header = json.loads(data[8 : 8 + hlen])
        meta = header["__metadata__"]
        text = meta["rlcompress"]
        digest = meta.get("rlcompress.sha256")
        ok = hashlib.sha256(text.encode()).hexdigest() == digest
        manifest = json.loads(text) if ok else None
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeError) as exc:
        raise CodecError(f"not an .rlc file or header corrupted ({exc.__class__.__name__})") from exc
    if not ok:
        raise CodecError("manifest checksum mismatch: the file is corrupted")
    if not isinstance(manifest, dict):
        raise CodecError("manifest is not a JSON object")
    if manifest.get("format") != FORMAT:
        raise CodecError(f"not an rlcompress file (format {manifest.get('format')!r})")
    if manifest.get("version") != VERSION:
        raise CodecError(
            f"unsupported .rlc format version {manifest.get('version')!r} (this build reads {VERSION})"
        )
    return manifest


def _read(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    data = Path(path).read_bytes()
    manifest = read_manifest(data)
    try:
        tensors = st_load(data)
    except Exception as exc:  # safetensors raises its own error type and others on damage
        raise CodecError(f"tensor data unreadable: file truncated or corrupted ({exc})") from exc
    for name, crc in manifest.get("crc", {}).items():
        if name not in tensors or _crc(tensors[name]) != crc:
            raise CodecError(f"checksum mismatch in payload {name!r}: the file is corrupted")
    return manifest, tensors


def _span(tensors: dict[str, np.ndarray], blob: str, span: list[int] | None) -> np.ndarray | None:
    if span is None:
        return None
    off, n = span
    arr = tensors[blob]
    if off < 0 or n < 0 or off + n > arr.size:
        raise CodecError(f"payload span [{off}, {off + n}) outside the {blob!r} data")
    return arr[off : off + n]


def _decode_layer(entry: dict, tensors: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    name, k, count = entry["name"], entry["k"], entry["count"]
    payload, book = _span(tensors, "idx", entry["idx"]), _span(tensors, "book", entry["book"])
    keep_bits, counts = _span(tensors, "idx", entry["keep"]), _span(tensors, "freq", entry["freq"])
    if _crc(payload, book, *(a for a in (keep_bits, counts) if a is not None)) != entry["crc"]:
        raise CodecError(f"checksum mismatch in layer {name!r}: the file is corrupted")
    if len(book) != k or entry["bits"] != bits_for(k):
        raise CodecError(f"{name}: codebook size / bit width inconsistent with the manifest")
    if entry["encoding"] == "packed":
        symbols = unpack(payload, entry["bits"], count)
    elif entry["encoding"] == "ans":
        symbols = ans_decode(payload, counts, count)
    else:
        raise CodecError(f"{name}: unknown encoding {entry['encoding']!r}")
    if symbols.size and (symbols.min() < 0 or symbols.max() >= k):
        raise CodecError(f"{name}: index out of codebook range")
    shape = tuple(entry["shape"])
    keep = np.ones(shape[0], dtype=bool)
    if keep_bits is not None:
        keep = np.unpackbits(keep_bits)[: shape[0]].astype(bool)
    per_filter = int(np.prod(shape[1:]))
    if int(keep.sum()) * per_filter != count:
        raise CodecError(f"{name}: index count does not match the kept filters")
    indices = np.full(shape, k, dtype=np.int64)
    indices[keep] = symbols.reshape(-1, *shape[1:])
    return torch.from_numpy(book.astype(np.float32)), torch.from_numpy(indices)


def load_compressed(path: str | Path, model: nn.Module | None = None) -> tuple[nn.Module, dict]:
    """Decode an ``.rlc`` file into a model whose shared layers hold its codebooks and indices.

    ``model`` is needed only for architectures the registry cannot build from the spec (a
    user's own network): pass a freshly built instance and it is resized and filled.
    """
    from rlcompress.models import build_model
    from rlcompress.pruning.physical import apply_layer_shapes

    manifest, tensors = _read(path)
    try:
        spec = manifest["spec"]
        if model is None:
            model = build_model(spec)
        elif "shapes" in spec:
            apply_layer_shapes(model, spec["shapes"])
        layout = {e["name"]: e["k"] for e in manifest["layers"]}
        prepare_shared(model, layout)
        modules = dict(model.named_modules())
        state = {}
        for entry in manifest["layers"]:
            book, indices = _decode_layer(entry, tensors)
            if tuple(modules[entry["name"]].indices.shape) != tuple(indices.shape):
                raise CodecError(f"{entry['name']}: shape does not match the architecture")
            state[f"{entry['name']}.codebook"] = book
            state[f"{entry['name']}.indices"] = indices
        for key, shape, dtype, off, n in manifest["floats"]:
            arr = _span(tensors, f"f:{dtype}", [off, n])
            state[key] = torch.from_numpy(arr.reshape(shape).copy())
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [m for m in missing if not m.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise CodecError(f"file does not match the model: missing={missing[:5]} "
                             f"unexpected={unexpected[:5]}")
    except CodecError:
        raise
    except Exception as exc:  # any inconsistency a damaged-but-checksummed file could carry
        raise CodecError(f"cannot rebuild the model from the file ({exc})") from exc
    return model.eval(), manifest


def inspect_file(path: str | Path) -> dict:
    """Per-layer table and totals of an ``.rlc`` file (reads and verifies it)."""
    manifest, tensors = _read(path)
    floats = sum(t.nbytes for n, t in tensors.items() if n.startswith("f:"))
    rows = [{k: e[k] for k in ("name", "shape", "k", "bits", "encoding", "count", "entropy",
                               "bytes")} for e in manifest["layers"]]
    for r in rows:
        r["bits_per_weight"] = round(8 * r["bytes"] / max(r["count"], 1), 3)
    return {
        "file": str(path), "file_bytes": Path(path).stat().st_size, "layers": rows,
        "index_and_codebook_bytes": sum(r["bytes"] for r in rows), "float_bytes": int(floats),
        "weights": sum(r["count"] for r in rows), "extra": manifest.get("extra", {}),
    }


def is_shared_model(model: nn.Module) -> bool:
    """True if any layer of ``model`` is shared."""
    return any(is_shared(m) for m in model.modules())
