"""A short fingerprint of a dataset, so that work resumed from a folder is known to be work on
the same data."""

from __future__ import annotations

import hashlib

import torch

from rlcompress.data.dataset import ImageData
from rlcompress.data.loaders import LoaderData, _seeded


def _feed(h: hashlib.blake2b, t: torch.Tensor) -> None:
    t = t.detach().cpu()
    if t.is_floating_point():  # NumPy has no bfloat16
        t = t.float()
    h.update(str(tuple(t.shape)).encode())
    h.update(t.contiguous().numpy().tobytes())


def data_digest(data: ImageData | LoaderData) -> str:
    """16 hex digits that change with the data a model is compressed on.

    In-memory splits (:class:`ImageData`) are hashed whole: every image, label, class name and
    the normalisation (CIFAR-10's 60,000 images take a fraction of a second). A user's loaders
    (:class:`LoaderData`) are hashed by what can be read twice alike: every label of one seeded
    pass over the validation loader and its first batch of inputs, the test loader's first
    batch, and the training loader's length; its contents are not read, since a training
    loader shuffles and augments with whatever random source it likes.
    """
    h = hashlib.blake2b(digest_size=8)
    if isinstance(data, ImageData):
        for split in (data.train, data.val, data.test):
            _feed(h, split.images)
            _feed(h, split.labels)
        h.update(repr((list(data.classes), tuple(data.mean), tuple(data.std))).encode())
        return h.hexdigest()
    for i, (x, y) in enumerate(_seeded(data.val_loader, 0)):
        if i == 0:
            _feed(h, x)
        _feed(h, y)
    if data.test_loader is not None:
        x, y = next(iter(_seeded(data.test_loader, 0)))
        _feed(h, x)
        _feed(h, y)
    train_len = len(data.train_loader) if hasattr(data.train_loader, "__len__") else None
    h.update(repr(train_len).encode())
    return h.hexdigest()
