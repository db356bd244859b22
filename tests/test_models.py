from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import shared_or_skip
from rlcompress.data import DataConfig, load_data
from rlcompress.engine import evaluate_model
from rlcompress.models import (
    ChannelMapShortcut,
    CheckpointError,
    build_model,
    load_checkpoint,
    load_pretrained,
    load_state_dict_file,
    load_weights,
    model_spec,
    resnet_spec,
    save_checkpoint,
)


@pytest.mark.parametrize(
    ("name", "params"), [("resnet20", 269_722), ("resnet32", 464_154), ("resnet56", 853_018)]
)
def test_parameter_counts_match_the_paper_family(name, params):
    # He et al. 2016 list 0.27M / 0.46M / 0.85M parameters
    model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_bad_depth_and_name():
    with pytest.raises(ValueError, match="6n\\+2"):
        resnet_spec(21)
    with pytest.raises(KeyError, match="unknown architecture"):
        build_model({**model_spec("resnet20"), "arch": "x"})
    with pytest.raises(KeyError, match="unknown model"):
        model_spec("resnet21")


def test_option_a_shortcut_pads_both_sides():
    sc = ChannelMapShortcut(16, 32, 2, list(range(16)), [c + 8 for c in range(16)])
    x = torch.randn(1, 16, 8, 8)
    y = sc(x)
    assert y.shape == (1, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


def test_spec_state_dict_round_trip(tmp_path: Path):
    spec = model_spec("resnet20")
    spec["blocks"][0]["mid"] = 9  # a narrower, "pruned" block
    torch.manual_seed(0)
    model = build_model(spec).eval()
    save_checkpoint(model, spec, tmp_path, "m")
    assert not list(tmp_path.glob("*.pt")) and (tmp_path / "m.json").is_file()
    again, spec2 = load_checkpoint(tmp_path / "m.safetensors")
    assert spec2 == spec
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(model(x), again.eval()(x))


def test_module_prefix_and_mismatch(tmp_path: Path):
    model = build_model("resnet20")
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               tmp_path / "a.th")
    state = load_state_dict_file(tmp_path / "a.th")
    assert "conv1.weight" in state
    load_weights(build_model("resnet20"), state)
    with pytest.raises(CheckpointError, match="does not match"):
        load_weights(build_model("resnet32"), state)
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict_file(tmp_path / "missing.th")
    (tmp_path / "junk.th").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot load"):
        load_state_dict_file(tmp_path / "junk.th")


def test_shared_checkpoint_reproduces_its_accuracy(tmp_path: Path):
    ckpt = shared_or_skip("pretrained/resnet20-12fca82f.th")
    shared_or_skip("datasets/cifar10-jpeg.tar.gz")
    model, _ = load_pretrained("resnet20", ckpt)
    data = load_data(DataConfig(data_dir="data"), progress=False)
    data.test = data.test.subset(2000, seed=0)
    res = evaluate_model(model, data, "test", precision="fp32")
    # 81.0% on the full JPEG test split (../shared/README.md); 2000 images: s.e. ~0.9 points
    assert 77.5 < res["top1"] < 84.5, res


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_channel_map_writes_picked_channels_into_zeros(dtype, channels_last):
    from rlcompress.models.resnet_cifar import channel_matrix, pick_channels

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 6, 5, 5, generator=gen).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    src, dst = [4, 0, 2], [7, 1, 3]
    expected = torch.zeros(3, 9, 5, 5, dtype=dtype)
    expected[:, dst] = x[:, src]
    out = pick_channels(x, channel_matrix(src, dst, 6, 9))
    assert out.dtype == dtype and out.shape == expected.shape
    assert torch.equal(out, expected)
