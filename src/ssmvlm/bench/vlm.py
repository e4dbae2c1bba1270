"""End-to-end VLM cost: how the visual token count moves the LLM's prefill and decode cost.

For each trained run and resolution, the run's frozen encoder is rebuilt at that resolution (same weights,
position embeddings adapted by the backbone), then three phases are timed separately: the encoder forward,
the LLM prefill over the prompt and patches (laid out as the run's ``image_position`` says), and greedy
decoding of ``new_tokens`` tokens with the KV cache. The encoder is timed as ``VLM.encode_images`` runs it:
replayed from a CUDA graph on CUDA unless ``SSMVLM_CUDA_GRAPHS=0`` (``encoder_mode`` says which ran).
"""

from __future__ import annotations

import inspect
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ssmvlm.bench.timing import is_out_of_memory, median_ms, synchronize
from ssmvlm.utils.device import resolve_device
from ssmvlm.utils.io import atomic_write_json, atomic_write_text
from ssmvlm.utils.progress import progress_bar
from ssmvlm.utils.provenance import write_run_record

DEFAULT_PROMPT = "What color is the largest object?\nAnswer the question using a single word or phrase."


@dataclass
class VLMBenchConfig:
    runs: list[str] = field(default_factory=list)
    resolutions: list[int] = field(default_factory=lambda: [96, 192])
    batch_size: int = 1
    new_tokens: int = 32
    prompt: str = DEFAULT_PROMPT
    device: str = "auto"
    warmup: int = 2
    repeats: int = 5
    seed: int = 0


@dataclass
class VLMMeasurement:
    run: str
    backbone: str
    resolution: int
    visual_tokens: int
    prefill_tokens: int
    status: str = "ok"
    encoder_ms: float | None = None
    encoder_mode: str | None = None  # "cuda graph": every timed call replayed one; "eager": none; else "mixed"
    prefill_ms: float | None = None
    decode_ms_per_token: float | None = None
    decode_tokens_per_s: float | None = None
    end_to_end_ms: float | None = None


def _rebuild_encoder(vlm: torch.nn.Module, resolution: int, device: torch.device) -> None:
    from ssmvlm.backbones import create_vision_backbone

    old = vlm.vision_backbone
    backbone = create_vision_backbone(
        old.name, image_size=resolution, feature_tap=str(old.feature_tap), resize_strategy=old.resize_strategy
    )
    # The trained trunk's weights carry over; the family adapts size-dependent ones (position embeddings).
    backbone.trunk.load_state_dict(backbone.adapt_state_dict(old.trunk.state_dict()))
    vlm.vision_backbone = backbone.to(device=device, dtype=vlm.vision_dtype).eval().requires_grad_(False)


def measure_run(run_dir: Path, resolution: int, config: VLMBenchConfig, vlm: torch.nn.Module) -> VLMMeasurement:
    device = vlm.device
    _rebuild_encoder(vlm, resolution, device)
    rng = np.random.default_rng(config.seed)
    images = [
        Image.fromarray(rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8))
        for _ in range(config.batch_size)
    ]
    prompts = [config.prompt] * config.batch_size
    embeds, mask = vlm._prompt_inputs(images, prompts, blind=False)
    visual = vlm.vision_backbone.num_tokens(resolution)
    result = VLMMeasurement(str(run_dir), vlm.vision_backbone.name, resolution, visual, embeds.shape[1])
    pixels = torch.stack([vlm.image_transform(image) for image in images]).to(device)
    llm = vlm.llm

    def prefill() -> object:
        return llm(inputs_embeds=embeds, attention_mask=mask, use_cache=True)

    # transformers renamed ``past_key_values`` to ``cache`` (5.2x); accept both so any 5.x works.
    cache_name = "cache" if "cache" in inspect.signature(llm.forward).parameters else "past_key_values"

    decode_times: list[float] = []

    def generate() -> None:
        """Prefill, then the decode steps, timed on their own (a difference of two medians can come out ≤ 0)."""
        out = prefill()
        cache, step_mask = getattr(out, cache_name), mask
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(config.new_tokens):
            step_mask = torch.cat([step_mask, step_mask.new_ones(step_mask.shape[0], 1)], dim=1)
            out = llm(input_ids=token, attention_mask=step_mask, use_cache=True, **{cache_name: cache})
            cache, token = getattr(out, cache_name), out.logits[:, -1].argmax(-1, keepdim=True)
        synchronize(device)
        decode_times.append((time.perf_counter() - start) * 1e3)

    timing = {"warmup": config.warmup, "repeats": config.repeats}
    with torch.inference_mode():
        replays = vlm.encoder_graphs.counts["replayed"]
        result.encoder_ms = median_ms(lambda: vlm.encode_images(pixels), device, **timing)
        replays = vlm.encoder_graphs.counts["replayed"] - replays
        result.encoder_mode = "cuda graph" if replays >= config.repeats else "eager" if replays == 0 else "mixed"
        result.prefill_ms = median_ms(prefill, device, **timing)
        total_ms = median_ms(generate, device, **timing)
    decode_ms = statistics.median(decode_times[-config.repeats :])
    result.decode_ms_per_token = decode_ms / config.new_tokens
    result.decode_tokens_per_s = config.batch_size * config.new_tokens / (decode_ms / 1e3)
    result.end_to_end_ms = result.encoder_ms + total_ms
    return result


def markdown_table(rows: list[VLMMeasurement]) -> str:
    lines = [
        "| run | backbone | res | visual tokens | prefill tokens | encoder (ms) | prefill (ms) "
        "| decode (ms/token) | decode (tokens/s) | end to end (ms) | encoder mode | status |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        cells = [r.encoder_ms, r.prefill_ms, r.decode_ms_per_token, r.decode_tokens_per_s, r.end_to_end_ms]
        text = " | ".join("–" if v is None else f"{v:.2f}" for v in cells)
        lines.append(
            f"| {Path(r.run).name} | {r.backbone} | {r.resolution} | {r.visual_tokens} | {r.prefill_tokens} "
            f"| {text} | {r.encoder_mode or '–'} | {r.status} |"
        )
    return "\n".join(lines) + "\n"


def run_vlm_bench(config: VLMBenchConfig, out_dir: Path) -> list[VLMMeasurement]:
    """Measure every run × resolution; write ``vlm.json`` and ``vlm.md`` into ``out_dir``."""
    from ssmvlm.config import to_dict
    from ssmvlm.vlm import load_vlm

    device = resolve_device(config.device)
    out_dir = Path(out_dir)
    write_run_record(out_dir, to_dict(config), seed=config.seed)
    rows: list[VLMMeasurement] = []
    with progress_bar() as progress:
        task = progress.add_task("bench vlm", total=len(config.runs) * len(config.resolutions), status="")
        for run in config.runs:
            vlm = load_vlm(run, device=device)
            for resolution in config.resolutions:
                progress.update(task, status=f"{Path(run).name} @ {resolution}²")
                try:
                    rows.append(measure_run(Path(run), resolution, config, vlm))
                except Exception as exc:
                    if not is_out_of_memory(exc):
                        raise
                    torch.cuda.empty_cache()
                    rows.append(VLMMeasurement(run, vlm.vision_backbone.name, resolution, 0, 0, status="oom"))
                progress.advance(task)
    atomic_write_json(out_dir / "vlm.json", {"device": str(device), "rows": [asdict(r) for r in rows]})
    atomic_write_text(out_dir / "vlm.md", markdown_table(rows))
    return rows
