"""A structure-aware fuzzer of the ``.rlc`` decoder.

Each case edits a real file in one of these ways and loads it:

* ``manifest``: one field of the decoded manifest (layer records, float records, the spec,
  extra) set to a hostile value (huge, negative, zero, wrong type, another layer's name, deep
  nesting), the manifest recompressed and the checksum recomputed so that it passes;
* ``header``: a tensor's dtype or shape in the safetensors header changed, checksum recomputed;
* ``content``: bytes inside a tensor changed (NaN, huge counts, random), checksum recomputed;
* ``raw``: truncation, appended bytes, or flipped bytes with the checksum left as it is.

Outcomes: ``error`` (a :class:`CodecError`), ``equal`` (loaded, outputs equal the original's),
``valid`` (loaded a different but well-formed model: only possible when the checksum was
recomputed over a semantically valid edit, e.g. a changed codebook value), or ``crash`` (any
other exception, or non-finite / wrongly shaped outputs). ``raw`` cases must never be ``valid``.
Run it in a process with an address-space limit (:func:`limit_memory`) so that an allocation
bomb fails loudly instead of taking the machine down.
"""

from __future__ import annotations

import json
import struct
import traceback
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from rlcompress.codec.format import CodecError, _digest, load_compressed

HOSTILE = [0, -1, 1, 2, 3, 7, 255, 256, 65535, 65536, 65537, 2**31, 2**32 + 1, 2**40, 2**62,
           10**30, -2**63, 1.5, True, None, "", "x", "ans", "packed", [], {}, [1, 2], "DEEP"]


def limit_memory(max_bytes: int) -> None:
    """Cap this process's address space (Linux), so an allocation bomb raises or aborts."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))


def _split(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    (hlen,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8 : 8 + hlen])["__metadata__"]
    return meta, {k: v.copy() for k, v in st_load(data).items()}


def _resave(meta: dict, tensors: dict[str, np.ndarray], manifest_text: str | None = None) -> bytes:
    if manifest_text is not None:
        tensors["m"] = np.frombuffer(zlib.compress(manifest_text.encode()), np.uint8)
    meta = dict(meta, sha256=_digest(tensors))
    return st_save(tensors, metadata=meta)


def _paths(obj: object, prefix: tuple = ()) -> list[tuple]:
    """Every path to a leaf or container inside a JSON value."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _set(obj: object, path: tuple, value: object) -> None:
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


def mutate_manifest(data: bytes, rng: np.random.Generator) -> bytes:
    """One hostile edit of one manifest field, checksums recomputed."""
    meta, tensors = _split(data)
    manifest = json.loads(zlib.decompress(tensors["m"].tobytes()))
    paths = [p for p in _paths(manifest) if p]
    path = paths[int(rng.integers(len(paths)))]
    choice = rng.random()
    if choice < 0.6:
        value = HOSTILE[int(rng.integers(len(HOSTILE)))]
    elif choice < 0.8:  # another valid-looking value from elsewhere in the manifest
        other = paths[int(rng.integers(len(paths)))]
        value = manifest
        for key in other:
            value = value[key]
        value = json.loads(json.dumps(value))
    else:  # duplicate or drop a record
        parent = manifest
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, list) and parent:
            if rng.random() < 0.5:
                parent.append(json.loads(json.dumps(parent[int(rng.integers(len(parent)))])))
            else:
                parent.pop(int(rng.integers(len(parent))))
            return _resave(meta, tensors, json.dumps(manifest))
        value = HOSTILE[int(rng.integers(len(HOSTILE)))]
    _set(manifest, path, value)
    text = json.dumps(manifest).replace('"DEEP"', "[" * 50000 + "]" * 50000)
    return _resave(meta, tensors, text)


def mutate_header(data: bytes, rng: np.random.Generator) -> bytes:
    """Change one tensor's dtype or shape in the header; checksum recomputed over the result."""
    meta, tensors = _split(data)
    name = sorted(tensors)[int(rng.integers(len(tensors)))]
    arr = tensors[name]
    if rng.random() < 0.5:
        dtypes = [d for d in ("uint8", "int8", "int16", "uint16", "int32", "uint32", "float16",
                              "float32", "int64", "float64") if d != str(arr.dtype)]
        new = np.dtype(dtypes[int(rng.integers(len(dtypes)))])
        raw = arr.tobytes()
        raw = raw[: len(raw) - len(raw) % new.itemsize]
        tensors[name] = np.frombuffer(raw, dtype=new).copy()
    elif arr.size > 1 and arr.size % 2 == 0:
        tensors[name] = arr.reshape(2, -1)
    else:
        tensors[name] = arr[:-1] if arr.size else np.zeros(3, arr.dtype)
    return _resave(meta, tensors)


