"""Counting selective-scan FLOPs the way the field does: 9·B·L·D·N (+ B·D·L for D, + B·D·L for z).

``torch.utils.flop_counter`` counts matrix products and convolutions but nothing inside a scan (and would
count the chunked backend's own matmuls, which are an implementation detail). While
:func:`count_scan_flops` is active, every ``selective_scan`` call adds its formula count to the tally.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class ScanFlopTally:
    flops: int = 0
    calls: int = 0


_ACTIVE: list[ScanFlopTally] = []


def selective_scan_flops(batch: int, dim: int, length: int, d_state: int, *, with_d: bool, with_z: bool) -> int:
    """FLOPs of one selective scan by the formula of mamba-ssm issue #110 (used by VMamba's fvcore counts)."""
    flops = 9 * batch * length * dim * d_state
    if with_d:
        flops += batch * dim * length
    if with_z:
        flops += batch * dim * length
    return flops


def record_scan(batch: int, dim: int, length: int, d_state: int, *, with_d: bool, with_z: bool) -> None:
    if not _ACTIVE:
        return
    flops = selective_scan_flops(batch, dim, length, d_state, with_d=with_d, with_z=with_z)
    for tally in _ACTIVE:
        tally.flops += flops
        tally.calls += 1


@contextmanager
def count_scan_flops() -> Iterator[ScanFlopTally]:
    tally = ScanFlopTally()
    _ACTIVE.append(tally)
    try:
        yield tally
    finally:
        _ACTIVE.remove(tally)
