"""The ``.rlc`` compressed model file.

An ``.rlc`` file is a standard safetensors file (no pickles, memory-safe parsing). Format
version 2 (written since 0.2) holds these 1-D tensors:

* ``idx`` (uint8): per shared layer, its cluster indices of the surviving weights, packed at
  ceil(log2 k) bits (``packed``) or ANS entropy-coded (``ans``), whichever is smaller, followed
  by one bit per output filter when filters were pruned by masking;
* ``book`` (float32, or float16 with ``codebook_dtype="float16"``): the codebooks, k per layer
  (or k per block of output channels for a grouped layer, whose indices are stored relative to
  their block's codebook);
* ``freq`` (uint32): symbol counts, max(k, 2) per ``ans`` layer;
* ``f:<dtype>``: every other tensor of the state_dict (batch norm, biases, unshared layers);
* ``m`` (uint8): the manifest, zlib-compressed compact JSON: architecture spec, codebook dtype,
  one record ``[name, k, encoding, count, index bytes, keep-bit bytes(, codebooks)]`` per shared
  layer (the 7th field only for grouped layers: files without it read as before) and
  ``[key, dtype]`` per float tensor. Offsets are implied by the order; shapes by the model.

The safetensors metadata holds the format name, the version and a SHA-256 over every tensor's
name, dtype, shape and bytes, so any edit (a byte of data, a dtype in the header) is caught.

The decoder validates before it allocates: the file must be a regular file under a size cap;
the manifest's decompressed size is capped; the spec is validated and the model's element
count bounded by the file's size (checked on a model built on the ``meta`` device); every
layer record is checked against the model's layer (k range, count, payload length, symbol
counts) and the spans must tile every tensor exactly; codebooks and floats must be finite and
indices within their codebook. Every failure is a :class:`CodecError` naming the file.
Version-1 files (JSON manifest in the metadata, explicit spans, CRC-32 checksums) are still
read, through the same validation.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save
from torch import nn

from rlcompress.clustering.sharing import (
    CLUSTERABLE,
    is_shared,
    prepare_shared,
    row_blocks,
    shared_layers,
)
from rlcompress.codec.bits import ans_decode, ans_encode, bits_for, entropy_bits, pack, unpack
from rlcompress.fileio import write_bytes

FORMAT = "rlcompress"
VERSION = 2
ENCODINGS = ("auto", "packed", "ans")
MAX_K = 1 << 16
MAX_FILE_BYTES = 1 << 30
MAX_MANIFEST_BYTES = 16 << 20
# A model may hold at most this many elements (parameters and buffers) per byte of its file,
# plus a floor for tiny files. Real files hold 2-10 (ResNet-20 at 1-4 bits per weight); the
# encoder refuses to write beyond it, so every file it writes can be read back.
ELEMENTS_PER_BYTE = 64
MIN_ELEMENTS = 1 << 20
# No trained network stores values this large; they would overflow float32 arithmetic.
MAX_ABS_VALUE = 1e12
FLOAT_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")


class CodecError(ValueError):
    """Raised for a truncated, corrupted, hostile, unknown-version or inconsistent ``.rlc`` file."""


def _crc(*parts: np.ndarray) -> str:
    crc = 0
    for p in parts:
        crc = zlib.crc32(np.ascontiguousarray(p).tobytes(), crc)
    return f"{crc:08x}"


def _digest(tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        arr = tensors[name]
        h.update(f"{name}|{arr.dtype.str}|{list(arr.shape)}|".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _filter_keep(indices: np.ndarray, k: int, name: str) -> np.ndarray:
    flat = indices.reshape(indices.shape[0], -1)
    dead = flat == k
    if not np.all(dead.all(1) | (~dead).all(1)):
        raise ValueError(f"{name}: pruned positions do not form whole filters")
    return ~dead.all(1)


class _Blob:
    """Appends arrays of one dtype into a single tensor."""

    def __init__(self, dtype: str) -> None:
        self.dtype, self.parts, self.size = dtype, [], 0

    def add(self, a: np.ndarray) -> int:
        a = np.ascontiguousarray(a, dtype=self.dtype).ravel()
        self.parts.append(a)
        self.size += a.size
        return int(a.size)

    def array(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, self.dtype)


def _block_offsets(rows: int, groups: int, k: int) -> np.ndarray:
    """Per output channel, the offset of its block's centroids in the flattened codebook."""
    offsets = np.zeros(rows, dtype=np.int64)
    for g, block in enumerate(row_blocks(rows, groups)):
        offsets[block] = g * k
    return offsets


