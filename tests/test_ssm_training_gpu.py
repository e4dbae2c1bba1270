"""SSM encoders train on CUDA: a pretraining step through the fast kernels (Triton scan, bf16 autocast) gives the
gradients of the reference path, and a few steps on one batch drive the loss down.

The kernel-level checks compare each op with its float64 reference; these check the whole trunk in the state
pretraining runs it (autograd through every fused path at once), which those checks cannot see.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssmvlm.backbones import create_vision_backbone

pytestmark = pytest.mark.gpu
CUDA = torch.cuda.is_available()
SSM_NANOS = ("vmamba_nano", "vim_nano", "mambavision_nano")


def _loss(backbone: torch.nn.Module, head: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    pooled = backbone.forward_stages(images)[-1].float().amax(dim=(2, 3))
    return F.cross_entropy(head(pooled), labels)


def _training_setup(
    name: str, batch: int
) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A seeded nano backbone in training mode on the card, a 10-class head, and a random 96² batch."""
    torch.manual_seed(0)
    backbone = create_vision_backbone(name, image_size=96).cuda().train()
    head = torch.nn.Linear(backbone.stage_dims[-1], 10).cuda()
    images = torch.randn(batch, 3, 96, 96, device="cuda")
    labels = torch.randint(0, 10, (batch,), device="cuda")
    return backbone, head, images, labels


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("name", SSM_NANOS)
def test_training_gradients_match_the_reference_scan(name: str) -> None:
    backbone, head, images, labels = _training_setup(name, batch=8)
    grads = {}
    for backend in ("reference", None):  # None: what pretraining gets (the fastest available)
        backbone.scan_backend = backend
        backbone.zero_grad(set_to_none=True)
        _loss(backbone, head, images, labels).backward()
        grads[backend] = {k: p.grad.detach().clone() for k, p in backbone.named_parameters() if p.grad is not None}
    assert grads[None].keys() == grads["reference"].keys()
    # Relative to the whole gradient's scale: a bias right before a BatchNorm has a true gradient of ~0, whose
    # rounding noise would otherwise count as a large relative error.
    scale = torch.stack([g.norm() for g in grads["reference"].values()]).max()
    errors = {
        key: float((grads[None][key] - reference).norm() / torch.maximum(reference.norm(), 1e-3 * scale))
        for key, reference in grads["reference"].items()
    }
    bad = sorted(((error, key) for key, error in errors.items() if not error < 1e-2), reverse=True)
    assert not bad, f"{name}: {len(bad)} of {len(errors)} gradients off, worst: " + ", ".join(
        f"{key} {error:.3g}" for error, key in bad[:8]
    )


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("name", SSM_NANOS)
def test_bf16_autocast_steps_fit_one_batch(name: str) -> None:
    backbone, head, images, labels = _training_setup(name, batch=16)
    optimizer = torch.optim.AdamW([*backbone.parameters(), *head.parameters()], lr=1e-3)
    losses = []
    for _ in range(30):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = _loss(backbone, head, images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], f"{name}: loss {losses[0]:.3f} → {losses[-1]:.3f} after 30 steps"


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("name", SSM_NANOS)
@pytest.mark.parametrize("size", [64, 96])
def test_inference_forward_matches_the_reference_scan(name: str, size: int) -> None:
    """The frozen encoder's path (eval mode, no autograd: the scan's inference kernels, fused norms) gives the
    training path's features: held-out evaluation and every VLM read the encoder this way."""
    torch.manual_seed(0)
    backbone = create_vision_backbone(name, image_size=size).cuda().eval()
    images = torch.randn(3, 3, size, size, device="cuda")
    outputs = {}
    for backend in ("reference", None):
        backbone.scan_backend = backend
        with torch.no_grad():
            outputs[backend] = [backbone(images).float(), backbone.forward_stages(images)[-1].float()]
    for fast, reference in zip(outputs[None], outputs["reference"], strict=True):
        error = (fast - reference).norm() / reference.norm()
        assert error < 1e-3, f"{name} at {size}²: relative error {error:.3g}"
