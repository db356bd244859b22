"""Correct results on a user's own model and data through the library API."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import rlcompress
from conftest import planted_data
from rlcompress.clustering import share_model
from rlcompress.codec.format import CodecError
from rlcompress.data.loaders import LoaderData
from rlcompress.pruning import FilterMasks, PruneConfig, shrink_generic
from rlcompress.pruning.groups import GroupPruneConfig, prune_groups


def test_validation_subset_is_class_stratified_on_a_sorted_loader():
    y = torch.arange(4).repeat_interleave(50)  # class-sorted, as many datasets are stored
    x = torch.randn(len(y), 3, 4, 4)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    data = LoaderData(loader, loader)
    sample = data.materialise("val", 40, seed=0)
    labels = torch.cat([b[1] for b in sample])
    assert len(labels) == 40
    assert torch.bincount(labels, minlength=4).tolist() == [10, 10, 10, 10]
    again = torch.cat([b[1] for b in data.materialise("val", 40, seed=0)])
    other = data.materialise("val", 40, seed=1)
    assert torch.equal(labels, again)
    assert not torch.equal(torch.cat([b[0] for b in sample]), torch.cat([b[0] for b in other]))


class SigmoidNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.sigmoid(self.bn1(self.conv1(x)))  # sigmoid(0) = 0.5: not zero-preserving
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def _masked(model: nn.Module) -> tuple[nn.Module, FilterMasks]:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.bias.data.uniform_(-1, 1)
    masks = FilterMasks.compute(model, PruneConfig(rate=0.5))
    masks.apply(model)
    return model.eval(), masks


def test_non_zero_preserving_ops_keep_the_layer_whole():
    model, masks = _masked(SigmoidNet())
    x = torch.randn(2, 3, 8, 8)
    small, report = shrink_generic(model, masks, x)
    assert "conv1" in report.kept_whole and "conv1" not in report.kept
    assert torch.allclose(small.eval()(x), model(x), atol=1e-5)


def test_shrunk_modules_keep_the_eval_mode():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3),
                          nn.BatchNorm2d(4))
    model, masks = _masked(model)
    small, report = shrink_generic(model, masks, torch.zeros(1, 3, 8, 8))
    assert report.kept  # something was shrunk
    assert not any(m.training for m in small.modules())


def test_shared_models_can_be_deep_copied_after_training_steps():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    share_model(model, {"0": 4, "2": 4})
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    clone = copy.deepcopy(model)
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(clone(x), model(x))


class ResidualNet(nn.Module):
    """A conv whose output meets a residual add: it is pruned together with the stem."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv, self.bn = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn0(self.stem(x)))
        h = torch.relu(self.bn(self.conv(h)) + h)
        return self.fc(h.mean((2, 3)))


def test_compress_prunes_a_residual_pair_together_and_keeps_the_callers_threads(planted, tmp_path: Path):
    torch.manual_seed(0)
    model = ResidualNet()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        decoded, report = rlcompress.compress(
            model, data=planted, target_size="20KB", prune_epochs=1, episodes=2,
            share_epochs=1, val_images=32, out=tmp_path / "c", progress=False, precision="fp32")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert report["layers_kept_whole"] == {}
    groups = {g["name"]: g for g in report["pruning_groups"]["groups"]}
    residual = next(g for g in groups.values() if "conv" in g["members"] and "stem" in g["members"])
    assert residual["pruned"] > 0 and residual["max_abs_diff"] <= 1e-5
    # the stem and the conv that meet in the add lose the same channels: the file holds fewer
    assert decoded.stem.out_channels == decoded.conv.out_channels == decoded.fc.in_features < 8
    copy.deepcopy(decoded)


