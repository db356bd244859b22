"""The whole method end to end: the library API (``compress``, ``load``)."""

from rlcompress.pipeline.api import compress, load

__all__ = ["compress", "load"]
