from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CLASSES, make_tar, write_image_tree
from rlcompress.data import (
    BatchLoader,
    DataConfig,
    DatasetError,
    download_cifar10,
    load_data,
    random_crop_flip,
    read_image_archive,
    read_image_folder,
    read_pickle_batches,
    stratified_split,
    to_model_input,
)
from rlcompress.data.sources import md5sum


def test_image_folder_and_archive_agree(image_tree: Path, tmp_path: Path):
    a = read_image_folder(image_tree, progress=False)
    b = read_image_archive(make_tar(image_tree, tmp_path / "t.tar.gz"), progress=False)
    assert a.classes == b.classes == sorted(CLASSES)
    assert a.train.images.shape == (12, 32, 32, 3) and a.train.images.dtype == np.uint8
    np.testing.assert_array_equal(a.train.images, b.train.images)
    np.testing.assert_array_equal(a.test.labels, b.test.labels)
    assert np.bincount(a.train.labels).tolist() == [4, 4, 4]


def test_pickle_batches_layout(pickle_dir: Path):
    raw = read_pickle_batches(pickle_dir)
    assert raw.train.images.shape == (30, 32, 32, 3)
    assert raw.test.images.shape == (6, 32, 32, 3)
    assert raw.classes[0] == "airplane" and len(raw.classes) == 10
    # the channel-planar rows of the batch must come back as HWC pixels
    import pickle

    with open(pickle_dir / "test_batch", "rb") as f:
        row = pickle.load(f, encoding="bytes")[b"data"][0]
    np.testing.assert_array_equal(raw.test.images[0][..., 0].ravel(), row[:1024])


def test_pickle_refuses_foreign_objects(pickle_dir: Path):
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(pickle_dir / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DatasetError, match="refusing to unpickle"):
        read_pickle_batches(pickle_dir)


def test_load_data_caches_and_splits(image_tar: Path, tmp_path: Path):
    cfg = DataConfig(source=str(image_tar), data_dir=str(tmp_path / "d"), val_size=3)
    first = load_data(cfg, progress=False)
    assert len(first.train) == 9 and len(first.val) == 3 and len(first.test) == 12
    assert torch.bincount(first.val.labels).tolist() == [1, 1, 1]
    assert list((tmp_path / "d" / "cache").glob("*.safetensors"))
    again = load_data(cfg, progress=False)  # from the cache
    assert torch.equal(first.train.images, again.train.images)


def test_training_split_never_holds_a_validation_or_test_image(image_tar: Path, tmp_path: Path):
    data = load_data(DataConfig(source=str(image_tar), data_dir=str(tmp_path / "d"), val_size=3),
                     progress=False)

    def keys(split):
        return {bytes(img.numpy().tobytes()) for img in split.images}

    train, val, test = keys(data.train), keys(data.val), keys(data.test)
    # the random images are all distinct, so equal bytes would mean the same image
    assert len(train) == len(data.train) and len(val) == len(data.val)
    assert not train & val and not train & test and not val & test
    assert len(train) + len(val) == 12  # train + val is exactly the original training set


def test_stratified_split_deterministic():
    labels = np.repeat(np.arange(10), 500)
    tr1, va1 = stratified_split(labels, 500, seed=3)
    tr2, va2 = stratified_split(labels, 500, seed=3)
    _, va3 = stratified_split(labels, 500, seed=4)
    assert np.array_equal(va1, va2) and np.array_equal(tr1, tr2)
    assert not np.array_equal(va1, va3)
    assert np.bincount(labels[va1]).tolist() == [50] * 10
    assert len(np.intersect1d(tr1, va1)) == 0 and len(tr1) + len(va1) == 5000


def test_stratified_split_uneven_classes():
    labels = np.array([0] * 70 + [1] * 20 + [2] * 10)
    _, va = stratified_split(labels, 10, seed=0)
    assert len(va) == 10 and np.bincount(labels[va]).tolist() == [7, 2, 1]