class PlainNet(nn.Module):
    """A user's VGG-style net: conv-bn-relu links are exactly removable channel chains."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.c2, self.b2 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.c3, self.b3 = nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        x = torch.relu(self.b3(self.c3(x)))
        return self.fc(x.mean((2, 3)))


def test_joint_compress_on_a_user_model_prunes_the_searched_filters(planted, tmp_path: Path):
    from rlcompress.pruning.criteria import keep_indices
    from rlcompress.pruning.groups import GroupPruneConfig, prune_groups

    torch.manual_seed(0)
    model = PlainNet()
    # the pruner removes exactly the filters the joint search masked (lowest FPGM first)
    small, _ = prune_groups(model, torch.zeros(1, 3, 16, 16), GroupPruneConfig(rate=0.0),
                            rates={"c1": 0.5, "c2": 0.25})
    keep = keep_indices(model.c1.weight, 0.5)
    torch.testing.assert_close(small.c1.weight, model.c1.weight[keep])
    torch.testing.assert_close(small.c2.weight, model.c2.weight[keep_indices(model.c2.weight, 0.25)][:, keep])
    decoded, report = rlcompress.compress(
        model, data=planted, target_size="4500", prune_rates="0.25,0.5", prune_epochs=1,
        episodes=3, share_epochs=1, val_images=32, out=tmp_path / "j", progress=False,
        precision="fp32", threads=1)
    assert set(report["rates"]) == {"c1", "c2"} and any(r > 0 for r in report["rates"].values())
    assert report["file_bytes"] <= 4500
    for name, rate in report["rates"].items():
        assert getattr(decoded, name).out_channels == 16 - int(rate * 16 + 0.5)


class WithAuxHead(PlainNet):
    """A user's net with a head its ``forward`` never calls (a training-only auxiliary)."""

    def __init__(self) -> None:
        super().__init__()
        self.aux = nn.Linear(16, 4)


def test_compress_a_model_with_a_layer_forward_never_calls(planted, tmp_path: Path):
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match=r"\['aux'\] take no part"):
        decoded, report = rlcompress.compress(
            WithAuxHead(), data=planted, target_size="3500", prune_epochs=0, episodes=2,
            share_epochs=0, val_images=32, out=tmp_path / "a", progress=False,
            precision="fp32", threads=1)
    assert "aux" in report["policy"] and report["file_bytes"] <= 3500
    back = rlcompress.load(report["file"], model=WithAuxHead()).eval()
    back.to(memory_format=torch.channels_last)  # the layout compress() evaluated in
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(back(x), decoded.eval()(x), rtol=0, atol=0)


def test_joint_compress_prunes_a_hidden_linear_width_and_loads_back(planted, tmp_path: Path):
    from test_joint import _MlpHead

    torch.manual_seed(0)
    # c2 protected: the convs' chain is out, so the budget can only be met in the classifier
    decoded, report = rlcompress.compress(
        _MlpHead(), data=planted, target_size="1300", prune_rates="0.25,0.5", protect=("c2",),
        strategy="greedy", prune_epochs=1, share_epochs=1, val_images=32, out=tmp_path / "m",
        progress=False, precision="fp32", threads=1)
    assert set(report["rates"]) == {"fc1", "fc2"} and report["rates"]["fc1"] > 0
    assert report["file_bytes"] <= 1300
    assert decoded.fc1.out_features == decoded.fc2.in_features == 16 - int(report["rates"]["fc1"] * 16 + 0.5)
    back = rlcompress.load(report["file"], model=_MlpHead()).eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(back(x), decoded.eval()(x), rtol=0, atol=0)


def test_an_attention_block_is_compressed_and_its_projection_shared(planted, tmp_path: Path):
    from test_search import _Tokens

    torch.manual_seed(0)
    decoded, report = rlcompress.compress(
        _Tokens(), data=planted, target_size="3000", strategy="greedy", prune_epochs=0,
        share_epochs=0, val_images=32, out=tmp_path / "t", progress=False, precision="fp32",
        threads=1)
    k = report["policy"]["attn.out_proj"]
    # the attention calls its projection's weight directly: the shared weight is what it uses
    assert decoded.attn.out_proj.weight.unique().numel() <= k
    back = rlcompress.load(report["file"], model=_Tokens()).eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(back(x), decoded.eval()(x), rtol=0, atol=0)


class NormedNet(PlainNet):
    """PlainNet with its convs reparametrized, as audio and GAN-style models often are."""

    def __init__(self, kind: str = "weight_norm") -> None:
        super().__init__()
        from torch.nn.utils import parametrizations

        wrap = {"weight_norm": parametrizations.weight_norm,
                "spectral_norm": parametrizations.spectral_norm,
                "old_weight_norm": nn.utils.weight_norm}[kind]
        self.c1, self.c2 = wrap(self.c1), wrap(self.c2)


