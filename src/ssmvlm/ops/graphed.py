"""A frozen module's inference replayed from CUDA graphs: no launch gaps at small batches, and no user action.

An encoder's batch-1 forward is hundreds of short kernels; launched one by one from Python, its time is the
host's launch time (VMamba-S at 224² on an H100: about 22 ms eager against about 3 ms replayed from a graph).
:class:`GraphedInference` runs ``module(x)`` and, from the second call with an input signature on, replays a CUDA
graph of that call instead. What keeps it transparent:

- only where a graph can be right: a CUDA input of at most ``max_input_elements`` elements (larger inputs are
  not launch-bound, and a graph keeps its forward's activations allocated), gradients off, the module in eval
  mode, not while ``torch.compile`` traces or another capture runs;
- a signature is the input's shape, dtype and device, and the autocast state; the module and the addresses of
  its weights and buffers are checked on every call: a new module, weights moved (``.to()``), or parameters
  registered anywhere since (``load_state_dict(assign=True)``, a rebuilt submodule) drop every graph. Weights
  updated in place are read by the replays;
- a graph is captured on a signature's second call (the first compiles kernels and picks algorithms), replayed
  at once, and kept only if its output matches the eager output of the same input; a capture that fails, or
  a replay that does not match, leaves that signature eager for good, with one warning;
- the output is a copy (a replay overwrites the graph's own), and the caller's input is copied in;
- at most ``max_graphs`` graphs, the least recently used dropped first.

The module's forward must depend on nothing but its input's signature and its weights (no data-dependent host
branches, no settings changed between calls); after changing a setting, call :meth:`GraphedInference.clear`.
``SSMVLM_CUDA_GRAPHS=0`` in the environment turns it off wherever it is built with ``enabled=None``.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules import module as module_hooks

ENV_SWITCH = "SSMVLM_CUDA_GRAPHS"
MAX_INPUT_ELEMENTS = 3 * 2048 * 2048  # one 2048² image; larger ones keep the GPU busy, and a graph holds its memory
_registrations = [0]  # parameters, buffers and submodules registered in this process so far


def _count_registration(*_: object) -> None:
    # Modules made while torch.compile traces (a ModuleList slice, say) are transient; counting them would make
    # the counter a guard that fails on every call, so the compiled module would recompile each time.
    if not torch.compiler.is_compiling():
        _registrations[0] += 1


module_hooks.register_module_parameter_registration_hook(_count_registration)
module_hooks.register_module_buffer_registration_hook(_count_registration)
module_hooks.register_module_module_registration_hook(_count_registration)

Signature = tuple[tuple[int, ...], torch.dtype, torch.device, bool, torch.dtype]


def graphs_enabled_by_env() -> bool:
    """False when ``SSMVLM_CUDA_GRAPHS`` is 0, false, off or no."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in {"0", "false", "off", "no"}


@dataclass
class CapturedCall:
    """One captured ``module(static_input)``: copy the input in, replay, copy the output out."""

    graph: torch.cuda.CUDAGraph
    static_input: torch.Tensor
    static_output: torch.Tensor

    def replay(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            self.static_input.copy_(x)
            self.graph.replay()
        return self.static_output.clone()


def capture_call(module: nn.Module, x: torch.Tensor, autocast: tuple[bool, torch.dtype]) -> CapturedCall:
    """``module(x)`` recorded into a CUDA graph (its memory in the graph's own pool), under the caller's autocast
    state with autocast's weight cache off (cached casts made outside the capture would be freed under it). Only
    this thread's unsafe calls break the capture: another thread's CUDA work (a loader's pinned copies) goes on."""
    enabled, dtype = autocast
    static_input = x.clone()
    graph = torch.cuda.CUDAGraph()
    with (
        torch.inference_mode(),
        torch.autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=False),
        torch.cuda.graph(graph, capture_error_mode="thread_local"),
    ):
        static_output = module(static_input)
    if not isinstance(static_output, torch.Tensor):
        raise TypeError(f"the module returned {type(static_output).__name__}, not a tensor")
    return CapturedCall(graph, static_input, static_output)