def _encode_layer(name: str, module: nn.Module, encoding: str, blobs: dict[str, _Blob]) -> list:
    codebook = module.codebook.detach().cpu().float()
    groups, k = (1, len(codebook)) if codebook.dim() == 1 else tuple(codebook.shape)
    book = codebook.reshape(-1).numpy().astype(blobs["book"].dtype)
    if not np.isfinite(book).all():
        raise ValueError(f"{name}: codebook holds NaN or infinite values")
    if not 1 <= k <= MAX_K:
        raise ValueError(f"{name}: k={k} outside [1, {MAX_K}]")
    indices = module.indices.cpu().numpy()
    keep = _filter_keep(indices, groups * k, name)
    # a grouped layer stores each index relative to its block's codebook: log2(k) bits
    local = indices - _block_offsets(len(indices), groups, k).reshape(-1, *[1] * (indices.ndim - 1))
    symbols = local[keep].ravel()
    if symbols.size and (symbols.min() < 0 or symbols.max() >= k):
        raise ValueError(f"{name}: an index points outside its block's codebook")
    payload, counts, chosen = pack(symbols, bits_for(k)), None, "packed"
    if encoding in ("auto", "ans") and symbols.size:
        ans, freq = ans_encode(symbols, k)
        if encoding == "ans" or ans.nbytes + freq.nbytes < payload.nbytes:
            payload, counts, chosen = ans, freq, "ans"
    n_idx = blobs["idx"].add(payload)
    n_keep = blobs["idx"].add(np.packbits(keep.astype(np.uint8))) if not keep.all() else 0
    blobs["book"].add(book)
    if counts is not None:
        blobs["freq"].add(counts)
    record = [name, k, chosen, int(symbols.size), n_idx, n_keep]
    return record + [groups] if groups > 1 else record


def compactable_bn(model: nn.Module) -> dict[str, nn.Module]:
    """Batch norms whose inference is one scale and shift per channel (affine, with running
    statistics): what ``compact_bn`` stores as two values per channel instead of four."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine
            and m.track_running_stats and m.running_mean is not None}


@torch.no_grad()
def _bn_scale_shift(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    # the terms torch's inference kernel computes (alpha = weight / sqrt(var + eps), beta = bias
    # - mean * alpha), so a decoded layer with mean 0 and var + eps = 1 computes the same values
    invstd = 1 / torch.sqrt(bn.running_var.float() + bn.eps)
    scale = bn.weight.float() * invstd
    return scale, bn.bias.float() - bn.running_mean.float() * scale


def _state_floats(model: nn.Module, shared: set[str],
                  compact: dict[str, nn.Module] | None = None) -> list[tuple[str, torch.Tensor]]:
    compact = compact or {}
    folded = {}
    for name, bn in compact.items():
        folded[f"{name}.weight"], folded[f"{name}.bias"] = _bn_scale_shift(bn)
    out = []
    for key, value in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if (owner in shared and leaf in ("codebook", "indices")) or key.endswith(
                "num_batches_tracked"):  # the latter is training bookkeeping only
            continue
        if owner in compact and leaf in ("running_mean", "running_var"):
            continue  # implied: 0 and 1 - eps
        out.append((key, folded.get(key, value)))
    return out


def save_compressed(
    model: nn.Module,
    spec: dict,
    path: str | Path,
    encoding: str = "auto",
    codebook_dtype: str = "float32",
    extra: dict | None = None,
    compact_bn: bool = False,
) -> dict:
    """Write ``model`` (with shared layers) and its architecture ``spec`` to an ``.rlc`` file.

    Returns the manifest as :func:`load_compressed` reports it. ``extra`` is stored as is
    (e.g. accuracy, policy). With ``compact_bn`` every affine batch norm is stored as its
    inference scale and shift (2 values per channel instead of 4); the decoded layer has
    running mean 0 and variance 1 - eps and computes the same in evaluation, but its training
    statistics are gone: for deployment, not for further training.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if codebook_dtype not in ("float32", "float16"):
        raise ValueError("codebook_dtype must be float32 or float16")
    # a handful of concatenated tensors instead of one per parameter: each safetensors entry
    # costs header bytes, which matter in a file of a few hundred KB
    blobs = {"idx": _Blob("uint8"), "book": _Blob(codebook_dtype), "freq": _Blob("uint32")}
    layers = [_encode_layer(n, m, encoding, blobs) for n, m in shared_layers(model).items()]
    compact = compactable_bn(model) if compact_bn else {}
    floats = []
    for key, value in _state_floats(model, {r[0] for r in layers}, compact):
        arr = value.detach().cpu().contiguous().numpy()
        if str(arr.dtype) not in FLOAT_DTYPES:
            raise ValueError(f"{key}: dtype {arr.dtype} cannot be stored")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError(f"{key}: holds NaN or infinite values")
        blobs.setdefault(f"f:{arr.dtype}", _Blob(str(arr.dtype))).add(arr)
        floats.append([key, str(arr.dtype)])
    manifest = {"spec": spec, "book": codebook_dtype, "layers": layers, "floats": floats,
                "extra": extra or {}, **({"bn": sorted(compact)} if compact else {})}
    text = json.dumps(manifest, separators=(",", ":"), default=str).encode()
    tensors = {n: b.array() for n, b in blobs.items() if b.size}
    tensors["m"] = np.frombuffer(zlib.compress(text, 9), dtype=np.uint8)
    meta = {"format": FORMAT, "version": str(VERSION), "sha256": _digest(tensors)}
    blob = _canonical_header(st_save(tensors, metadata=meta))
    elements = sum(t.numel() for t in model.state_dict().values())
    if elements > _element_limit(len(blob)):
        raise ValueError(f"model has {elements} elements, more than a {len(blob)}-byte file may "
                         f"declare ({_element_limit(len(blob))}); the reader would refuse it")
    write_bytes(path, blob)
    return _report(manifest, model)


