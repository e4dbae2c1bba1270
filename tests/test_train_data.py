"""A tiny LLaVA-format dataset for the VLM and training tests: one coloured shape per image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

COLORS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 60, 220), "yellow": (230, 210, 20)}
SHAPES = ("circle", "square")


def make_mini_llava(root: Path, count: int = 32, *, size: int = 64, text_only: int = 0) -> Path:
    """Write ``root/images/*.png`` and ``root/llava.json``: ``count`` image records whose answers depend only on
    the image, then ``text_only`` records without an image."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for index in range(count):
        color = list(COLORS)[index % len(COLORS)]
        shape = SHAPES[(index // len(COLORS)) % len(SHAPES)]
        image = Image.new("RGB", (size + 16 * (index % 2), size), (245, 245, 245))
        draw = ImageDraw.Draw(image)
        box = (12 + index % 7, 10 + index % 5, size - 12, size - 10)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLORS[color])
        name = f"images/{index:04d}.png"
        image.save(root / name)
        question = "What color is the shape?" if index % 3 else "Which shape is shown?"
        answer = color if index % 3 else shape
        records.append(
            {
                "id": f"mini-{index}",
                "image": name,
                "conversations": [
                    {"from": "human", "value": f"<image>\n{question}"},
                    {"from": "gpt", "value": answer},
                ],
            }
        )
    for index in range(text_only):
        records.append(
            {
                "id": f"text-{index}",
                "conversations": [{"from": "human", "value": "Say hello."}, {"from": "gpt", "value": "hello"}],
            }
        )
    path = root / "llava.json"
    path.write_text(json.dumps(records))
    return path


def test_mini_llava_is_loadable(tmp_path: Path) -> None:
    from ssmvlm.data.llava import load_llava_records

    records = load_llava_records(make_mini_llava(tmp_path, 8, text_only=2))
    assert len(records) == 10 and all(r.image is not None and r.image.is_file() for r in records[:8])
    assert records[-1].image is None


def test_split_turns_gives_one_sample_per_question(tmp_path: Path) -> None:
    from ssmvlm.data.llava import LlavaRecord
    from ssmvlm.train.dataset import split_into_turns

    record = LlavaRecord("r1", tmp_path / "a.png", [("human", "q1"), ("gpt", "a1"), ("human", "q2"), ("gpt", "a2")])
    split = split_into_turns([record])
    assert [(r.id, r.image, r.turns) for r in split] == [
        ("r1#0", tmp_path / "a.png", [("human", "q1"), ("gpt", "a1")]),
        ("r1#1", tmp_path / "a.png", [("human", "q2"), ("gpt", "a2")]),
    ]


def test_packed_batches_are_the_samples_right_padded() -> None:
    import random

    from ssmvlm.train.dataset import PackedSamples, Sample, collate
    from ssmvlm.vlm.model import IGNORE_INDEX

    rng = random.Random(0)
    samples = []
    for index in range(40):
        length = rng.randint(3, 30)
        ids = [rng.randint(3, 500) for _ in range(length)]
        prompt = rng.randint(1, length - 1)
        labels = [IGNORE_INDEX] * prompt + ids[prompt:]
        samples.append(Sample(f"s{index}", ids, labels, index % 7 if index % 5 else None))
    packed = PackedSamples(samples, pad_token_id=0)
    rows = rng.sample(range(40), 9)
    batch = packed.batch(rows)
    longest = max(len(samples[i].input_ids) for i in rows)
    assert batch.input_ids.shape == batch.labels.shape == batch.attention_mask.shape == (9, longest)
    for row, index in enumerate(rows):
        sample, length = samples[index], len(samples[index].input_ids)
        assert batch.input_ids[row].tolist() == sample.input_ids + [0] * (longest - length)
        assert batch.labels[row].tolist() == sample.labels + [IGNORE_INDEX] * (longest - length)
        assert batch.attention_mask[row].tolist() == [1] * length + [0] * (longest - length)
    assert batch.prompt_lengths.tolist() == [samples[i].prompt_length for i in rows]
    assert batch.image_indices == [samples[i].image_index for i in rows]
    assert batch.record_ids == [samples[i].record_id for i in rows]
    assert batch.input_ids.dtype == batch.labels.dtype == torch.long
    whole = collate([samples[i] for i in rows], pad_token_id=0)
    assert torch.equal(whole.input_ids, batch.input_ids) and torch.equal(whole.labels, batch.labels)
    assert batch.padded == bool((batch.attention_mask == 0).any())
    same_length = [i for i in range(40) if len(samples[i].input_ids) == len(samples[rows[0]].input_ids)]
    assert packed.batch(same_length).padded is False and packed.batch([rows[0], rows[0]]).padded is False


def test_each_epoch_is_a_seeded_permutation_in_full_batches() -> None:
    from ssmvlm.train.dataset import global_batch_indices

    samples, batch, per_epoch = 10, 4, 3
    steps = [global_batch_indices(samples, batch, step, per_epoch, seed=1) for step in range(3 * per_epoch)]
    epochs = [[i for batch_rows in steps[e * per_epoch : (e + 1) * per_epoch] for i in batch_rows] for e in range(3)]
    for seen in epochs:
        assert len(seen) == 12 and sorted(set(seen)) == list(range(samples)) and seen[10:] == seen[:2]
    assert epochs[0][:10] != epochs[1][:10]
    # the same step gives the same batch whatever was asked before (the epoch order is cached, not stateful)
    assert global_batch_indices(samples, batch, 4, per_epoch, seed=1) == epochs[1][4:8]
    assert global_batch_indices(samples, batch, 4, per_epoch, seed=2) != epochs[1][4:8]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_packed_batches_on_the_gpu_are_the_host_batches() -> None:
    """Rows copied without a host wait (pinned, non-blocking) give the host's batch, however many are queued."""
    from ssmvlm.train.dataset import PackedSamples, Sample

    samples = []
    for i in range(64):
        ids = list(range(3, 8 + i % 9))
        samples.append(Sample(f"s{i}", ids, [-100] * 2 + ids[2:], i))
    host = PackedSamples(samples, pad_token_id=0)
    device = PackedSamples(samples, pad_token_id=0, device=torch.device("cuda"))
    batches = [list(range(k, 64, 7)) for k in range(7)]
    on_gpu = [device.batch(rows) for rows in batches]  # queued back to back before any is read
    for rows, batch in zip(batches, on_gpu, strict=True):
        expected = host.batch(rows)
        assert torch.equal(batch.input_ids.cpu(), expected.input_ids)
        assert torch.equal(batch.labels.cpu(), expected.labels)
        assert torch.equal(batch.prompt_lengths.cpu(), expected.prompt_lengths)
