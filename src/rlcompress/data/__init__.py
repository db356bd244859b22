"""Datasets: finding, decoding, caching, splitting and batching images."""

from rlcompress.data.dataset import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataConfig,
    ImageData,
    SplitData,
    describe,
    load_data,
    load_raw,
    resolve_source,
    stratified_split,
)
from rlcompress.data.digest import data_digest
from rlcompress.data.loader import BatchLoader, random_crop_flip, to_model_input
from rlcompress.data.loaders import EpochSeeded, LoaderData
from rlcompress.data.sources import (
    CIFAR10_CLASSES,
    DatasetError,
    download_cifar10,
    read_image_archive,
    read_image_folder,
    read_pickle_archive,
    read_pickle_batches,
)

__all__ = [
    "CIFAR10_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BatchLoader",
    "DataConfig",
    "DatasetError",
    "EpochSeeded",
    "LoaderData",
    "ImageData",
    "SplitData",
    "data_digest",
    "describe",
    "download_cifar10",
    "load_data",
    "load_raw",
    "random_crop_flip",
    "read_image_archive",
    "read_image_folder",
    "read_pickle_archive",
    "read_pickle_batches",
    "resolve_source",
    "stratified_split",
    "to_model_input",
]