def _canonical_header(blob: bytes) -> bytes:
    """``blob`` with its metadata keys in sorted order. safetensors writes the metadata from a
    Rust hash map, whose order changes from process to process, so two runs that store the
    same tensors would otherwise write files that differ in their header bytes."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > n:  # never happens with the same keys and values; keep the original then
        return blob
    return blob[:8] + text.ljust(n, b" ") + blob[8 + n :]


# ------------------------------------------------------------------------------------ reading
@dataclass
class _Layer:
    name: str
    k: int
    encoding: str
    count: int
    idx: tuple[int, int]
    keep: tuple[int, int] | None
    book: tuple[int, int]
    freq: tuple[int, int] | None
    crc: str | None = None
    groups: int = 1


def _element_limit(file_bytes: int) -> int:
    return max(MIN_ELEMENTS, ELEMENTS_PER_BYTE * file_bytes)


def _read_file(path: Path, max_bytes: int) -> bytes:
    try:
        info = os.stat(path)
    except OSError as exc:
        raise CodecError(f"cannot open ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise CodecError("not a regular file")
    if info.st_size > max_bytes:
        raise CodecError(f"file of {info.st_size} bytes exceeds the {max_bytes}-byte limit")
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise CodecError(f"file grew past the {max_bytes}-byte limit while being read")
    return data


def _json(text: bytes | str, what: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, UnicodeError, RecursionError) as exc:
        raise CodecError(f"{what} is not valid JSON ({exc.__class__.__name__})") from exc


def _is_int(v: object, lo: int = 0, hi: int = 1 << 62) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _parse(data: bytes) -> tuple[dict, dict[str, np.ndarray], dict]:
    """Header metadata, tensors and raw manifest of a file's bytes (integrity checked)."""
    if len(data) < 8:
        raise CodecError("file is too short to be an .rlc file")
    (hlen,) = struct.unpack("<Q", data[:8])
    if hlen > len(data) - 8:
        raise CodecError("not an .rlc file, or truncated (header runs past the end)")
    header = _json(data[8 : 8 + hlen], "not an .rlc file: header")
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        raise CodecError("not an .rlc file (no rlcompress metadata)")
    if "rlcompress" in meta:  # version 1: the JSON manifest itself in the metadata
        return _parse_v1(data, meta)
    if meta.get("format") != FORMAT:
        raise CodecError("not an .rlc file (no rlcompress metadata)")
    if meta.get("version") != str(VERSION):
        raise CodecError(f"unsupported .rlc format version {meta.get('version')!r} "
                         f"(this build reads 1 and {VERSION})")
    tensors = _load_tensors(data)
    if _digest(tensors) != meta.get("sha256"):
        raise CodecError("checksum mismatch: the file is corrupted")
    if "m" not in tensors or tensors["m"].dtype != np.uint8:
        raise CodecError("manifest tensor missing")
    z = zlib.decompressobj()
    try:
        text = z.decompress(tensors["m"].tobytes(), MAX_MANIFEST_BYTES)
    except zlib.error as exc:
        raise CodecError(f"manifest cannot be decompressed ({exc})") from exc
    if z.unconsumed_tail or not z.eof:
        raise CodecError(f"manifest is incomplete or larger than {MAX_MANIFEST_BYTES} bytes")
    manifest = _json(text, "manifest")
    if not isinstance(manifest, dict):
        raise CodecError("manifest is not a JSON object")
    return {"version": VERSION}, tensors, manifest


