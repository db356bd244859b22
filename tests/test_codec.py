from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save
from torch import nn

from rlcompress.clustering import clusterable_layers, resolve_policy, share_model
from rlcompress.codec import (
    CodecError,
    ans_decode,
    ans_encode,
    bits_for,
    float_state_bytes,
    inspect_file,
    layer_weight_count,
    load_compressed,
    model_layer_bits,
    pack,
    paper_ratio,
    save_compressed,
    unpack,
)
from rlcompress.models import build_model, model_spec, register_arch
from rlcompress.pruning import FilterMasks, PruneConfig


class Tiny(nn.Module):
    def __init__(self, spec: dict):
        super().__init__()
        self.conv = nn.Conv2d(3, spec.get("c", 8), 3, padding=1)
        self.bn = nn.BatchNorm2d(spec.get("c", 8))
        self.fc = nn.Linear(spec.get("c", 8), spec.get("f", 5))

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


register_arch("tiny_test", Tiny)


def _tiny(c=8, f=5, seed=0):
    torch.manual_seed(seed)
    spec = {"arch": "tiny_test", "c": c, "f": f}
    return build_model(spec).eval(), spec


def _roundtrip(model, spec, tmp_path, **kw):
    x = torch.randn(2, 3, 8, 8)
    y = model(x)
    path = tmp_path / "m.rlc"
    save_compressed(model, spec, path, **kw)
    again, manifest = load_compressed(path)
    assert torch.equal(again(x), y)
    return path, manifest


@pytest.mark.parametrize("bits", range(1, 17))
def test_round_trip_every_bit_width(bits, tmp_path: Path):
    n_features = max(2 ** bits // 8 + 2, 5)  # enough distinct weights for 2**bits clusters
    model, spec = _tiny(c=8, f=n_features)
    k = 2 ** (bits - 1) + 1 if bits > 1 else 2
    share_model(model, {"conv": min(k, 216), "fc": k})
    assert bits_for(len(model.fc.codebook)) == bits
    _, manifest = _roundtrip(model, spec, tmp_path, encoding="packed")
    entry = next(e for e in manifest["layers"] if e["name"] == "fc")
    assert entry["bits"] == bits and entry["encoding"] == "packed"


def test_the_same_model_always_writes_the_same_bytes(tmp_path: Path):
    """safetensors orders the metadata by a hash map's whims; the writer sorts it."""
    model, spec = _tiny()
    share_model(model, {"conv": 4, "fc": 4})
    blobs = []
    for i in range(8):
        save_compressed(model, spec, tmp_path / f"{i}.rlc")
        blobs.append((tmp_path / f"{i}.rlc").read_bytes())
    assert all(b == blobs[0] for b in blobs)
    n = struct.unpack("<Q", blobs[0][:8])[0]
    meta = list(json.loads(blobs[0][8 : 8 + n])["__metadata__"])
    assert meta == sorted(meta)


def test_round_trip_entropy_coded(tmp_path: Path):
    model, spec = _tiny(c=16, f=10)
    share_model(model, {"conv": 16, "fc": 8})
    _, manifest = _roundtrip(model, spec, tmp_path, encoding="ans")
    assert {e["encoding"] for e in manifest["layers"]} == {"ans"}


def test_resnet_with_masked_pruning_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    masks = FilterMasks.compute(model, PruneConfig())
    masks.apply(model)
    share_model(model, resolve_policy("k16", clusterable_layers(model)))
    path, manifest = _roundtrip(model, model_spec("resnet20"), tmp_path)
    conv = next(e for e in manifest["layers"] if e["name"] == "layer1.0.conv1")
    assert conv["filters_kept"] == 10 and conv["count"] == 10 * 16 * 9
    info = inspect_file(path)
    assert info["weights"] == sum(e["count"] for e in manifest["layers"])


def test_fp16_codebooks(tmp_path: Path):
    model, spec = _tiny()
    share_model(model, {"conv": 8, "fc": 4})
    save_compressed(model, spec, tmp_path / "h.rlc", codebook_dtype="float16")
    again, _ = load_compressed(tmp_path / "h.rlc")
    assert torch.equal(again.conv.codebook, model.conv.codebook.half().float())


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 3000), bits=st.integers(1, 16), seed=st.integers(0, 2**31))
def test_pack_unpack_property(n, bits, seed):
    idx = np.random.default_rng(seed).integers(0, 2**bits, size=n)
    data = pack(idx, bits)
    assert data.size == (n * bits + 7) // 8
    assert np.array_equal(unpack(data, bits, n), idx)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3000), k=st.integers(2, 300), seed=st.integers(0, 2**31))
def test_ans_property(n, k, seed):
    rng = np.random.default_rng(seed)
    idx = np.minimum(rng.geometric(0.3, size=n) - 1, k - 1)
    payload, counts = ans_encode(idx, k)
    assert np.array_equal(ans_decode(payload, counts, n), idx)


@settings(max_examples=15, deadline=None)
@given(cout=st.integers(2, 12), cin=st.integers(1, 6), ksz=st.sampled_from([1, 3]),
       k=st.integers(2, 64), prune=st.floats(0.0, 0.8), seed=st.integers(0, 1000))
