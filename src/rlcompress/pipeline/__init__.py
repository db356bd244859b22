"""The whole method end to end: the library API (``compress``, ``load``)."""

from rlcompress.pipeline.api import compress, load
from rlcompress.pipeline.run import PipelineConfig, format_report, run_pipeline

__all__ = ["PipelineConfig", "compress", "format_report", "load", "run_pipeline"]
