"""Frozen-module inference replayed from CUDA graphs (ssmvlm.ops.graphed): when it captures, replays and falls
back, on the CPU through a stand-in capture; the real capture on CUDA where there is one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ssmvlm.ops.graphed import CapturedCall, GraphedInference, graphs_enabled_by_env


class StandIn:
    """A 'graph' that reruns the module on a fixed input buffer, as a replay reads its static input."""

    def __init__(self, module: nn.Module, x: torch.Tensor, scale: float) -> None:
        self.module, self.static_input, self.scale = module, x.clone(), scale

    def replay(self, x: torch.Tensor) -> torch.Tensor:
        self.static_input.copy_(x)
        return self.module(self.static_input) * self.scale


class CpuGraphs(GraphedInference):
    """The policy under test on the CPU: captures are stand-ins (``scale`` ≠ 1 makes their replays wrong)."""

    device_types = ("cpu",)

    def __init__(self, scale: float = 1.0, fail: bool = False, **kwargs) -> None:
        super().__init__(enabled=True, **kwargs)
        self.scale, self.fail = scale, fail

    def _capture(self, module: nn.Module, x: torch.Tensor, autocast: tuple[bool, torch.dtype]) -> CapturedCall:
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        return StandIn(module, x, self.scale)  # type: ignore[return-value]


def frozen() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4)).eval().requires_grad_(False)


def test_second_call_captures_third_replays_and_outputs_match_eager() -> None:
    module, graphs = frozen(), CpuGraphs()
    x = torch.randn(2, 8)
    with torch.no_grad():
        expected = module(x)
        outs = [graphs(module, x) for _ in range(3)]
        other = torch.randn(2, 8)
        replayed = graphs(module, other)
    assert graphs.counts == {"eager": 2, "captured": 1, "replayed": 2}
    for out in outs:
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(replayed, module(other), rtol=0, atol=0)  # the caller's input is copied in


def test_each_signature_gets_its_own_graph_and_the_oldest_is_dropped() -> None:
    module, graphs = frozen(), CpuGraphs(max_graphs=2)
    with torch.no_grad():
        for batch in (1, 2, 3):
            graphs(module, torch.randn(batch, 8))
            graphs(module, torch.randn(batch, 8))
        assert graphs.counts["captured"] == 3 and len(graphs._graphs) == 2
        graphs(module, torch.randn(1, 8))  # dropped: captured again on its next call
        graphs(module, torch.randn(3, 8))
    assert graphs.counts["captured"] == 4 and graphs.counts["replayed"] == 1


def test_no_capture_where_a_graph_could_be_wrong() -> None:
    module, graphs = frozen(), CpuGraphs(max_input_elements=100)
    x = torch.randn(2, 8)
    for _ in range(3):
        graphs(module, x)  # gradients on
    with torch.no_grad():
        for _ in range(3):
            graphs(module, torch.randn(20, 8))  # larger than max_input_elements
        module.train()
        for _ in range(3):
            graphs(module, x)  # training mode
        module.eval()
        graphs.enabled = False
        for _ in range(3):
            graphs(module, x)
    assert graphs.counts == {"eager": 12}


def test_cpu_inputs_run_eagerly_by_default() -> None:
    module, graphs = frozen(), GraphedInference(enabled=True)
    with torch.no_grad():
        for _ in range(3):
            graphs(module, torch.randn(2, 8))
    assert graphs.counts == {"eager": 3}


def test_a_replay_that_differs_or_a_failed_capture_leaves_the_signature_eager() -> None:
    for graphs in (CpuGraphs(scale=1.1), CpuGraphs(fail=True)):
        module, x = frozen(), torch.randn(2, 8)
        with torch.no_grad(), pytest.warns(RuntimeWarning, match="runs eagerly"):
            outs = [graphs(module, x) for _ in range(4)]
        assert graphs.counts == {"eager": 4, "rejected": 1}
        for out in outs:
            torch.testing.assert_close(out, module(x), rtol=0, atol=0)


def test_moved_or_replaced_weights_drop_the_graphs_in_place_updates_do_not() -> None:
    module, graphs = frozen(), CpuGraphs()
    x = torch.randn(2, 8)
    with torch.no_grad():
        graphs(module, x), graphs(module, x)
        module[0].weight.mul_(2)  # in place: the graph reads it
        graphs(module, x)
        assert graphs.counts["replayed"] == 1
        module.double().float()  # moved: new addresses
        graphs(module, x)
        assert not graphs._graphs
        graphs(module, x)
        module[2].weight = nn.Parameter(torch.randn(4, 16), requires_grad=False)  # replaced
        graphs(module, x)
        assert not graphs._graphs
        graphs(module, x), graphs(module, x)
        graphs(frozen(), x)  # another module
    assert not graphs._graphs and graphs.counts["captured"] == 3


def test_a_module_compiled_after_the_registration_hook_compiles_once() -> None:
    """Forwards that slice a ModuleList register a transient module each call (VMamba's stage loop does);
    the hook that counts registrations must not become a guard that recompiles the module on every call."""

    class Sliced(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers[:2]:
                x = layer(x)
            return x

    compiles = []

    def counting_backend(graph: torch.fx.GraphModule, _: list) -> object:
        compiles.append(graph)
        return graph.forward

    torch._dynamo.reset()
    compiled = torch.compile(Sliced(), backend=counting_backend)
    for _ in range(3):
        compiled(torch.randn(2, 4))
    assert len(compiles) == 1


def test_env_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSMVLM_CUDA_GRAPHS", "0")
    assert not graphs_enabled_by_env() and not GraphedInference().enabled
    assert GraphedInference(enabled=True).enabled
    monkeypatch.setenv("SSMVLM_CUDA_GRAPHS", "1")
    assert GraphedInference().enabled


def test_vlm_encoder_goes_through_the_graphs_in_eval_mode_only() -> None:
    from ssmvlm.backbones import create_vision_backbone
    from ssmvlm.connectors import build_connector
    from ssmvlm.vlm.model import VLM

    backbone = create_vision_backbone("vit_nano", image_size=32)
    vlm = VLM(backbone, build_connector("linear", backbone.embed_dim, 8), nn.Linear(8, 8), None, None)  # type: ignore[arg-type]
    graphs = CpuGraphs()
    vlm.encoder_graphs = graphs
    pixels = torch.randn(1, 3, 32, 32)
    vlm.train()
    vlm.encode_images(pixels)
    assert not graphs.counts
    vlm.eval()
    for _ in range(3):
        out = vlm.encode_images(pixels)
    assert graphs.counts == {"eager": 2, "captured": 1, "replayed": 1}
    torch.testing.assert_close(out, backbone(pixels).detach(), rtol=0, atol=0)
    assert VLM(backbone, vlm.connector, vlm.llm, None, None, encoder_cuda_graphs=False).encoder_graphs.enabled is False  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["vmamba_nano", "vit_nano"])
def test_cuda_graph_replays_match_eager_and_are_not_aliased(name: str) -> None:
    from ssmvlm.backbones import create_vision_backbone

    torch.manual_seed(0)
    module = create_vision_backbone(name, image_size=64).cuda().eval().requires_grad_(False)
    graphs = GraphedInference(enabled=True)
    inputs = [torch.randn(2, 3, 64, 64, device="cuda") for _ in range(4)]
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        expected = [module(x).float() for x in inputs]
        outs = [graphs(module, x).float() for x in inputs]
    assert graphs.counts == {"eager": 2, "captured": 1, "replayed": 2}
    for out, ref in zip(outs, expected, strict=True):
        assert ((out - ref).norm() / ref.norm()).item() < 1e-2  # earlier outputs not overwritten by replays
    with torch.no_grad():  # another autocast state: another graph, in float32
        fp32 = [graphs(module, inputs[0]) for _ in range(3)]
    torch.testing.assert_close(fp32[-1], module(inputs[0]).detach(), rtol=1e-4, atol=1e-4)
    assert graphs.counts["captured"] == 2
