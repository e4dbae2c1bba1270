"""VLM pieces on CPU: prompt formats, prismatic loss masking, connectors, patch insertion, tokenizers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from ssmvlm.connectors import CONNECTORS, build_connector
from ssmvlm.data.llava import LlavaRecord
from ssmvlm.train.dataset import build_conversation_data, tokenize_caption, tokenize_conversation
from ssmvlm.utils.errors import CheckpointError, ConfigError, DataError
from ssmvlm.vlm.llm import build_tiny_llm, check_vocab_fits, train_tokenizer
from ssmvlm.vlm.model import IGNORE_INDEX, insert_patches, length_weighted_loss
from ssmvlm.vlm.prompts import VICUNA_SYSTEM_PROMPT, get_prompt_format

TURNS = [
    ("human", "<image>\nWhat color is the circle?"),
    ("gpt", "red"),
    ("human", "How many squares?"),
    ("gpt", "2"),
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    corpus = []
    for name in ("vicuna-v15", "plain"):
        corpus += get_prompt_format(name).turn_strings(TURNS) * 20
    return train_tokenizer(corpus, 300, tmp_path_factory.mktemp("tok"))


def test_vicuna_turn_strings_match_prismatic() -> None:
    turns = get_prompt_format("vicuna-v15").turn_strings(TURNS)
    assert turns == [
        VICUNA_SYSTEM_PROMPT + " USER: What color is the circle? ASSISTANT: ",
        "red</s>",
        "USER: How many squares? ASSISTANT: ",
        "2</s>",
    ]
    assert get_prompt_format("vicuna-v15").inference_prompt("Hi?") == VICUNA_SYSTEM_PROMPT + " USER: Hi? ASSISTANT:"
    assert get_prompt_format("plain").turn_strings(TURNS[:2]) == [
        "In: What color is the circle?\nOut: ",
        "red</s>",
    ]
    assert get_prompt_format("plain").wrap_turn("gpt", "", 1) == " </s>"


@pytest.mark.parametrize("format_name", ["vicuna-v15", "plain"])
def test_loss_mask_is_exactly_the_answers(tokenizer, format_name: str) -> None:
    fmt = get_prompt_format(format_name)
    texts = [t.rstrip() for t in fmt.turn_strings(TURNS)]
    pieces = [tokenizer(t, add_special_tokens=i == 0).input_ids for i, t in enumerate(texts)]
    assert pieces[0][0] == tokenizer.bos_token_id and pieces[1][-1] == tokenizer.eos_token_id
    input_ids, labels = tokenize_conversation(TURNS, tokenizer, fmt, 2048, has_image=True)
    assert input_ids == [token for piece in pieces for token in piece]
    start_answer1 = len(pieces[0])
    start_answer2 = start_answer1 + len(pieces[1]) + len(pieces[2])
    supervised = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    assert supervised == list(range(start_answer1, start_answer1 + len(pieces[1]))) + list(
        range(start_answer2, start_answer2 + len(pieces[3]))
    )
    assert tokenizer.decode([labels[i] for i in supervised]).replace(" ", "") == "red</s>2</s>"
    assert all(labels[i] == input_ids[i] for i in supervised)


def test_align_stage_supervises_caption_and_eos(tokenizer) -> None:
    input_ids, labels = tokenize_caption(TURNS[:2], tokenizer, get_prompt_format("vicuna-v15"), 2048, True)
    assert input_ids[0] == tokenizer.bos_token_id and labels[0] == IGNORE_INDEX
    assert labels[1:] == input_ids[1:] and input_ids[-1] == tokenizer.eos_token_id


def test_fully_truncated_answer_is_an_error_or_a_counted_skip(tokenizer) -> None:
    from ssmvlm.data.llava import LlavaRecord

    records = [
        LlavaRecord("long", None, TURNS[:2]),
        LlavaRecord("short", None, [("human", "Hi"), ("gpt", "red")]),
    ]
    fmt = get_prompt_format("plain")
    prompt_length = len(tokenizer(fmt.turn_strings(TURNS[:2])[0].rstrip()).input_ids)
    with pytest.raises(DataError, match=r"record long .*max_length"):
        build_conversation_data(
            records,
            tokenizer,
            fmt,
            max_length=prompt_length,
            stage="no-align",
            source="x.json",
            skip_bad=False,
        )
    data = build_conversation_data(
        records, tokenizer, fmt, max_length=prompt_length, stage="no-align", source="x.json", skip_bad=True
    )
    assert data.skipped == 1 and [s.record_id for s in data.samples] == ["short"]


@pytest.mark.parametrize("name", sorted(CONNECTORS))
def test_connector_shapes(name: str) -> None:
    connector = build_connector(name, 48, 64)
    assert connector(torch.randn(2, 36, 48)).shape == (2, 36, 64)
    linears = [m for m in connector.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == {"linear": 1, "gelu-mlp": 2, "fused-gelu-mlp": 3}[name]
    if name == "fused-gelu-mlp":
        assert linears[0].out_features == 4 * 48


def test_connector_init_depends_on_vision_width_only() -> None:
    torch.manual_seed(1)
    first = build_connector("gelu-mlp", 48, 64)
    torch.manual_seed(2)
    second = build_connector("gelu-mlp", 48, 64)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True))


def test_connector_input_norm_makes_the_projection_scale_free() -> None:
    """With the LayerNorm on, an encoder whose tokens are 50x larger projects to the same embeddings; without it,
    the state dict keeps exactly the keys of a connector that never had one."""
    tokens = torch.randn(2, 36, 48)
    normed = build_connector("gelu-mlp", 48, 64, input_norm=True)
    torch.testing.assert_close(normed(50 * tokens + 3), normed(tokens), rtol=1e-4, atol=1e-4)
    plain = build_connector("gelu-mlp", 48, 64)
    assert not torch.allclose(plain(50 * tokens), plain(tokens))
    assert set(normed.state_dict()) - set(plain.state_dict()) == {"input_norm.weight", "input_norm.bias"}
    assert all(key.startswith("projector.") for key in plain.state_dict())


def test_connector_norm_reaches_the_vlm_from_its_config(tokenizer) -> None:
    from ssmvlm.vlm.builder import VLMConfig, build_vlm

    config = VLMConfig(backbone="vit_nano", image_size=32, llm="tiny-llama-1m", connector_norm=True)
    vlm = build_vlm(config, tokenizer, 0)
    assert isinstance(vlm.connector.input_norm, torch.nn.LayerNorm)
    assert vlm.connector.input_norm.normalized_shape == (vlm.vision_backbone.embed_dim,)
    assert build_vlm(dataclasses.replace(config, connector_norm=False), tokenizer, 0).connector.input_norm is None


def test_token_pooling_averages_grid_neighbourhoods() -> None:
    pooled = build_connector("linear", 4, 8, pool=2, grid_hw=(7, 7))
    assert pooled.num_output_tokens(49) == 16
    assert pooled(torch.randn(3, 49, 4)).shape == (3, 16, 8)
    tokens = torch.arange(16.0).reshape(1, 16, 1).expand(1, 16, 4)
    grid = build_connector("linear", 4, 8, pool=2, grid_hw=(4, 4)).pool(tokens)
    assert grid[0, :, 0].tolist() == [2.5, 4.5, 10.5, 12.5]


def test_patches_go_after_bos_and_text_only_rows_keep_their_positions() -> None:
    embeds = torch.arange(2 * 4, dtype=torch.float).reshape(2, 4, 1).expand(2, 4, 3).clone()
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    labels = torch.tensor([[IGNORE_INDEX, 5, 6, 7], [IGNORE_INDEX, 8, 9, IGNORE_INDEX]])
    patches = torch.full((2, 2, 3), -1.0)
    out, out_mask, out_labels = insert_patches(embeds, mask, labels, patches, torch.tensor([True, False]))
    assert out[0, :, 0].tolist() == [0, -1, -1, 1, 2, 3]
    assert out[1, :, 0].tolist() == [4, 5, 6, 7, 0, 0]
    assert out_mask.tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]
    assert out_labels.tolist() == [
        [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 5, 6, 7],
        [IGNORE_INDEX, 8, 9, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
    ]


def test_patches_go_after_the_question_at_each_rows_offset() -> None:
    embeds = torch.arange(2 * 5, dtype=torch.float).reshape(2, 5, 1).expand(2, 5, 3).clone()
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 7, 8], [IGNORE_INDEX, IGNORE_INDEX, 6, 7, -100]])
    patches = torch.full((2, 2, 3), -1.0)
    offsets = torch.tensor([3, 2])
    out, out_mask, out_labels = insert_patches(embeds, mask, labels, patches, torch.tensor([True, True]), offsets)
    assert out[0, :, 0].tolist() == [0, 1, 2, -1, -1, 3, 4]
    assert out[1, :, 0].tolist() == [5, 6, -1, -1, 7, 8, 9]  # the pad keeps its embedding, masked
    assert out_mask.tolist() == [[1] * 7, [1] * 6 + [0]]
    assert out_labels[0].tolist() == [IGNORE_INDEX] * 5 + [7, 8]
    assert out_labels[1].tolist() == [IGNORE_INDEX] * 4 + [6, 7, IGNORE_INDEX]
    # offset 1 everywhere is the default layout
    default = insert_patches(embeds, mask, labels, patches, torch.tensor([True, False]))
    explicit = insert_patches(embeds, mask, labels, patches, torch.tensor([True, False]), torch.tensor([1, 1]))
    assert all(torch.equal(a, b) for a, b in zip(default, explicit, strict=True))


@pytest.mark.parametrize("position", ["after-bos", "after-question"])
def test_training_forward_hands_sdpa_the_mask_transformers_builds_without_reading_the_device(
    tokenizer, position: str
) -> None:
    """``VLM.forward(padding=True)`` gives an SDPA LLM the 4-D causal-and-padding mask itself: every real token's
    logits, the loss and the gradients are those of the 2-D padding mask's forward (float64; rows of three lengths,
    one without an image), and the forward reads no device value on the host; ``padding=False`` (no row padded)
    runs causal attention alone, as transformers does for an all-ones mask."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from ssmvlm.vlm.builder import VLMConfig, build_vlm

    class HostReads(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            self.count += func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default)
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    vlm = build_vlm(VLMConfig(backbone="vit_nano", image_size=32, llm="tiny-llama-1m", image_position=position),
                    tokenizer, 0).double()
    assert vlm.llm.config._attn_implementation == "sdpa"
    lengths = [9, 6, 4]
    input_ids = torch.randint(3, len(tokenizer), (3, 9))
    mask = (torch.arange(9)[None] < torch.tensor(lengths)[:, None]).long()
    labels = torch.where((torch.arange(9)[None] >= 3) & (mask == 1), input_ids, IGNORE_INDEX)
    inputs = {
        "vision_features": torch.randn(3, vlm.vision_backbone.num_tokens(), vlm.vision_backbone.embed_dim).double(),
        "has_image": torch.tensor([True, True, False]),
        "prompt_lengths": torch.tensor([3, 2, 3]),
        "loss_reduction": "sqrt",
    }
    results, reads = [], []
    for padding in (True, None):  # None, the reference: transformers builds the mask from the 2-D padding mask
        vlm.zero_grad()
        with HostReads() as counter:
            out = vlm(input_ids, mask, labels, padding=padding, **inputs)
        reads.append(counter.count)
        out.loss.backward()
        results.append((out, [p.grad.clone() for p in vlm.parameters() if p.grad is not None]))
    (own, own_grads), (reference, reference_grads) = results
    count = vlm.vision_backbone.num_tokens()
    for row, length in enumerate(lengths):  # real tokens (an image row's patches too) come first in every row
        real = length + count * int(inputs["has_image"][row])
        torch.testing.assert_close(own.logits[row, :real], reference.logits[row, :real])
    torch.testing.assert_close(own.loss, reference.loss)
    assert len(own_grads) == len(reference_grads) > 0
    for a, b in zip(own_grads, reference_grads, strict=True):
        torch.testing.assert_close(a, b)
    assert reads[0] == 0 and reads[1] > 0  # transformers' own builder reads the device; the 4-D mask does not

    # A batch without padding: causal attention alone, as transformers chooses after reading the all-ones mask.
    full = {**inputs, "has_image": torch.tensor([True, True, True])}
    unpadded = [vlm(input_ids, torch.ones_like(mask), labels, padding=padding, **full) for padding in (False, None)]
    torch.testing.assert_close(unpadded[0].logits, unpadded[1].logits)
    torch.testing.assert_close(unpadded[0].loss, unpadded[1].loss)