@pytest.mark.parametrize("kind", ["weight_norm", "spectral_norm"])
def test_reparametrized_weights_are_folded_pruned_shared_and_load_back(planted, tmp_path: Path,
                                                                       kind: str):
    from rlcompress.models.shapes import fold_parametrizations

    torch.manual_seed(0)
    model = NormedNet(kind).eval()
    x = torch.randn(2, 3, 16, 16)
    want = model(x)
    plain = copy.deepcopy(model)
    assert fold_parametrizations(plain) == ["c1", "c2"]
    torch.testing.assert_close(plain(x), want)  # the same function, plain weights
    with pytest.warns(UserWarning, match="folded into plain weights"):
        decoded, report = rlcompress.compress(
            model, data=planted, target_size="3000", strategy="greedy", prune_epochs=0,
            share_epochs=0, val_images=32, out=tmp_path / "w", progress=False, precision="fp32",
            threads=1)
    torch.testing.assert_close(model(x), want, rtol=0, atol=0)  # the caller's model still works
    assert report["layers_kept_whole"] == {} and decoded.c1.out_channels < 16
    assert decoded.c2.weight.unique().numel() <= report["policy"]["c2"]
    back = rlcompress.load(report["file"], model=NormedNet(kind)).eval()
    got = back.state_dict()
    assert all(torch.equal(got[n], t) for n, t in decoded.state_dict().items())


def test_the_deprecated_weight_norm_is_folded_in_place_and_refused_by_compress(planted, tmp_path: Path):
    from rlcompress.models.shapes import fold_parametrizations

    torch.manual_seed(0)
    model = NormedNet("old_weight_norm").eval()
    with pytest.raises(ValueError, match="parametrizations.weight_norm"):
        rlcompress.compress(model, data=planted, target_size="3000", out=tmp_path / "o",
                            progress=False, threads=1)
    x = torch.randn(2, 3, 16, 16)
    want = model(x)
    assert fold_parametrizations(model) == ["c1", "c2"]  # what load does to the instance given
    assert not hasattr(model.c1, "weight_g") and isinstance(model.c1.weight, nn.Parameter)
    torch.testing.assert_close(model(x), want)


def test_a_searched_chain_the_pruner_keeps_whole_is_a_warning(planted, tmp_path: Path, monkeypatch):
    import rlcompress.pipeline.api as api

    real = api._prune

    def keeps_whole(*args: object) -> tuple:  # as if the group failed its exactness check
        small, spec, kept, groups = real(*args)
        rates = args[5] if len(args) > 5 else {}
        return small, spec, {**kept, **{n: "a reason" for n, r in (rates or {}).items() if r}}, groups

    monkeypatch.setattr(api, "_prune", keeps_whole)
    torch.manual_seed(0)
    # which chains the search prunes depends on the budget's accounting: any of them warns
    with pytest.warns(UserWarning, match=r"pruned c\d(, c\d)*, but the pruner kept them whole "
                      r"\(a reason(; a reason)*\)"):
        _, report = rlcompress.compress(
            PlainNet(), data=planted, target_size="2000", prune_rates="0.25,0.5", strategy="greedy",
            prune_epochs=0, share_epochs=0, val_images=32, out=tmp_path / "k", progress=False,
            precision="fp32", threads=1)
    assert any(report["rates"].values())


def test_a_loader_ending_on_a_batch_of_one_trains_a_batch_norm_head(tmp_path: Path):
    from test_joint import _NormHead

    g = torch.Generator().manual_seed(0)

    def split(n: int) -> TensorDataset:
        y = torch.arange(n) % 4
        return TensorDataset(torch.randn(n, 3, 16, 16, generator=g) + y.view(-1, 1, 1, 1), y)

    # 65 = 4 x 16 + 1: the last training batch holds one image, which BatchNorm1d cannot train on
    train = DataLoader(split(65), batch_size=16, shuffle=True)
    val, test = DataLoader(split(32), batch_size=16), DataLoader(split(32), batch_size=16)
    torch.manual_seed(0)
    _, report = rlcompress.compress(
        _NormHead(), train_loader=train, val_loader=val, test_loader=test, target_size="3000",
        strategy="greedy", prune_epochs=1, share_epochs=1, val_images=32, out=tmp_path / "b",
        progress=False, precision="fp32", threads=1)
    assert report["file_bytes"] <= 3000 and "test_top1" in report