def test_random_layers_round_trip(tmp_path_factory, cout, cin, ksz, k, prune, seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(cin, cout, ksz), nn.Flatten(), nn.LazyLinear(3))
    model(torch.zeros(1, cin, 6, 6))
    register_arch("seq_test", lambda s: _seq(s))
    spec = {"arch": "seq_test", "cin": cin, "cout": cout, "k": ksz}
    if prune > 0:
        FilterMasks.compute(model, PruneConfig(rate=prune)).apply(model)
    share_model(model, {"0": k, "2": k})
    x = torch.randn(2, cin, 6, 6)
    path = tmp_path_factory.mktemp("rt") / "m.rlc"
    save_compressed(model.eval(), spec, path)
    again, _ = load_compressed(path)
    assert torch.equal(again(x), model(x))


def _seq(s):
    m = nn.Sequential(nn.Conv2d(s["cin"], s["cout"], s["k"]), nn.Flatten(),
                      nn.Linear(s["cout"] * (6 - s["k"] + 1) ** 2, 3))
    return m


@pytest.fixture
def rlc_file(tmp_path: Path) -> Path:
    model, spec = _tiny(c=8, f=5)
    share_model(model, {"conv": 8, "fc": 4})
    save_compressed(model, spec, tmp_path / "t.rlc")
    return tmp_path / "t.rlc"


def test_byte_flips_are_caught_or_harmless(rlc_file: Path):
    data = rlc_file.read_bytes()
    reference, _ = load_compressed(rlc_file)
    x = torch.randn(1, 3, 8, 8)
    rng = np.random.default_rng(0)
    caught = 0
    for pos in rng.choice(len(data), size=150, replace=False):
        bad = bytearray(data)
        bad[pos] ^= int(rng.integers(1, 256))
        rlc_file.with_name("bad.rlc").write_bytes(bad)
        try:
            model, _ = load_compressed(rlc_file.with_name("bad.rlc"))
        except CodecError:
            caught += 1
            continue
        # a flip that JSON ignores (whitespace in the header) must decode to the same model
        assert torch.equal(model(x), reference(x)), f"flip at {pos} gave a wrong model"
    assert caught > 140