class GraphedInference:
    """``graphs(module, x)``: ``module(x)``, replayed from a CUDA graph where that is safe (module docstring)."""

    device_types: Sequence[str] = ("cuda",)

    def __init__(
        self,
        *,
        enabled: bool | None = None,
        max_graphs: int = 4,
        max_input_elements: int = MAX_INPUT_ELEMENTS,
        tolerance: float = 1e-2,
    ) -> None:
        self.enabled = graphs_enabled_by_env() if enabled is None else enabled
        self.max_graphs = max_graphs
        self.max_input_elements = max_input_elements
        self.tolerance = tolerance
        self.counts: Counter[str] = Counter()  # eager, captured, replayed, rejected
        self._graphs: OrderedDict[Signature, CapturedCall] = OrderedDict()
        self._seen: set[Signature] = set()
        self._eager: set[Signature] = set()
        self._module: nn.Module | None = None
        self._weights: list[torch.Tensor] = []
        self._addresses: tuple[int, ...] = ()
        self._registrations = -1

    def __call__(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not self._eligible(module, x):
            self.counts["eager"] += 1
            return module(x)
        self._check_weights(module)
        signature = self._signature(x)
        captured = self._graphs.get(signature)
        if captured is not None:
            self._graphs.move_to_end(signature)
            self.counts["replayed"] += 1
            return captured.replay(x)
        if signature in self._eager or signature not in self._seen:
            self._seen.add(signature)
            self.counts["eager"] += 1
            return module(x)
        return self._capture_checked(module, x, signature)

    def clear(self) -> None:
        """Drop every graph and what was learnt about signatures (after a change the weights' check cannot see)."""
        self._graphs.clear()
        self._seen.clear()
        self._eager.clear()

    def _eligible(self, module: nn.Module, x: torch.Tensor) -> bool:
        return (
            self.enabled
            and x.device.type in self.device_types
            and x.numel() <= self.max_input_elements
            and not torch.is_grad_enabled()
            and not module.training
            and not torch.compiler.is_compiling()
            and not (x.is_cuda and torch.cuda.is_current_stream_capturing())
        )

    @staticmethod
    def _signature(x: torch.Tensor) -> Signature:
        device = x.device.type
        return (tuple(x.shape), x.dtype, x.device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))

    def _check_weights(self, module: nn.Module) -> None:
        """Drop every graph when the module or its weights' addresses changed since the last call."""
        if (
            module is self._module
            and self._registrations == _registrations[0]
            and tuple(map(torch.Tensor.data_ptr, self._weights)) == self._addresses
        ):
            return
        weights = [*module.parameters(), *module.buffers()]
        addresses = tuple(map(torch.Tensor.data_ptr, weights))
        if module is not self._module or addresses != self._addresses:
            self.clear()
        self._module, self._weights, self._addresses = module, weights, addresses
        self._registrations = _registrations[0]

    def _capture(self, module: nn.Module, x: torch.Tensor, autocast: tuple[bool, torch.dtype]) -> CapturedCall:
        return capture_call(module, x, autocast)

    def _capture_checked(self, module: nn.Module, x: torch.Tensor, signature: Signature) -> torch.Tensor:
        """The eager answer; a graph of the same call kept if its replay gives that answer."""
        expected = module(x)
        self.counts["eager"] += 1
        reason = None
        try:
            captured = self._capture(module, x, signature[3:])
            error = _relative_error(captured.replay(x), expected)
            if not error <= self.tolerance:
                reason = f"its replay differs from the eager output (relative error {error:.2e})"
        except Exception as exc:  # a forward that cannot be captured runs eagerly; the reason is reported
            reason = f"capture failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if reason is not None:
            self._eager.add(signature)
            self.counts["rejected"] += 1
            warnings.warn(
                f"{type(module).__name__} on {tuple(x.shape)} {x.dtype}: not replayed from a CUDA graph, {reason}; "
                "it runs eagerly",
                RuntimeWarning,
                stacklevel=3,
            )
            return expected
        self._graphs[signature] = captured
        self.counts["captured"] += 1
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        return expected


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    if got.shape != expected.shape:
        return float("inf")
    reference = expected.double()
    return float((got.double() - reference).norm() / reference.norm().clamp_min(1e-30))