class AuxNet(PlainNet):
    """An auxiliary head used only in training, as in GoogLeNet: returned beside the logits
    (``tuple``), or folded into them (``sum``)."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.aux, self.mode = nn.Linear(16, 4), mode

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple:  # noqa: D102
        h = torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))
        out = self.fc(torch.relu(self.b3(self.c3(h))).mean((2, 3)))
        if not self.training:
            return out
        aux = self.aux(h.mean((2, 3)))
        return (out, aux) if self.mode == "tuple" else out + 0.1 * aux


@pytest.mark.parametrize("mode, match", [
    ("tuple", "in training mode the model returns a tuple"),
    ("sum", "the pruned model fails in training mode"),
])
def test_a_head_used_only_in_training_is_a_clear_error_before_training(planted, tmp_path: Path,
                                                                       mode: str, match: str):
    with pytest.raises(ValueError, match=match):
        rlcompress.compress(AuxNet(mode), data=planted, target_size="4500", strategy="greedy",
                            prune_rate=0.5, out=tmp_path / "a", progress=False, threads=1)
    assert not (tmp_path / "a" / "prune").exists()


def test_a_compiled_model_is_compressed_through_the_module_it_wraps(planted, tmp_path: Path):
    torch.manual_seed(0)
    model = PlainNet()
    # nothing is compiled until it runs, and it never does here; DataParallel's prefix goes too
    compiled = torch.compile(nn.DataParallel(model))
    decoded, report = rlcompress.compress(
        compiled, data=planted, target_size="4500", strategy="greedy", prune_epochs=1,
        share_epochs=1, val_images=32, out=tmp_path / "c", progress=False, precision="fp32",
        threads=1)
    assert not any(n.startswith("_orig_mod") for n in decoded.state_dict())
    back = rlcompress.load(report["file"], model=torch.compile(PlainNet()))
    assert isinstance(back, PlainNet) and torch.equal(back.c3.weight, decoded.c3.weight)


def test_int32_labels_from_numpy_train_and_evaluate(tmp_path: Path):
    g = torch.Generator().manual_seed(0)

    def split(n: int) -> DataLoader:
        y = torch.arange(n) % 4
        x = torch.randn(n, 3, 16, 16, generator=g) + y.view(-1, 1, 1, 1)
        return DataLoader(TensorDataset(x, y.int()), batch_size=16)  # cross_entropy takes int64

    torch.manual_seed(0)
    _, report = rlcompress.compress(
        PlainNet(), train_loader=split(64), val_loader=split(32), test_loader=split(32),
        target_size="4500", strategy="greedy", prune_epochs=1, share_epochs=1, val_images=32,
        out=tmp_path / "i", progress=False, precision="fp32", threads=1)
    assert report["file_bytes"] <= 4500 and report["test_top1"] >= 0


def test_compress_with_a_one_shot_allocator(planted, tmp_path: Path):
    torch.manual_seed(0)
    _, report = rlcompress.compress(
        PlainNet(), data=planted, target_size="4500", strategy="greedy", prune_epochs=0,
        share_epochs=0, val_images=32, out=tmp_path / "g", progress=False, precision="fp32",
        threads=1)
    summary = json.loads((tmp_path / "g" / "search" / "summary.json").read_text())
    assert summary["strategy"] == "greedy" and summary["episodes"] == 1
    assert report["file_bytes"] <= 4500
    with pytest.raises(ValueError, match="strateg"):
        rlcompress.compress(PlainNet(), data=planted, target_size="4500", strategy="nope",
                            out=tmp_path / "n", progress=False, threads=1)


@pytest.mark.parametrize("batches, match", [
    ([{"image": torch.randn(4, 3, 8, 8), "label": torch.zeros(4, dtype=torch.long)}], "dicts"),
    ([(torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.long), torch.zeros(4))], "3 items"),
    ([(torch.randn(4, 3, 8, 8).double(), torch.zeros(4, dtype=torch.long))], "float64"),
    ([(torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8), torch.zeros(4))], "uint8"),
    ([(torch.randn(4, 3, 8, 8), torch.zeros(4, 2))], "one integer class index"),
    ([(torch.randn(4, 3, 8, 8), [0, 1, 2, 3])], "of tensors"),
])
def test_loaders_that_do_not_yield_input_label_pairs_are_clear_errors(batches, match):
    good = [(torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))]
    with pytest.raises(ValueError, match=f"validation loader.*{match}"):
        LoaderData(good, batches)
    with pytest.raises(ValueError, match=f"training loader.*{match}"):
        LoaderData(batches, good)


def test_a_one_shot_iterator_is_refused_as_a_loader():
    good = [(torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))]
    with pytest.raises(ValueError, match="validation loader is a one-shot iterator"):
        LoaderData(good, iter(good))
    with pytest.raises(ValueError, match="test loader is a one-shot iterator"):
        LoaderData(good, good, (b for b in good))


def test_the_batch_check_leaves_the_random_stream_alone():
    x, y = torch.randn(64, 3, 4, 4), torch.arange(64) % 4
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    torch.manual_seed(3)
    LoaderData(loader, DataLoader(TensorDataset(x, y), batch_size=16))
    after = torch.rand(3)
    torch.manual_seed(3)
    next(iter(DataLoader(TensorDataset(x, y), batch_size=16)))  # the validation pass alone
    assert torch.equal(after, torch.rand(3))


def test_a_float64_model_is_compressed_as_a_float32_copy(planted, tmp_path: Path):
    torch.manual_seed(0)
    model = PlainNet().double()
    with pytest.warns(UserWarning, match="float64"):
        decoded, report = rlcompress.compress(
            model, data=planted, target_size="4500", strategy="uniform", prune_epochs=0,
            share_epochs=0, val_images=32, out=tmp_path / "d", progress=False, threads=1)
    assert next(model.parameters()).dtype == torch.float64  # the caller's model is untouched
    assert next(decoded.parameters()).dtype == torch.float32 and report["file_bytes"] <= 4500


class TwoHeads(PlainNet):
    """Returns (logits, features), as many user models do."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.relu(self.b1(self.c1(x))).mean((2, 3))
        return self.fc(f), f


