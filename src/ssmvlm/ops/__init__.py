"""Selective-scan and cross-scan operators that run everywhere from a plain ``pip install``."""

from ssmvlm.ops.cross_scan import cross_merge, cross_scan
from ssmvlm.ops.low_rank_delta import LowRankDelta
from ssmvlm.ops.mirrored_rows import MirroredRows
from ssmvlm.ops.selective_scan import available_backends, selective_scan

__all__ = ["LowRankDelta", "MirroredRows", "available_backends", "cross_merge", "cross_scan", "selective_scan"]
