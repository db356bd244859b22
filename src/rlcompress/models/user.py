"""A user's own model class named on the command line: ``pkg.module:Class`` or
``path/to/file.py:Class``, built with keyword arguments given as JSON.

A compressed file holds a user model's weights and layer widths, not its code (the file is data,
and loading it must never run code it names), so the command line gets the class from the
user, the way ``rlcompress.load(path, model=MyNet())`` does in Python.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

from torch import nn


def is_class_ref(text: str) -> bool:
    """Whether ``text`` names a class as ``module:Class`` or ``file.py:Class`` (and is not an
    existing file or a registered model name)."""
    head, sep, tail = text.rpartition(":")
    return bool(sep and head and tail.isidentifier() and not Path(text).exists())


def _module(head: str) -> object:
    if head.endswith(".py"):
        path = Path(head)
        if not path.is_file():
            raise ValueError(f"{head}: no such Python file")
        name = f"rlcompress_user_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look the module up by name
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(head)
    except ImportError as exc:
        raise ValueError(f"cannot import {head!r} ({exc}); give a module on the Python path or "
                         "a file, e.g. nets.py:MyNet") from exc


def parse_class_args(text: str | dict | None) -> dict:
    """``--class-args`` as a dict: JSON text such as ``'{"num_classes": 10}'``, or empty."""
    if not text:
        return {}
    if isinstance(text, dict):
        return text
    try:
        args = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--class-args must be a JSON object, got {text!r} ({exc.msg})") from exc
    if not isinstance(args, dict):
        raise ValueError(f"--class-args must be a JSON object, got {text!r}")
    return args


def import_model(ref: str, kwargs: str | dict | None = None) -> nn.Module:
    """A fresh instance of the class (or factory function) ``ref`` names, called with
    ``kwargs``; a clear ``ValueError`` for every way the reference can be wrong."""
    head, _, attr = ref.rpartition(":")
    if not head or not attr:
        raise ValueError(f"{ref!r}: name a class as module:Class or file.py:Class")
    obj = getattr(_module(head), attr, None)
    if obj is None:
        raise ValueError(f"{head} has no {attr!r}")
    if not callable(obj):
        raise ValueError(f"{ref} is not a class or function")
    args = parse_class_args(kwargs)
    try:
        model = obj(**args)
    except TypeError as exc:
        raise ValueError(f"{ref}(**{args}) failed: {exc}; pass its arguments with --class-args") from exc
    if not isinstance(model, nn.Module):
        raise ValueError(f"{ref} built a {type(model).__name__}, not a torch.nn.Module")
    return model