class ThreeScores(PlainNet):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 3)


@pytest.mark.parametrize(("model", "match"), [(TwoHeads(), "returns a tuple"),
                                              (ThreeScores(), "3 class scores")])
def test_a_model_whose_output_is_not_class_scores_is_a_clear_error(planted, tmp_path: Path,
                                                                     model: nn.Module, match: str):
    with pytest.raises(ValueError, match=match):
        rlcompress.compress(model, data=planted, target_size="4500", strategy="uniform",
                            out=tmp_path / "o", progress=False, threads=1)
    assert not (tmp_path / "o").exists()  # it fails before any work


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"target_size": None, "target_ratio": 0.0}, "target_ratio must be a number > 0"),
    ({"share_epochs": -1}, "share_epochs must be a whole number"),
    ({"episodes": 2.5}, "episodes must be a whole number"),
    ({"episodes": 0, "strategy": "ddpg"}, "needs at least one episode"),
    ({"out": "file"}, "out must be a folder"),
    ({"target_size": "48 apples"}, "cannot read size"),
])
def test_bad_arguments_fail_before_any_work(planted, tmp_path: Path, kwargs: dict, match: str):
    (tmp_path / "file").write_text("x")
    args = {"target_size": "4500", "strategy": "uniform", "out": "o", "progress": False,
            "threads": 1, **kwargs}
    args["out"] = tmp_path / args["out"]
    with pytest.raises(ValueError, match=match):
        rlcompress.compress(PlainNet(), data=planted, **args)
    assert not (tmp_path / "o").exists()


