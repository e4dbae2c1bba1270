"""CachedLaunch: which launches reuse a compiled kernel, and with what arguments (fakes stand in for Triton's
kernel and compiled kernel: launching needs a GPU)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")
from triton.compiler import CompiledKernel
from triton.runtime import JITFunction

from ssmvlm.ops.triton_launch import CachedLaunch


class FakeCompiled(CompiledKernel):
    def __init__(self, launches: list) -> None:  # Triton's reads a compiled module from its cache
        self.launches = launches
        self.module = None  # what Triton's __del__ unloads

    def __getitem__(self, grid):
        return lambda *args: self.launches.append(("compiled", self, grid, args))


class FakeKernel(JITFunction):
    """A kernel ``(x_ptr, n, BLOCK: constexpr, FLAG: constexpr)`` whose launches are recorded."""

    def __init__(self) -> None:  # Triton's parses a Python function's source
        self.arg_names = ["x_ptr", "n", "BLOCK", "FLAG"]
        self.launches: list = []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append(("triton", grid, args, kwargs))
            return FakeCompiled(self.launches)

        return launch


@pytest.fixture(autouse=True)
def one_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_second_launch_calls_the_compiled_kernel_with_constexprs_in_signature_order() -> None:
    kernel = FakeKernel()
    launch = CachedLaunch(kernel)
    x = torch.zeros(64)
    launch((2, 1), x, 48, num_warps=4, FLAG=True, BLOCK=16)
    launch((3, 1), x, 32, num_warps=4, FLAG=True, BLOCK=16)
    (first, second) = kernel.launches
    assert first == ("triton", (2, 1), (x, 48), {"num_warps": 4, "FLAG": True, "BLOCK": 16})
    kind, compiled, grid, args = second
    # tensors go as their addresses (Triton's launcher then asks the driver nothing about them)
    assert (kind, grid, args) == ("compiled", (3, 1, 1), (x.data_ptr(), 32, 16, True))
    assert isinstance(compiled, FakeCompiled)


@pytest.mark.parametrize("change", ["dtype", "alignment", "divisible by 16", "equal to one", "int64", "constexpr",
                                    "warps", "device"])
def test_a_change_triton_specializes_on_compiles_again(change: str, monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = FakeKernel()
    launch = CachedLaunch(kernel)
    x = torch.zeros(64)
    args, options = [x, 48], {"num_warps": 4, "BLOCK": 16, "FLAG": True}
    launch((1,), *args, **options)
    if change == "dtype":
        args[0] = x.double()
    elif change == "alignment":
        args[0] = x[1:]
    elif change == "divisible by 16":
        args[1] = 40
    elif change == "equal to one":
        args[1] = 1
    elif change == "int64":
        args[1] = 48 << 32
    elif change == "constexpr":
        options["BLOCK"] = 32
    elif change == "warps":
        options["num_warps"] = 8
    else:
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    launch((1,), *args, **options)
    assert [entry[0] for entry in kernel.launches] == ["triton", "triton"]
    launch((1,), *args, **options)
    assert kernel.launches[-1][0] == "compiled"


def test_a_floats_value_is_not_specialized() -> None:
    kernel = FakeKernel()
    launch = CachedLaunch(kernel)
    launch((1,), torch.zeros(4), 0.5, num_warps=1, BLOCK=16, FLAG=False)
    launch((1,), torch.zeros(4), 1e-6, num_warps=1, BLOCK=16, FLAG=False)
    assert [entry[0] for entry in kernel.launches] == ["triton", "compiled"]
    assert kernel.launches[1][3][1] == 1e-6


def test_arguments_of_other_kinds_always_take_tritons_path() -> None:
    kernel = FakeKernel()
    launch = CachedLaunch(kernel)
    for _ in range(2):
        launch((1,), torch.zeros(4), None, num_warps=1, BLOCK=16, FLAG=False)
    assert [entry[0] for entry in kernel.launches] == ["triton", "triton"]


def test_interpreted_kernels_are_launched_as_they_are() -> None:
    launches = []

    class Interpreted:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: launches.append((grid, args, kwargs))

    launch = CachedLaunch(Interpreted())
    for _ in range(2):
        launch((1,), torch.zeros(4), 16, num_warps=1, BLOCK=16, FLAG=False)
    assert len(launches) == 2 and launches[0][2] == {"num_warps": 1, "BLOCK": 16, "FLAG": False}