def test_missing_source(tmp_path: Path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_data(DataConfig(source=str(tmp_path / "nope")), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="train/"):
        read_image_folder(tmp_path / "empty")


def test_truncated_archive(image_tar: Path, tmp_path: Path):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(image_tar.read_bytes()[: image_tar.stat().st_size // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        read_image_archive(cut, progress=False)


def test_corrupt_archive(tmp_path: Path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4)
    with pytest.raises(DatasetError):
        read_image_archive(bad, progress=False)


def test_wrong_image_size(tmp_path: Path):
    tree = write_image_tree(tmp_path / "t", size=24)
    with pytest.raises(DatasetError, match="expected 32x32"):
        read_image_folder(tree, progress=False)


def test_empty_class(image_tree: Path):
    shutil.rmtree(image_tree / "train" / "dog")
    (image_tree / "train" / "dog").mkdir()
    with pytest.raises(DatasetError, match="has no images"):
        read_image_folder(image_tree, progress=False)


def test_corrupt_image(image_tree: Path):
    (image_tree / "test" / "cat" / "0000.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="cannot decode"):
        read_image_folder(image_tree, progress=False)


def test_download_checks_md5(tmp_path: Path):
    payload = tmp_path / "src" / "cifar-10-python.tar.gz"
    payload.parent.mkdir()
    payload.write_bytes(b"pretend archive")
    url = payload.as_uri()
    with pytest.raises(DatasetError, match="checksum mismatch"):
        download_cifar10(tmp_path / "dl", url=url, md5="0" * 32, progress=False)
    got = download_cifar10(tmp_path / "dl2", url=url, md5=md5sum(payload), progress=False)
    assert got.read_bytes() == b"pretend archive"


def test_download_failure_is_clear(tmp_path: Path):
    with pytest.raises(DatasetError, match="cannot download"):
        download_cifar10(tmp_path, url=(tmp_path / "absent.tar.gz").as_uri(), progress=False)


def test_crop_flip_shapes_and_content():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 8 * 8 * 3, dtype=torch.uint8).view(2, 8, 8, 3)
    out = random_crop_flip(x, padding=2, flip=True, generator=g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    # with no padding and no flip the batch is unchanged
    assert torch.equal(random_crop_flip(x, 0, False, g), x)
    # every output pixel is either padding (0) or a pixel of the same image
    for i in range(2):
        vals = set(out[i].flatten().tolist())
        assert vals <= set(x[i].flatten().tolist()) | {0}


def test_cutout_zeroes_one_clipped_square_per_image():
    from rlcompress.data.loader import cutout

    x = torch.ones(64, 3, 8, 8)
    out = cutout(x, 4, torch.Generator().manual_seed(0))
    holes = out[:, 0] == 0
    assert torch.equal(holes, (out == 0).all(1))  # every channel of a pixel alike
    for i in range(64):
        ys, xs = holes[i].nonzero(as_tuple=True)
        assert 1 <= len(ys) <= 16  # a 4 x 4 square, smaller where the border clips it
        assert len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # a rectangle
    assert (holes.sum((1, 2)) == 16).any() and (holes.sum((1, 2)) < 16).any()
    again = cutout(x, 4, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_normalisation():
    x = torch.full((1, 2, 2, 3), 255, dtype=torch.uint8)
    y = to_model_input(x, (0.5, 0.5, 0.5), (0.5, 0.25, 0.5))
    assert y.shape == (1, 3, 2, 2)
    assert torch.allclose(y[0, :, 0, 0], torch.tensor([1.0, 2.0, 1.0]))


def test_loader_epoch_determinism(planted):
    loader = BatchLoader(planted.train, 32, planted.mean, planted.std, shuffle=True, augment=True)
    loader.set_epoch(2)
    a = [x for x, _ in loader]
    loader.set_epoch(3)
    b = [x for x, _ in loader]
    loader.set_epoch(2)
    c = [x for x, _ in loader]
    assert all(torch.equal(p, q) for p, q in zip(a, c, strict=True))
    assert not torch.equal(a[0], b[0])
    assert len(loader) == 8


def _device_batches(data, device: str | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = BatchLoader(data.train, 32, data.mean, data.std, shuffle=True, augment=True,
                         cutout=8, seed=3, device=device)
    loader.set_epoch(2)
    return [(x.cpu(), y.cpu()) for x, y in loader]


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")),
])
def test_loader_on_a_device_makes_the_same_batches(planted, device: str):
    """Batches assembled on a device (the images moved there once) equal the CPU's: the same
    order, crops, flips and Cutout squares, the same labels."""
    here, there = _device_batches(planted, None), _device_batches(planted, device)
    assert len(here) == len(there) > 1
    for (xa, ya), (xb, yb) in zip(here, there, strict=True):
        assert torch.equal(ya, yb)
        assert torch.allclose(xa, xb, atol=1e-5)


def test_tar_with_prefix_dir(image_tree: Path, tmp_path: Path):
    archive = tmp_path / "prefixed.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(image_tree, arcname="cifar10")
    raw = read_image_archive(archive, progress=False)
    assert len(raw.train.labels) == 12


@pytest.mark.parametrize("bad_name", ["../evil/train/cat/x.png", "/abs/train/cat/x.png"])
def test_tar_member_names_escaping_are_refused(image_tree: Path, tmp_path: Path, bad_name: str):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(image_tree, arcname="cifar10")
        info = tarfile.TarInfo(bad_name)
        data = (image_tree / "test" / "cat" / "0000.png").read_bytes()
        info.size = len(data)
        import io

        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DatasetError, match="absolute or contains '..'"):
        read_image_archive(archive, progress=False)


def test_tar_member_size_is_bounded(image_tar: Path, monkeypatch):
    import rlcompress.data.sources as sources

    monkeypatch.setattr(sources, "MAX_MEMBER_BYTES", 64)
    with pytest.raises(DatasetError, match="more than the 64-byte limit"):
        read_image_archive(image_tar, progress=False)


@pytest.mark.parametrize("limit", [300, 1000])  # error above 2x the limit, PIL warns between
def test_decompression_bomb_is_a_dataset_error(image_tree: Path, monkeypatch, limit: int):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(DatasetError, match="cannot decode"):
        read_image_folder(image_tree, progress=False)


def test_devdata_keeps_every_training_image_and_the_splits(image_tar: Path, tmp_path: Path):
    from conftest import load_benchmark

    devdata = load_benchmark("devdata", "scripts")
    small = tmp_path / "small.tar.xz"
    devdata.pack(image_tar, small, test_per_class=1)
    with tarfile.open(image_tar) as a, tarfile.open(small) as b:
        full = [m.name for m in a if m.isfile()]
        kept = [m.name for m in b if m.isfile()]
    train = [n for n in full if n.startswith("train/")]
    assert [n for n in kept if n.startswith("train/")] == train  # all, in the same order
    classes = {n.split("/")[1] for n in full if n.startswith("test/")}
    assert sorted(n.split("/")[1] for n in kept if n.startswith("test/")) == sorted(classes)
    assert devdata.split_hashes(image_tar, 3) == devdata.split_hashes(small, 3)


def test_data_digest_follows_the_data_and_reads_loaders_alike_twice(planted):
    from torch.utils.data import DataLoader, TensorDataset

    from conftest import planted_data
    from rlcompress.data import LoaderData, data_digest

    assert data_digest(planted) == data_digest(planted_data())
    changed = planted_data()
    changed.val.images[3, 0, 0, 0] ^= 1  # one bit of one validation pixel
    assert data_digest(changed) != data_digest(planted)
    assert data_digest(planted_data(seed=1)) != data_digest(planted)

    def loaders(shift: float = 0.0) -> LoaderData:
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(40, 3, 8, 8, generator=g) + shift, torch.arange(40) % 4
        ds = TensorDataset(x, y)
        # a shuffling validation loader yields the same order under the digest's seeded pass
        return LoaderData(DataLoader(ds, batch_size=8, shuffle=True),
                          DataLoader(ds, batch_size=8, shuffle=True), DataLoader(ds, batch_size=8))

    first = data_digest(loaders())
    torch.manual_seed(123)  # the caller's RNG state does not matter
    assert data_digest(loaders()) == first
    assert data_digest(loaders(shift=0.5)) != first
