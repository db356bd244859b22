"""Up-front validation of configuration values, so bad input fails before any work starts.

Every config dataclass calls :func:`check_fields` from ``__post_init__``; the CLI builds its
configs from the arguments first, so a negative ``--epochs`` is a one-line error at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def check_fields(cfg: object, *, ge0: Iterable[str] = (), ge1: Iterable[str] = (),
                 unit: Iterable[str] = (), choices: dict[str, Iterable[object]] | None = None) -> None:
    """Raise ``ValueError`` naming the field if a value is out of range.

    ``ge0``: finite and >= 0; ``ge1``: >= 1; ``unit``: in [0, 1]; ``choices``: one of a set.
    """
    name = type(cfg).__name__
    for f in ge0:
        v = getattr(cfg, f)
        if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name}.{f} must be a finite number >= 0, got {v!r}")
    for f in ge1:
        v = getattr(cfg, f)
        if not (isinstance(v, int | float) and math.isfinite(v) and v >= 1):
            raise ValueError(f"{name}.{f} must be >= 1, got {v!r}")
    for f in unit:
        v = getattr(cfg, f)
        if not (isinstance(v, int | float) and 0 <= v <= 1):
            raise ValueError(f"{name}.{f} must be in [0, 1], got {v!r}")
    for f, allowed in (choices or {}).items():
        allowed = list(allowed)
        if getattr(cfg, f) not in allowed:
            raise ValueError(f"{name}.{f} must be one of {allowed}, got {getattr(cfg, f)!r}")