def test_truncation_at_every_boundary(rlc_file: Path):
    data = rlc_file.read_bytes()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + hlen])
    ends = sorted({8 + hlen + v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"})
    cuts = [0, 1, 7, 8, 9, 8 + hlen // 2, 8 + hlen - 1, 8 + hlen, *[e - 1 for e in ends], *ends[:-1]]
    for cut in cuts:
        rlc_file.with_name("cut.rlc").write_bytes(data[:cut])
        with pytest.raises(CodecError):
            load_compressed(rlc_file.with_name("cut.rlc"))


def _rewrite(path: Path, out: Path, edit_meta=None, edit_manifest=None) -> None:
    """Re-save an .rlc file after editing its metadata or manifest, checksums recomputed."""
    import zlib

    from rlcompress.codec.format import _digest

    data = path.read_bytes()
    (hlen,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8 : 8 + hlen])["__metadata__"]
    tensors = dict(st_load(data))
    if edit_manifest:
        manifest = json.loads(zlib.decompress(tensors["m"].tobytes()))
        edit_manifest(manifest)
        # a marker string stands for text json.dumps cannot produce (e.g. deep nesting)
        text = json.dumps(manifest).replace('"DEEP"', "[" * 100000 + "]" * 100000)
        tensors["m"] = np.frombuffer(zlib.compress(text.encode()), np.uint8)
    meta["sha256"] = _digest(tensors)
    if edit_meta:
        edit_meta(meta)
    out.write_bytes(st_save(tensors, metadata=meta))


def test_unknown_version_and_foreign_files(rlc_file: Path, tmp_path: Path):
    _rewrite(rlc_file, tmp_path / "v99.rlc", edit_meta=lambda m: m.update(version="99"))
    with pytest.raises(CodecError, match="unsupported .rlc format version '99'"):
        load_compressed(tmp_path / "v99.rlc")
    (tmp_path / "plain.safetensors").write_bytes(st_save({"a": np.zeros(3, np.float32)}))
    with pytest.raises(CodecError, match="not an .rlc file"):
        load_compressed(tmp_path / "plain.safetensors")
    (tmp_path / "notes.rlc").write_text("hello, this is not a model\n" * 5)
    with pytest.raises(CodecError, match=r"notes\.rlc: not an \.rlc file"):
        load_compressed(tmp_path / "notes.rlc")
    with pytest.raises(CodecError, match="not a regular file"):
        load_compressed(tmp_path)
    with pytest.raises(CodecError, match="exceeds the 100-byte limit"):
        load_compressed(rlc_file, max_bytes=100)


def test_manifest_is_compact(tmp_path: Path):
    torch.manual_seed(0)
    model = build_model("resnet56").eval()
    share_model(model, resolve_policy("k16", clusterable_layers(model)))
    path = tmp_path / "r56.rlc"
    save_compressed(model, model_spec("resnet56"), path)
    info = inspect_file(path)
    # fixed part at most 2 KB plus about 30 bytes per layer (the safetensors header included)
    assert info["header_bytes"] <= 2048 + 30 * len(info["layers"]), info["header_bytes"]


def test_dtype_edit_in_header_is_caught(rlc_file: Path, tmp_path: Path):
    data = bytearray(rlc_file.read_bytes())
    (hlen,) = struct.unpack("<Q", data[:8])
    header = data[8 : 8 + hlen].decode()
    assert '"F32"' in header
    bad = header.replace('"F32"', '"I32"', 1).encode()
    (tmp_path / "bad.rlc").write_bytes(bytes(data[:8]) + bad + bytes(data[8 + hlen :]))
    with pytest.raises(CodecError):
        load_compressed(tmp_path / "bad.rlc")


@pytest.mark.parametrize("edit", [
    lambda m: m["layers"][0].__setitem__(1, 10**9),           # huge k
    lambda m: m["layers"][0].__setitem__(3, 10**12),          # huge symbol count
    lambda m: m["floats"].append(["conv.weight", "float32"]),  # overwrite a shared layer
    lambda m: m["floats"].append(m["floats"][0]),             # a float listed twice
    lambda m: m["spec"].update(c=10**7),                      # absurd width
    lambda m: m["layers"][0].__setitem__(2, "ans"),           # wrong encoding
    lambda m: m.update(extra="DEEP"),  # deep nesting
])
def test_hostile_manifests_raise_codec_error(rlc_file: Path, tmp_path: Path, edit):
    _rewrite(rlc_file, tmp_path / "bad.rlc", edit_manifest=edit)
    with pytest.raises(CodecError):
        load_compressed(tmp_path / "bad.rlc")


def test_nan_codebook_is_refused(rlc_file: Path, tmp_path: Path):
    from rlcompress.codec.format import _digest

    data = rlc_file.read_bytes()
    (hlen,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8 : 8 + hlen])["__metadata__"]
    tensors = {k: v.copy() for k, v in st_load(data).items()}
    tensors["book"][0] = np.nan
    meta["sha256"] = _digest(tensors)
    (tmp_path / "nan.rlc").write_bytes(st_save(tensors, metadata=meta))
    with pytest.raises(CodecError, match="NaN"):
        load_compressed(tmp_path / "nan.rlc")


def test_version_1_files_still_load(tmp_path: Path):
    v1 = Path(__file__).parent / "data" / "v1-tiny.rlc"
    model, manifest = load_compressed(v1)
    assert manifest["version"] == 1
    x = torch.randn(2, 3, 8, 8)
    save_compressed(model, manifest["spec"], tmp_path / "v2.rlc")
    again, m2 = load_compressed(tmp_path / "v2.rlc")
    assert m2["version"] == 2 and torch.equal(again(x), model(x))


def test_fuzz_random_bytes(tmp_path: Path, rlc_file: Path):
    rng = np.random.default_rng(1)
    prefix = rlc_file.read_bytes()[:64]
    for i in range(300):
        n = int(rng.integers(0, 400))
        blob = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
        if i % 2:  # a plausible header length first, so parsing gets further in
            blob = struct.pack("<Q", int(rng.integers(0, 300))) + blob
        if i % 3 == 0:
            blob = prefix + blob
        (tmp_path / "f.rlc").write_bytes(blob)
        with pytest.raises(CodecError):
            load_compressed(tmp_path / "f.rlc")


def test_ratios_by_hand():
    model = nn.Sequential(nn.Conv2d(2, 4, 1, bias=False), nn.Flatten(), nn.Linear(4 * 3 * 3, 2))
    # conv 8 weights, linear 72 weights
    assert layer_weight_count(model) == 80
    share_model(model, {"0": 4})  # 8 weights with 4 clusters: 2 bits
    assert model_layer_bits(model) == [(8, 2), (72, 32)]
    assert paper_ratio(80, model_layer_bits(model)) == pytest.approx(32 * 80 / (8 * 2 + 72 * 32))
    # float32 safetensors of the dense model: header + (8 + 72 + 2) * 4 bytes of payload
    dense = nn.Sequential(nn.Conv2d(2, 4, 1, bias=False), nn.Flatten(), nn.Linear(36, 2))
    assert float_state_bytes(dense) > 82 * 4
    assert float_state_bytes(dense) < 82 * 4 + 300


def test_a_user_modules_tensor_shapes_are_validated_before_anything_is_built():
    from rlcompress.codec.format import _check_shapes

    _check_shapes({"block.gamma": {"out": 4, "shape": [4]}}, 100)
    for bad in ([0], "4", [4] * 9, [10**7], [2.5]):
        with pytest.raises(CodecError, match="list of positive sizes"):
            _check_shapes({"block.gamma": {"out": 4, "shape": bad}}, 10**9)
    with pytest.raises(CodecError, match="more weights"):
        _check_shapes({"block.gamma": {"out": 1000, "shape": [1000, 1000]}}, 10**5)
