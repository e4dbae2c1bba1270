"""AutocastLayerNorm, and the Triton LayerNorm it runs on CUDA at inference (here in Triton's interpreter)."""

import pytest
import torch
from torch import nn

from ssmvlm.backbones.norms import AutocastLayerNorm
from ssmvlm.ops.scan_testing import run_in_triton_interpreter


def _norms(width: int) -> tuple[AutocastLayerNorm, nn.LayerNorm]:
    torch.manual_seed(0)
    norm = AutocastLayerNorm(width)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    plain = nn.LayerNorm(width)
    plain.load_state_dict(norm.state_dict(), strict=True)
    return norm, plain


def test_autocast_layer_norm_is_layer_norm_without_autocast() -> None:
    norm, plain = _norms(24)
    x = torch.randn(3, 5, 24, dtype=torch.float64)
    torch.testing.assert_close(norm.double()(x), plain.double()(x), rtol=0, atol=0)


def test_autocast_layer_norm_returns_the_autocast_dtype_of_the_float32_norm() -> None:
    norm, plain = _norms(96)
    x = torch.randn(4, 7, 96) * 3 + 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x)
    assert out.dtype == torch.bfloat16 and norm.weight.dtype == torch.float32
    # within bf16 rounding of the float32 norm of the float32 input
    torch.testing.assert_close(out.float(), plain(x), rtol=2e-2, atol=3e-2)


def test_autocast_layer_norm_runs_on_the_meta_device() -> None:
    """FLOPs are counted on the meta device, where autocast does not exist."""
    norm = AutocastLayerNorm(8).to("meta")
    assert norm(torch.empty(2, 8, device="meta")).shape == (2, 8)


_INTERPRETER_SCRIPT = """
import torch
import torch.nn.functional as F
from ssmvlm.ops.layer_norm_triton import layer_norm_triton

gen = torch.Generator().manual_seed(0)
for rows, cols in ((37, 96), (5, 7), (300, 192)):
    x = torch.randn(rows, cols, generator=gen) * 3 + 1
    weight, bias = torch.randn(cols, generator=gen), torch.randn(cols, generator=gen)
    for source in (x, x.bfloat16()):
        for out_dtype in (torch.float32, torch.bfloat16):
            out = layer_norm_triton(source, weight, bias, 1e-5, out_dtype)
            assert out.dtype == out_dtype and out.shape == x.shape
            exact = F.layer_norm(source.double(), (cols,), weight.double(), bias.double(), 1e-5)
            tolerance = 1e-5 if out_dtype == torch.float32 else 1e-2
            assert (out.double() - exact).abs().max() < tolerance * exact.abs().max(), (rows, cols, source.dtype)
    strided = torch.randn(rows, cols + 3, generator=gen)[:, 1 : cols + 1]  # rows of stride cols + 3
    out = layer_norm_triton(strided, None, None, 1e-6, torch.float32)
    assert torch.allclose(out.double(), F.layer_norm(strided.double(), (cols,), eps=1e-6), atol=1e-5)
print("layer norm ok")
"""


def test_triton_layer_norm_in_interpreter() -> None:
    pytest.importorskip("triton")
    assert "layer norm ok" in run_in_triton_interpreter(_INTERPRETER_SCRIPT)