def _load_tensors(data: bytes) -> dict[str, np.ndarray]:
    try:
        return st_load(data)
    except BaseException as exc:  # noqa: BLE001 - Rust panics surface as BaseException
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise CodecError(f"tensor data unreadable: file truncated or corrupted "
                         f"({exc.__class__.__name__})") from exc


def _parse_v1(data: bytes, meta: dict) -> tuple[dict, dict[str, np.ndarray], dict]:
    text = meta["rlcompress"]
    if not isinstance(text, str) or hashlib.sha256(text.encode()).hexdigest() != meta.get(
            "rlcompress.sha256"):
        raise CodecError("manifest checksum mismatch: the file is corrupted")
    manifest = _json(text, "manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CodecError("not an .rlc file (format field missing)")
    if manifest.get("version") != 1:
        raise CodecError(f"unsupported .rlc format version {manifest.get('version')!r} "
                         f"(this build reads 1 and {VERSION})")
    tensors = _load_tensors(data)
    crcs = manifest.get("crc", {})
    if not isinstance(crcs, dict):
        raise CodecError("manifest crc field is not an object")
    for name, crc in crcs.items():
        if name not in tensors or _crc(tensors[name]) != crc:
            raise CodecError(f"checksum mismatch in payload {name!r}: the file is corrupted")
    return {"version": 1}, tensors, manifest


def _v2_layers(raw: object) -> list[_Layer]:
    if not isinstance(raw, list):
        raise CodecError("manifest layers must be a list")
    out, idx, book, freq = [], 0, 0, 0
    for rec in raw:
        # 6 fields; a 7th is the number of codebooks of a grouped layer (one per channel block)
        if not (isinstance(rec, list) and len(rec) in (6, 7) and isinstance(rec[0], str)
                and _is_int(rec[1], 1, MAX_K) and rec[2] in ("packed", "ans")
                and all(_is_int(v) for v in rec[3:6])
                and (len(rec) == 6 or _is_int(rec[6], 2, MAX_K))):
            raise CodecError(f"bad layer record {str(rec)[:80]}")
        name, k, enc, count, n_idx, n_keep = rec[:6]
        groups = rec[6] if len(rec) == 7 else 1
        n_freq = max(k, 2) if enc == "ans" else 0
        out.append(_Layer(name, k, enc, count, (idx, n_idx), (idx + n_idx, n_keep) if n_keep else
                          None, (book, groups * k), (freq, n_freq) if n_freq else None,
                          groups=groups))
        idx, book, freq = idx + n_idx + n_keep, book + groups * k, freq + n_freq
    return out


def _v1_span(v: object) -> tuple[int, int] | None:
    if v is None:
        return None
    if not (isinstance(v, list) and len(v) == 2 and all(_is_int(x) for x in v)):
        raise CodecError(f"bad payload span {str(v)[:40]}")
    return v[0], v[1]


def _v1_layers(raw: object) -> list[_Layer]:
    if not isinstance(raw, list):
        raise CodecError("manifest layers must be a list")
    out = []
    for e in raw:
        if not (isinstance(e, dict) and isinstance(e.get("name"), str) and _is_int(e.get("k"), 1, MAX_K)
                and e.get("encoding") in ("packed", "ans") and _is_int(e.get("count"))
                and e.get("bits") == bits_for(e["k"])):
            raise CodecError(f"bad layer entry {str(e)[:80]}")
        out.append(_Layer(e["name"], e["k"], e["encoding"], e["count"], _v1_span(e.get("idx")),
                          _v1_span(e.get("keep")), _v1_span(e.get("book")), _v1_span(e.get("freq")),
                          str(e.get("crc"))))
        if out[-1].idx is None or out[-1].book is None:
            raise CodecError(f"{e['name']}: payload span missing")
    return out


def _build(manifest: dict, model: nn.Module | None, file_bytes: int) -> tuple[nn.Module, dict]:
    """The model to fill: from the spec (bounded on the meta device first) or the caller's."""
    from rlcompress.models import apply_layer_shapes, build_model
    from rlcompress.models.shapes import fold_parametrizations

    spec = manifest.get("spec")
    if not isinstance(spec, dict):
        raise CodecError("manifest has no architecture spec")
    limit = _element_limit(file_bytes)
    if model is None and spec.get("arch") == "user":
        raise CodecError("the file holds your own model's weights, not its code: name its "
                         "class (on the command line --class nets.py:MyNet, with --class-args "
                         "'{...}' if it takes any; in Python rlcompress.load(path, "
                         "model=MyNet()) or inspect_file(path, model=MyNet()))")
    try:
        if model is None:
            with torch.device("meta"):
                probe = build_model(spec)
            _check_elements(probe, limit)
            model = build_model(spec)
        elif "shapes" in spec:
            _check_shapes(spec["shapes"], limit)
            fold_parametrizations(model)  # the file holds plain weights (compress folded them)
            apply_layer_shapes(model, spec["shapes"])
    except CodecError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, RuntimeError,
            RecursionError, OverflowError) as exc:
        raise CodecError(f"architecture spec rejected ({exc.__class__.__name__}: {exc})") from exc
    _check_elements(model, limit)
    return model, spec


