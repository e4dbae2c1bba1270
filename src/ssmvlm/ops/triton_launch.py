"""Launching a Triton kernel through its compiled form, keyed by the launch's specialization.

A launch by ``kernel[grid](...)`` binds and specializes every argument and builds a cache key, then Triton's
compiled launcher asks the driver about every tensor's pointer (``cuPointerGetAttribute``): 44 µs of host time
per launch of the scan's forward kernel (16 tensors, 11 integers) on a lent H100's host, where this module takes
31 µs (benchmarks/RESULTS.md); a scan's forward+backward at 1024² is two such launches around ~0.5 ms of GPU time.
:class:`CachedLaunch` keys a launch by what Triton specializes a compiled kernel on — each tensor's dtype and
16-byte alignment, each integer's range, divisibility by 16 and equality to one (a float is always fp32), the
constexprs, the warps and the device — lets Triton compile (and launch) the first launch of a key, and afterwards
calls that compiled kernel with the tensors' addresses and the constexprs in its signature's order. A tensor's
device is part of the key, so one on the CPU still reaches Triton's check and its error. Launches with arguments
of other kinds, launches while torch.compile traces, and every launch under Triton's interpreter (which has no
compiled form) take Triton's usual path.
"""

from __future__ import annotations

from typing import Any

import torch
from triton.compiler import CompiledKernel
from triton.runtime import JITFunction

_INT32 = range(-(1 << 31), 1 << 31)


def _keyed(args: tuple) -> tuple[list, list] | None:
    """The arguments' specialization and what the compiled kernel takes for them (None: a kind not keyed here)."""
    key, launch_args = [], []
    for arg in args:
        if isinstance(arg, torch.Tensor):
            address = arg.data_ptr()
            key.append((arg.dtype, arg.get_device(), address % 16 == 0))
            launch_args.append(address)
        elif isinstance(arg, int) and not isinstance(arg, bool):
            key.append((arg == 1, arg % 16 == 0, arg in _INT32, arg >= 1 << 63))
            launch_args.append(arg)
        elif isinstance(arg, float):  # always an fp32 argument, whatever its value
            key.append(float)
            launch_args.append(arg)
        else:
            return None
    return key, launch_args


class CachedLaunch:
    """``CachedLaunch(kernel)(grid, *args, num_warps=w, **constexprs)`` launches as ``kernel[grid](...)`` does,
    with runtime arguments positional and constexprs by keyword."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self._compiles = isinstance(kernel, JITFunction)  # not under the interpreter
        self._compiled: dict[tuple, tuple[CompiledKernel, tuple]] = {}

    def __call__(self, grid: tuple[int, ...], *args: Any, num_warps: int, **constexprs: Any) -> None:
        # torch.compile traces Triton's own launch (a data_ptr would break its graph)
        keyed = _keyed(args) if self._compiles and not torch.compiler.is_compiling() else None
        if keyed is None:
            self.kernel[grid](*args, num_warps=num_warps, **constexprs)
            return
        specialization, launch_args = keyed
        key = (torch.cuda.current_device(), num_warps, *specialization, *constexprs.items())
        entry = self._compiled.get(key)
        if entry is None:
            compiled = self.kernel[grid](*args, num_warps=num_warps, **constexprs)
            if isinstance(compiled, CompiledKernel):
                names = self.kernel.arg_names[len(args):]
                self._compiled[key] = compiled, tuple(constexprs[name] for name in names)
            return
        compiled, constexpr_values = entry
        compiled[(*grid, 1, 1)[:3]](*launch_args, *constexpr_values)  # the compiled kernel's launcher takes 3 dims