def test_compress_names_each_stage_as_it_starts(planted, tmp_path: Path, capsys):
    rlcompress.compress(PlainNet(), data=planted, target_size="4500", strategy="uniform",
                        prune_epochs=0, share_epochs=0, val_images=32, out=tmp_path / "o",
                        threads=1)
    heads = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[")]
    assert heads == ["[1/3] prune: FPGM at rate 0.4, 0 fine-tuning epochs",
                     "[2/3] search: k per layer (uniform)",
                     "[3/3] share: clustering, 0 fine-tuning epochs, then the file"]


class UpNet(nn.Module):
    """A transposed conv between two convs: pruning the first conv's filters shrinks its
    input channels (dim 0 of a transposed conv's weight)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.up = nn.ConvTranspose2d(8, 8, 2, stride=2)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.up(torch.relu(self.bn(self.conv(x)))))
        return self.fc(torch.relu(self.down(x)).mean((2, 3)))


def test_a_pruned_transposed_conv_is_recorded_and_loads_back(planted, tmp_path: Path):
    from rlcompress.engine import evaluate_model

    torch.manual_seed(0)
    decoded, report = rlcompress.compress(
        UpNet(), data=planted, target_size="4KB", prune_rate=0.5, strategy="uniform",
        prune_epochs=0, share_epochs=0, val_images=32, out=tmp_path / "u", progress=False,
        threads=1)
    loaded = rlcompress.load(tmp_path / "u" / "model.rlc", model=UpNet())
    with pytest.raises(CodecError, match="name its class"):
        rlcompress.load(tmp_path / "u" / "model.rlc")  # a user model's class is not in the file
    with pytest.raises(CodecError, match="the class the file was made from"):
        rlcompress.load(tmp_path / "u" / "model.rlc", model=PlainNet())
    assert loaded.up.weight.shape[0] == loaded.conv.out_channels == 4  # the file kept the widths
    from rlcompress.codec import inspect_file

    table = inspect_file(tmp_path / "u" / "model.rlc", model=UpNet())
    assert {r["name"] for r in table["layers"]} == set(report["policy"])
    assert evaluate_model(loaded, planted, "test")["top1"] == pytest.approx(report["test_top1"], abs=0.01)


class Scale(nn.Module):
    """A user's own per-channel layer: the pruner shrinks its parameter with its channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(channels) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1)


class ScaleShift(Scale):
    """The same with a per-channel buffer, which the graph library does not shrink."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.register_buffer("shift", torch.rand(channels) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.shift.view(1, -1, 1, 1)


class ActNet(nn.Module):
    def __init__(self, act: nn.Module) -> None:
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 8, 3, padding=1), act
        self.conv2, self.fc = nn.Conv2d(8, 8, 3, padding=1), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(torch.relu(self.act(self.conv(x)))).mean((2, 3)))


def test_a_users_per_channel_module_is_recorded_and_loads_back(planted, tmp_path: Path):
    torch.manual_seed(0)
    decoded, report = rlcompress.compress(
        ActNet(Scale(8)), data=planted, target_size="4KB", prune_rate=0.5, strategy="uniform",
        prune_epochs=0, share_epochs=0, val_images=32, out=tmp_path / "s", progress=False,
        threads=1)
    assert decoded.act.weight.shape == (4,) and report["layers_kept_whole"] == {}
    back = rlcompress.load(report["file"], model=ActNet(Scale(8)))
    got = back.state_dict()
    assert all(torch.equal(got[n], t) for n, t in decoded.state_dict().items())


def test_a_group_whose_buffer_the_graph_misses_is_restored_whole():
    torch.manual_seed(0)
    net, x = ActNet(ScaleShift(8)).eval(), torch.randn(2, 3, 8, 8)
    small, report = prune_groups(net, x, GroupPruneConfig(rate=0.5))
    assert "fails to run" in report.kept_whole["conv"]
    # the bare parameter the graph library did shrink is put back with its group
    assert torch.equal(small.act.weight, net.act.weight) and torch.equal(small.conv.weight, net.conv.weight)
    assert small(x).shape == (2, 4)


def test_a_layer_the_spec_does_not_record_is_refused_right_after_pruning():
    from rlcompress.pipeline.api import _check_rebuild
    from rlcompress.pruning import layer_shapes

    small, _ = prune_groups(ActNet(Scale(8)), torch.zeros(1, 3, 8, 8), GroupPruneConfig(rate=0.5))
    shapes = {n: s for n, s in layer_shapes(small).items() if not n.startswith("act.")}
    with pytest.raises(ValueError, match=r"act \(Scale\).*protect"):
        _check_rebuild(ActNet(Scale(8)), small, {"arch": "user", "shapes": shapes})


@pytest.mark.parametrize("act", ["prelu", "instancenorm"])
def test_per_channel_prelu_and_instance_norm_are_recorded_and_load_back(planted, tmp_path: Path,
                                                                         act: str):
    def make() -> nn.Module:
        return ActNet(nn.PReLU(8) if act == "prelu" else nn.InstanceNorm2d(8, affine=True))

    torch.manual_seed(0)
    decoded, report = rlcompress.compress(
        make(), data=planted, target_size="4KB", prune_rate=0.5, strategy="uniform",
        prune_epochs=0, share_epochs=0, val_images=32, out=tmp_path / "a", progress=False,
        threads=1)
    assert decoded.act.weight.shape == (4,) and decoded.conv.out_channels == 4
    loaded = rlcompress.load(report["file"], model=make()).eval()
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(loaded(x), decoded.eval()(x), rtol=0, atol=1e-6)


def test_compress_refuses_a_folder_made_with_another_model_settings_or_data(planted, tmp_path: Path):
    torch.manual_seed(0)
    model = PlainNet()
    kw = {"data": planted, "strategy": "uniform", "prune_epochs": 0, "share_epochs": 0,
          "val_images": 32, "out": tmp_path / "c", "progress": False, "threads": 1}
    _, first = rlcompress.compress(model, target_size="4500", **kw)
    _, again = rlcompress.compress(model, target_size="4500", **kw)  # resumed, the same file
    assert again["file_bytes"] == first["file_bytes"] and again["policy"] == first["policy"]
    with pytest.raises(ValueError, match="other settings"):  # would have reused the search
        rlcompress.compress(model, target_size="3000", **kw)
    with pytest.raises(ValueError, match="another model"):
        rlcompress.compress(PlainNet(), target_size="4500", **kw)
    with pytest.raises(ValueError, match="other data"):  # would have reused its fine-tunes
        rlcompress.compress(model, target_size="4500", **{**kw, "data": planted_data(seed=1)})
    _, other = rlcompress.compress(model, target_size="3000", **{**kw, "out": tmp_path / "d"})
    assert other["file_bytes"] <= 3000


class SignalNet(nn.Module):
    """A 1-D (e.g. telemetry) or 3-D (volume) CNN: conv-bn-relu twice, pooled, linear."""

    def __init__(self, dims: int = 1) -> None:
        super().__init__()
        conv, bn = {1: (nn.Conv1d, nn.BatchNorm1d), 3: (nn.Conv3d, nn.BatchNorm3d)}[dims]
        self.c1, self.b1 = conv(2, 8, 3, padding=1), bn(8)
        self.c2, self.b2 = conv(8, 16, 3, padding=1), bn(16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))
        return self.fc(x.flatten(2).mean(2))


@pytest.mark.parametrize("dims", [1, 3])
def test_conv1d_and_conv3d_models_are_pruned_clustered_and_load_back(tmp_path: Path, dims: int):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(128) % 4
    x = torch.randn(128, 2, *(6,) * dims, generator=g) + y.view(-1, *(1,) * (dims + 1)) * 0.5
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    torch.manual_seed(0)
    model = SignalNet(dims)
    decoded, report = rlcompress.compress(
        model, loader, loader, target_size="2KB", strategy="uniform", prune_epochs=1,
        share_epochs=1, val_images=64, out=tmp_path / "s", progress=False, threads=1)
    assert report["file_bytes"] <= 2000 and set(report["policy"]) == {"c1", "c2", "fc"}
    assert decoded.c1.out_channels < 8 and len(decoded.c2.codebook) <= report["policy"]["c2"]
    again = rlcompress.load(report["file"], model=SignalNet(dims)).eval()
    torch.testing.assert_close(again(x[:8]), decoded.eval()(x[:8]), rtol=0, atol=1e-6)