def _check_elements(model: nn.Module, limit: int) -> None:
    n = sum(t.numel() for t in model.state_dict().values())
    if n > limit:
        raise CodecError(f"architecture declares {n} elements, more than the file's size allows "
                         f"({limit})")


def _check_shapes(shapes: object, limit: int) -> None:
    if not isinstance(shapes, dict):
        raise CodecError("spec shapes must be an object")
    total = 0
    for name, s in shapes.items():
        if not (isinstance(s, dict) and _is_int(s.get("in", 1), 1, 1 << 20)
                and _is_int(s.get("out"), 1, 1 << 20)):
            raise CodecError(f"spec shapes[{name!r}] must give positive in/out widths")
        dims = s.get("shape")
        if dims is not None:  # a user module's own tensor
            if not (isinstance(dims, list) and 1 <= len(dims) <= 8
                    and all(_is_int(d, 1, 1 << 20) for d in dims)):
                raise CodecError(f"spec shapes[{name!r}] must give a list of positive sizes")
            total += math.prod(dims)
            continue
        total += s.get("in", 1) * s["out"]
    if total > limit:
        raise CodecError("spec shapes declare more weights than the file's size allows")


def _check_tiling(layers: list[_Layer], floats: list[tuple[str, str, tuple[int, int]]],
                  tensors: dict[str, np.ndarray], book_dtype: str) -> None:
    """Every span inside its tensor, spans never overlapping, every tensor byte used once."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for lay in layers:
        for blob, sp in (("idx", lay.idx), ("idx", lay.keep), ("book", lay.book), ("freq", lay.freq)):
            if sp is not None:
                spans.setdefault(blob, []).append(sp)
    for _, dtype, sp in floats:
        spans.setdefault(f"f:{dtype}", []).append(sp)
    expect = {"idx": "uint8", "book": book_dtype, "freq": "uint32",
              **{f"f:{d}": d for d in FLOAT_DTYPES}}
    for name, arr in tensors.items():
        if name == "m":
            continue
        if name not in expect or str(arr.dtype) != expect[name] or arr.ndim != 1:
            raise CodecError(f"unexpected tensor {name!r} ({arr.dtype}, {arr.ndim}-D)")
    for blob, items in spans.items():
        size = tensors[blob].size if blob in tensors else 0
        pos = 0
        for off, n in sorted(items):
            if off != pos:
                raise CodecError(f"payload spans of {blob!r} overlap or leave gaps")
            pos = off + n
        if pos != size:
            raise CodecError(f"payload spans of {blob!r} cover {pos} of {size} entries")
    for name in tensors:
        if name != "m" and name not in spans and tensors[name].size:
            raise CodecError(f"tensor {name!r} is not referenced by the manifest")


def _decode_layer(lay: _Layer, module: nn.Module, tensors: dict[str, np.ndarray]) -> tuple:
    shape = tuple(module.weight.shape)
    per_filter = math.prod(shape[1:])
    book = tensors["book"][lay.book[0] : sum(lay.book)]
    payload = tensors["idx"][lay.idx[0] : sum(lay.idx)]
    keep_bits = tensors["idx"][lay.keep[0] : sum(lay.keep)] if lay.keep else None
    counts = tensors["freq"][lay.freq[0] : sum(lay.freq)] if lay.freq else None
    if lay.crc is not None and _crc(payload, book, *(a for a in (keep_bits, counts)
                                                      if a is not None)) != lay.crc:
        raise CodecError(f"{lay.name}: checksum mismatch, the file is corrupted")
    if not _sane(book):
        raise CodecError(f"{lay.name}: codebook holds NaN, infinite or absurdly large values")
    keep = np.ones(shape[0], dtype=bool)
    if keep_bits is not None:
        if keep_bits.size != (shape[0] + 7) // 8:
            raise CodecError(f"{lay.name}: filter bitmap has the wrong length")
        keep = np.unpackbits(keep_bits)[: shape[0]].astype(bool)
    if int(keep.sum()) * per_filter != lay.count:
        raise CodecError(f"{lay.name}: index count {lay.count} does not match the layer's "
                         f"{int(keep.sum())} kept filters of {per_filter} weights")
    if lay.encoding == "packed":
        if payload.size != (lay.count * bits_for(lay.k) + 7) // 8:
            raise CodecError(f"{lay.name}: packed payload has the wrong length")
        symbols = unpack(payload, bits_for(lay.k), lay.count)
    else:
        symbols = _ans(lay, payload, counts)
    if symbols.size and (symbols.min() < 0 or symbols.max() >= lay.k):
        raise CodecError(f"{lay.name}: index out of codebook range")
    if lay.groups > shape[0]:
        raise CodecError(f"{lay.name}: {lay.groups} codebooks for {shape[0]} output channels")
    offsets = _block_offsets(shape[0], lay.groups, lay.k)[keep]
    local = torch.from_numpy(symbols.astype(np.int64)).view(-1, *shape[1:])
    indices = torch.full(shape, lay.groups * lay.k, dtype=torch.long)
    indices[torch.from_numpy(keep)] = local + torch.from_numpy(offsets).view(-1, *[1] * (len(shape) - 1))
    book = torch.from_numpy(book.astype(np.float32))
    return (book if lay.groups == 1 else book.view(lay.groups, lay.k)), indices


def _sane(arr: np.ndarray) -> bool:
    a = arr.astype(np.float64)
    return bool(np.isfinite(a).all() and (np.abs(a) <= MAX_ABS_VALUE).all())


def _ans(lay: _Layer, payload: np.ndarray, counts: np.ndarray | None) -> np.ndarray:
    if counts is None or counts.size != max(lay.k, 2):
        raise CodecError(f"{lay.name}: symbol counts missing or of the wrong length")
    if int(counts.astype(np.int64).sum()) != lay.count or lay.count == 0:
        raise CodecError(f"{lay.name}: symbol counts do not add up to the index count")
    if counts[lay.k:].any() or payload.size % 4 or payload.size == 0:
        raise CodecError(f"{lay.name}: entropy-coded payload is malformed")
    try:
        return ans_decode(payload, counts, lay.count)
    except BaseException as exc:  # noqa: BLE001 - the coder's Rust panics are BaseException
        if isinstance(exc, KeyboardInterrupt | SystemExit | MemoryError):
            raise
        raise CodecError(f"{lay.name}: entropy-coded payload is corrupted") from exc


def _float_records(manifest: dict, version: int, state: dict) -> list[tuple[str, str, tuple[int, int]]]:
    raw = manifest.get("floats")
    if not isinstance(raw, list):
        raise CodecError("manifest floats must be a list")
    out, pos = [], {}
    for rec in raw:
        if version == 1:
            ok = isinstance(rec, list) and len(rec) == 5 and isinstance(rec[0], str)
            key, dtype = (rec[0], rec[2]) if ok else (None, None)
        else:
            ok = isinstance(rec, list) and len(rec) == 2 and isinstance(rec[0], str)
            key, dtype = (rec[0], rec[1]) if ok else (None, None)
        if not ok or dtype not in FLOAT_DTYPES:
            raise CodecError(f"bad float record {str(rec)[:80]}")
        if key not in state:
            raise CodecError(f"float entry {key!r} is not a tensor of the model")
        if str(state[key].dtype).removeprefix("torch.") != dtype:
            raise CodecError(f"float entry {key!r} has dtype {dtype}, the model "
                             f"{str(state[key].dtype).removeprefix('torch.')}")
        n = state[key].numel()
        if version == 1:
            span = _v1_span(rec[3:5])
            if span[1] != n or list(rec[1]) != list(state[key].shape):
                raise CodecError(f"float entry {key!r} has the wrong shape")
        else:
            span = (pos.get(dtype, 0), n)
            pos[dtype] = span[0] + n
        out.append((key, dtype, span))
    return out


def load_compressed(
    path: str | Path, model: nn.Module | None = None, max_bytes: int = MAX_FILE_BYTES
) -> tuple[nn.Module, dict]:
    """Decode an ``.rlc`` file into a model whose shared layers hold its codebooks and indices.

    ``model`` is needed only for architectures the registry cannot build from the spec (a
    user's own network): pass a freshly built instance and it is resized and filled. Files
    larger than ``max_bytes`` are refused. Returns the model (in eval mode) and the manifest
    (spec, per-layer records, extra).
    """
    path = Path(path)
    try:
        return _load(path, model, max_bytes)
    except CodecError as exc:
        # with a caller's instance, the likeliest cause is another class than the file's
        hint = (" (is `model` an instance of the class the file was made from?)"
                if model is not None else "")
        raise CodecError(f"{path}: {exc}{hint}") from None


def _load(path: Path, model: nn.Module | None, max_bytes: int) -> tuple[nn.Module, dict]:
    data = _read_file(path, max_bytes)
    info, tensors, manifest = _parse(data)
    version = info["version"]
    layers = _v1_layers(manifest.get("layers")) if version == 1 else _v2_layers(manifest.get("layers"))
    book_dtype = manifest.get("book", "float32") if version == 2 else str(
        tensors.get("book", np.zeros(0, np.float32)).dtype)
    if book_dtype not in ("float32", "float16"):
        raise CodecError(f"unknown codebook dtype {book_dtype!r}")
    model, spec = _build(manifest, model, len(data))
    modules = dict(model.named_modules())
    names = [lay.name for lay in layers]
    if len(set(names)) != len(names):
        raise CodecError("a layer is listed twice")
    for name in names:
        if not isinstance(modules.get(name), CLUSTERABLE) or is_shared(modules[name]):
            raise CodecError(f"layer {name!r} is not a conv or Linear layer of the architecture")
    compact = _compact_records(manifest, model)
    implied = {f"{n}.{leaf}" for n in compact for leaf in ("running_mean", "running_var")}
    plain = {k: v for k, v in model.state_dict().items()
             if (k.rpartition(".")[0] not in set(names) or not k.endswith(".weight"))
             and k not in implied}
    floats = _float_records(manifest, version, plain)
    _check_tiling(layers, floats, tensors, book_dtype)
    decoded = {lay.name: _decode_layer(lay, modules[lay.name], tensors) for lay in layers}
    prepare_shared(model, {lay.name: lay.k if lay.groups == 1 else [lay.groups, lay.k]
                           for lay in layers})
    state = {}
    for name, (book, indices) in decoded.items():
        state[f"{name}.codebook"], state[f"{name}.indices"] = book, indices
    for key, dtype, (off, n) in floats:
        arr = tensors[f"f:{dtype}"][off : off + n]
        if arr.dtype.kind == "f" and not _sane(arr):
            raise CodecError(f"{key}: holds NaN, infinite or absurdly large values")
        if key.endswith("running_var") and (arr < 0).any():
            raise CodecError(f"{key}: negative batch-norm variance")
        state[key] = torch.from_numpy(arr.reshape(plain[key].shape).copy())
    for name, bn in compact.items():  # scale and shift stored: mean 0, var + eps exactly 1
        state[f"{name}.running_mean"] = torch.zeros_like(bn.running_mean)
        state[f"{name}.running_var"] = torch.ones_like(bn.running_var) - bn.eps
    keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    missing = [k for k in keys if k not in state]
    if missing:
        raise CodecError(f"file does not cover the model: missing {missing[:5]}")
    model.load_state_dict(state, strict=False)
    encodings = [[lay.name, lay.k, lay.encoding] for lay in layers]
    return model.eval(), _report({"spec": spec, "extra": manifest.get("extra", {}),
                                  "layers": encodings}, model, version)


def _compact_records(manifest: dict, model: nn.Module) -> dict[str, nn.Module]:
    """The batch norms a file stores as scale and shift (manifest ``bn``), checked."""
    raw = manifest.get("bn", [])
    if not isinstance(raw, list) or not all(isinstance(n, str) for n in raw) \
            or len(set(raw)) != len(raw):
        raise CodecError("manifest bn must be a list of distinct layer names")
    allowed = compactable_bn(model)
    unknown = [n for n in raw if n not in allowed]
    if unknown:
        raise CodecError(f"bn entries {unknown[:3]} are not affine batch norms of the model")
    return {n: allowed[n] for n in raw}


def _report(manifest: dict, model: nn.Module, version: int = VERSION) -> dict:
    """The manifest as callers see it: spec, extra, and a readable record per shared layer."""
    rows = []
    for name, m in shared_layers(model).items():
        k = m.codebook.shape[-1]
        alive = m.indices.ne(m.codebook.numel()).flatten(1).any(1)
        symbols = m.indices[alive].numpy().ravel()
        rows.append({"name": name, "shape": list(m.indices.shape), "k": k, "bits": bits_for(k),
                     "codebooks": m.codebook.numel() // k,
                     "count": int(symbols.size), "filters_kept": int(alive.sum())})
    encodings = {r[0]: r[2] for r in manifest.get("layers", []) if isinstance(r, list)}
    for r in rows:
        r["encoding"] = encodings.get(r["name"], "")
    extra = manifest.get("extra", {})
    return {"format": FORMAT, "version": version, "spec": manifest["spec"], "layers": rows,
            "extra": extra if isinstance(extra, dict) else {}}


def inspect_file(path: str | Path, max_bytes: int = MAX_FILE_BYTES,
                 model: nn.Module | None = None) -> dict:
    """Per-layer table and totals of an ``.rlc`` file (decodes and verifies it; ``model``: a
    fresh instance of the class, for a file of a user's own network)."""
    path = Path(path)
    model, report = load_compressed(path, model, max_bytes=max_bytes)
    try:
        _, tensors, manifest = _parse(_read_file(path, max_bytes))
    except CodecError as exc:
        raise CodecError(f"{path}: {exc}") from None
    records = _v2_layers(manifest["layers"]) if report["version"] == 2 else _v1_layers(manifest["layers"])
    sizes = {r.name: r for r in records}
    itemsize = {"book": tensors["book"].itemsize if "book" in tensors else 4, "freq": 4}
    rows = []
    modules = dict(model.named_modules())
    for r in report["layers"]:
        rec, m = sizes[r["name"]], modules[r["name"]]
        symbols = m.indices[m.indices.ne(m.codebook.numel())].numpy() % r["k"]
        r["entropy"] = round(entropy_bits(symbols, r["k"]), 4)
        r["encoding"] = rec.encoding
        r["bytes"] = int(rec.idx[1] + (rec.keep[1] if rec.keep else 0) + rec.book[1] * itemsize["book"]
                         + (rec.freq[1] * 4 if rec.freq else 0))
        r["bits_per_weight"] = round(8 * r["bytes"] / max(r["count"], 1), 3)
        rows.append(r)
    floats = sum(t.nbytes for n, t in tensors.items() if n.startswith("f:"))
    return {
        "file": str(path), "file_bytes": path.stat().st_size, "version": report["version"],
        "layers": rows, "index_and_codebook_bytes": sum(r["bytes"] for r in rows),
        "float_bytes": int(floats), "weights": sum(r["count"] for r in rows),
        "header_bytes": path.stat().st_size - sum(t.nbytes for n, t in tensors.items() if n != "m"),
        "extra": report["extra"],
    }


def is_shared_model(model: nn.Module) -> bool:
    """True if any layer of ``model`` is shared."""
    return any(is_shared(m) for m in model.modules())