def mutate_content(data: bytes, rng: np.random.Generator) -> bytes:
    """Change values inside one tensor; checksum recomputed."""
    meta, tensors = _split(data)
    names = sorted(n for n in tensors if n != "m" and tensors[n].size)
    name = names[int(rng.integers(len(names)))]
    arr = tensors[name]
    i = int(rng.integers(arr.size))
    if arr.dtype.kind == "f":
        with np.errstate(over="ignore"):  # 1e30 in a float16 codebook becomes inf: intended
                arr[i] = [np.nan, np.inf, -np.inf, 0.0, 1e30, -arr[i]][int(rng.integers(6))]
    else:
        info = np.iinfo(arr.dtype)
        arr[i] = [info.max, info.min, 0, 1, int(rng.integers(info.min, info.max, endpoint=True))][
            int(rng.integers(5))]
    return _resave(meta, tensors)


def mutate_raw(data: bytes, rng: np.random.Generator) -> bytes:
    """Truncate, append to or flip bytes of the file; checksums left as they are."""
    choice = rng.random()
    if choice < 0.33:
        return data[: int(rng.integers(len(data)))]
    if choice < 0.5:
        return data + rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        out[int(rng.integers(len(out)))] ^= int(rng.integers(1, 256))
    return bytes(out)


MUTATORS = {"manifest": mutate_manifest, "header": mutate_header, "content": mutate_content,
            "raw": mutate_raw}


def _outcome(path: Path, x: torch.Tensor, reference: torch.Tensor) -> tuple[str, str]:
    try:
        model, _ = load_compressed(path)
    except CodecError:
        return "error", ""
    except BaseException as exc:  # noqa: BLE001 - any other exception is the finding
        if isinstance(exc, KeyboardInterrupt):
            raise
        return "crash", traceback.format_exc(limit=4)
    try:
        with torch.no_grad():
            y = model(x)
    except Exception:  # noqa: BLE001
        return "crash", "forward failed: " + traceback.format_exc(limit=4)
    if y.shape != reference.shape or not torch.isfinite(y).all():
        return "crash", f"output shape {tuple(y.shape)} or non-finite values"
    return ("equal" if torch.equal(y, reference) else "valid"), ""


def fuzz(path: str | Path, cases: int, seed: int = 0, input_shape: tuple[int, ...] = (2, 3, 8, 8),
         workdir: str | Path | None = None) -> dict:
    """Run ``cases`` mutations of the file at ``path``; returns counts and the first findings."""
    from rlcompress.fileio import scratch_dir

    path = Path(path)
    data = path.read_bytes()
    reference_model, _ = load_compressed(path)
    torch.manual_seed(seed)
    x = torch.randn(*input_shape)
    with torch.no_grad():
        reference = reference_model(x)
    rng = np.random.default_rng(seed)
    counts: Counter = Counter()
    findings: list[dict] = []
    kinds = list(MUTATORS)
    with scratch_dir(workdir) as tmp:
        target = tmp / "case.rlc"
        for i in range(cases):
            kind = kinds[i % len(kinds)]
            target.write_bytes(MUTATORS[kind](data, rng))  # scratch file, never resumed from
            outcome, detail = _outcome(target, x, reference)
            if kind == "raw" and outcome == "valid":
                outcome, detail = "crash", "raw edit loaded a different model (silently wrong)"
            counts[f"{kind}:{outcome}"] += 1
            if outcome == "crash" and len(findings) < 10:
                findings.append({"case": i, "kind": kind, "detail": detail[-1500:]})
    return {"cases": cases, "seed": seed, "counts": dict(sorted(counts.items())),
            "crashes": sum(v for k, v in counts.items() if k.endswith(":crash")),
            "findings": findings}


def fuzz_in_subprocess(path: str | Path, cases: int, seed: int = 0,
                       input_shape: tuple[int, ...] = (2, 3, 8, 8),
                       address_space: int = 3 << 30) -> dict:
    """:func:`fuzz` in a fresh Python process whose address space is capped (Linux).

    Returns the fuzz result, or ``{"died": returncode, "stderr": ...}`` if the process died
    (an abort or an allocation failure: both are findings).
    """
    import subprocess
    import sys

    code = (
        "import json\n"
        "from rlcompress.codec.fuzz import fuzz, limit_memory\n"
        f"limit_memory({int(address_space)})\n"
        f"print(json.dumps(fuzz({str(path)!r}, {cases}, {seed}, {tuple(input_shape)!r})))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"died": proc.returncode, "stderr": proc.stderr[-3000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])
