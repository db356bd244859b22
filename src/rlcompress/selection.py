"""Model selection on the validation split: one helper so every table, frontier and plot picks
its rows the same way (the test split never selects anything)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable


def best_by_validation(rows: Iterable[dict], key: Callable[[dict], Hashable],
                       metric: str = "val_top1") -> dict[Hashable, dict]:
    """Per ``key(row)``, the row with the highest ``metric`` (the first one on ties), e.g. the
    best learning rate of each (tool, method, bits, epochs)."""
    best: dict[Hashable, dict] = {}
    for r in rows:
        k = key(r)
        if k not in best or r[metric] > best[k][metric]:
            best[k] = r
    return best