def test_causal_padding_mask_lets_each_token_see_the_real_tokens_up_to_itself() -> None:
    from ssmvlm.vlm.model import causal_padding_mask

    mask = causal_padding_mask(torch.tensor([[1, 1, 1], [1, 1, 0]]))
    assert mask.shape == (2, 1, 3, 3) and mask.dtype == torch.bool
    assert mask[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert mask[1, 0].tolist() == [[True, False, False], [True, True, False], [True, True, True]]  # a pad: itself
    left_padded = causal_padding_mask(torch.tensor([[0, 1, 1]]))
    assert left_padded[0, 0, 0].tolist() == [True, False, False]  # never a query without a key


@pytest.mark.parametrize(("format_name", "tag"), [("vicuna-v15", "ASSISTANT:"), ("plain", "Out:")])
def test_before_answer_puts_the_patches_before_each_rows_answer_tag(tokenizer, format_name: str, tag: str) -> None:
    from ssmvlm.train.dataset import Sample
    from ssmvlm.vlm.builder import VLMConfig, build_vlm

    config = VLMConfig(backbone="vit_nano", image_size=32, llm="tiny-llama-1m", prompt_format=format_name)
    vlm = build_vlm(dataclasses.replace(config, image_position="before-answer"), tokenizer, 0)
    assert tokenizer.decode(vlm.answer_tag).strip() == tag
    data = build_conversation_data(
        [LlavaRecord("r", Path("a.png"), TURNS)],
        tokenizer,
        vlm.prompt_format,
        max_length=2048,
        stage="no-align",
        source="test.json",
        skip_bad=False,
        split_turns=True,
    )
    vlm.check_answer_tags(data.samples, "test.json")
    lengths = torch.tensor([sample.prompt_length for sample in data.samples])
    offsets = vlm.image_offsets(lengths, len(lengths), torch.device("cpu"))
    for sample, offset in zip(data.samples, offsets.tolist(), strict=True):
        assert sample.input_ids[offset : sample.prompt_length] == vlm.answer_tag
    assert vlm.image_offset(int(lengths[0])) == offsets[0]
    after_question = build_vlm(dataclasses.replace(config, image_position="after-question"), tokenizer, 0)
    assert after_question.image_offsets(lengths, len(lengths), torch.device("cpu")).tolist() == lengths.tolist()
    after_question.check_answer_tags(data.samples, "test.json")  # nothing to check without a tag
    unclosed = Sample("bad", [0, 7, 8, 9, 10], [IGNORE_INDEX] * 4 + [10], 0)
    with pytest.raises(DataError, match=r"test\.json.*does not end with the answer tag"):
        vlm.check_answer_tags([unclosed], "test.json")


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_length_weighted_loss_against_a_float64_reference(tokenizer, power: float) -> None:
    """Each token of a row with n labelled tokens weighs n**-power; power 0 is the LLM's own token mean, and with
    the same number of answer tokens in every row all powers agree."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 11, generator=generator, dtype=torch.float64)
    labels = torch.full((3, 6), IGNORE_INDEX)
    labels[0, 2:6] = torch.tensor([1, 2, 3, 4])  # a long answer
    labels[1, 5] = 5  # a one-token answer
    # row 2 has no labelled token: it must not count as a row
    row_sums, row_counts = [], []
    for row in (0, 1):
        picked = [(t - 1, int(labels[row, t])) for t in range(1, 6) if labels[row, t] != IGNORE_INDEX]
        log_probs = torch.log_softmax(logits[row], dim=-1)
        row_sums.append(-sum(log_probs[position, target] for position, target in picked))
        row_counts.append(len(picked))
    weights = [count**-power for count in row_counts]
    expected = sum(w * total for w, total in zip(weights, row_sums, strict=True)) / sum(
        w * count for w, count in zip(weights, row_counts, strict=True)
    )
    loss = length_weighted_loss(logits.float(), labels, power).double()
    assert torch.allclose(loss, expected, atol=1e-5)
    token_mean = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=IGNORE_INDEX
    )
    assert torch.allclose(token_mean, expected, atol=1e-5) == (power == 0.0)  # else the long answer weighs less
    if power == 1.0:
        assert torch.allclose(loss, (row_sums[0] / 4 + row_sums[1]) / 2, atol=1e-5)  # every answer weighs the same

    llm = build_tiny_llm("tiny-llama-1m", tokenizer, 0)
    ids = torch.randint(3, 200, (2, 7), generator=generator)
    even = torch.full((2, 7), IGNORE_INDEX)
    even[:, 4:7] = ids[:, 4:7]
    out = llm(input_ids=ids, labels=even)
    assert torch.allclose(length_weighted_loss(out.logits, even, power), out.loss, atol=1e-5)


def test_tiny_llm_is_seeded_and_sized_to_the_tokenizer(tokenizer) -> None:
    first, second = (
        build_tiny_llm("tiny-llama-2m", tokenizer, 3),
        build_tiny_llm("tiny-llama-2m", tokenizer, 3),
    )
    assert first.get_input_embeddings().weight.shape[0] % 64 == 0
    assert torch.equal(first.lm_head.weight, second.lm_head.weight)
    assert not torch.equal(first.lm_head.weight, build_tiny_llm("tiny-llama-2m", tokenizer, 4).lm_head.weight)


def test_tiny_llm_init_std_sets_the_scale_of_its_weights(tokenizer) -> None:
    def spread(llm) -> float:
        return llm.model.layers[0].self_attn.q_proj.weight.std().item()

    default = build_tiny_llm("tiny-llama-2l", tokenizer, 0)
    wider = build_tiny_llm("tiny-llama-2l", tokenizer, 0, init_std=0.088)
    assert len(default.model.layers) == 2
    assert spread(default) == pytest.approx(0.02, rel=0.05)
    assert spread(wider) == pytest.approx(0.088, rel=0.05)
    assert wider.get_input_embeddings().weight.std().item() == pytest.approx(0.088, rel=0.05)
    with pytest.raises(ConfigError, match=r"model\.llm_init_std: expected a positive"):
        build_tiny_llm("tiny-llama-2l", tokenizer, 0, init_std=0.0)


def test_tokenizer_llm_vocab_mismatch_is_a_clear_error(tokenizer, tmp_path: Path) -> None:
    bigger = train_tokenizer([f"word{i} " * 3 for i in range(400)] * 3, 600, tmp_path)
    llm = build_tiny_llm("tiny-llama-2m", tokenizer, 0)
    with pytest.raises(CheckpointError, match=r"tokenizer has \d+ tokens but the LLM embeds only"):
        check_vocab_fits(bigger, llm, "test")


def test_a_local_hugging_face_llm_directory_is_used_as_is(tokenizer, tmp_path: Path) -> None:
    from ssmvlm.vlm.builder import VLMConfig, build_vlm

    llm = build_tiny_llm("tiny-llama-2m", tokenizer, 5)
    llm.save_pretrained(tmp_path / "llm")
    tokenizer.save_pretrained(tmp_path / "llm")
    vlm = build_vlm(VLMConfig(backbone="vit_nano", image_size=32, llm=str(tmp_path / "llm")), tokenizer, 0)
    assert torch.equal(vlm.llm.lm_head.weight, llm.lm_head.weight)
    ids = torch.tensor([tokenizer("USER: hi ASSISTANT:").input_ids])
    out = vlm(ids, torch.ones_like(ids), ids.clone(), pixel_values=torch.randn(1, 3, 32, 32))
    assert out.logits.shape[1] == ids.shape[1] + vlm.vision_backbone.num_tokens() and torch.isfinite(out.loss)
