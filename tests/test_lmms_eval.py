"""The lmms-eval model: lmms-eval's own request types (generate_until, loglikelihood) on a tiny trained run.

The harness-neutral part (:mod:`ssmvlm.integrations.requests`) is tested without lmms-eval; the adapter itself
against the installed lmms-eval package (skipped where the ``lmms`` extra is not installed).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from test_predict_chat import TINY
from test_train_data import make_mini_llava

from ssmvlm.config import load_config
from ssmvlm.data.transforms import build_image_transform
from ssmvlm.integrations import requests as harness
from ssmvlm.train import TrainConfig, train_vlm
from ssmvlm.utils.errors import ConfigError, DataError
from ssmvlm.vlm import load_vlm
from ssmvlm.vlm.conversation import continuation_logprob


@pytest.fixture(autouse=True)
def _strict_image_decoding():
    """lmms-eval's task module turns PIL's LOAD_TRUNCATED_IMAGES on when imported; put it back after each test,
    since the rest of the suite expects a truncated image to be an error."""
    from PIL import ImageFile

    before = ImageFile.LOAD_TRUNCATED_IMAGES
    yield
    ImageFile.LOAD_TRUNCATED_IMAGES = before


class EchoVLM:
    def __init__(self) -> None:
        self.calls: list[dict] = []

    def generate(self, images, prompts, **settings):  # type: ignore[no-untyped-def]
        self.calls.append(settings)
        return [f"{p} ASSISTANT: more\nlines" for p in prompts]


def test_generation_settings_and_stop_strings_without_lmms_eval() -> None:
    vlm = EchoVLM()
    texts = harness.generate_until(
        vlm, ["a", "b"], [None, None], {"until": ["\n"], "temperature": 0}, default_max_new_tokens=7
    )
    assert texts == ["a ASSISTANT: more", "b ASSISTANT: more"] and vlm.calls == [{"max_new_tokens": 7}]
    harness.generate_until(
        vlm, ["a"], [None], {"until": "ASSISTANT:", "max_new_tokens": 3, "do_sample": True, "temperature": 0.5}
    )
    assert vlm.calls[-1] == {"max_new_tokens": 3, "do_sample": True, "temperature": 0.5}
    with pytest.raises(ConfigError, match="unsupported keys repetition_penalty"):
        harness.generate_until(vlm, ["a"], [None], {"repetition_penalty": 1.1})


def test_model_frame_boxes_reach_the_harness_in_the_raw_frame() -> None:
    class BoxVLM:
        box_frame = "model"
        image_transform = build_image_transform("letterbox", 12)

        def generate(self, images, prompts, **settings):  # type: ignore[no-untyped-def]
            return ["It is [0.10, 0.30, 0.50, 0.57]." for _ in prompts]

    # A 12 x 8 image letterboxed into 12 x 12 sits between y = 2 and y = 10: y_raw = (12 y - 2) / 8.
    texts = harness.generate_until(BoxVLM(), ["where?", "say"], [Image.new("RGB", (12, 8)), None], {})
    assert texts == ["It is [0.10, 0.20, 0.50, 0.60].", "It is [0.10, 0.30, 0.50, 0.57]."]  # no image: as written
    BoxVLM.box_frame = "raw"
    assert harness.generate_until(BoxVLM(), ["where?"], [Image.new("RGB", (12, 8))], {}) == [
        "It is [0.10, 0.30, 0.50, 0.57]."
    ]


def test_one_image_per_prompt() -> None:
    image = Image.new("RGBA", (3, 2))
    assert harness.one_image([image], "doc 1").mode == "RGB"
    assert harness.one_image([], "doc 1") is None and harness.one_image(None, "doc 1") is None
    with pytest.raises(DataError, match="doc 1: gives 2 images"):
        harness.one_image([image, image], "doc 1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    data = make_mini_llava(tmp_path_factory.mktemp("data"), 8, size=48)
    run = train_vlm(
        load_config(TrainConfig, None, [*TINY, f"data.train_json={data}"]),
        tmp_path_factory.mktemp("run"),
        show_progress=False,
    )
    images = [Image.open(data.parent / "images" / f"{k:04d}.png").convert("RGB") for k in range(3)]
    return run, load_vlm(run, device="cpu"), images


def instance(kind: str, arguments: tuple, index: int):  # type: ignore[no-untyped-def]
    from lmms_eval.api.instance import Instance

    return Instance(kind, arguments, index, metadata={"task": "pope", "doc_id": index, "repeats": 1})


def test_lmms_eval_requests_on_a_tiny_run(tiny) -> None:
    pytest.importorskip("lmms_eval")
    from lmms_eval.models import get_model
    from lmms_eval.tasks.pope import utils as pope

    from ssmvlm.integrations.lmms_eval import SsmvlmLMM

    run, vlm, images = tiny
    assert get_model("ssmvlm") is SsmvlmLMM  # found by name through the entry point
    model = SsmvlmLMM(run=str(run), vlm=vlm, batch_size=2, max_new_tokens=4)
    docs = [
        {"question_id": str(k), "question": q, "answer": a, "image": image}
        for k, (q, a, image) in enumerate(
            zip(["Is it red?", "Is it blue?", "Is it round?"], ["yes", "no", "yes"], images, strict=True)
        )
    ]
    model.task_dict = {"pope": {"test": docs}}
    kwargs = {"until": ["ASSISTANT:"], "max_new_tokens": 4, "temperature": 0, "do_sample": False, "num_beams": 1}
    prompt_kwargs = {"pre_prompt": "", "post_prompt": "\nAnswer the question using a single word or phrase."}
    generate = [
        instance(
            "generate_until",
            (pope.pope_doc_to_text(doc, prompt_kwargs), dict(kwargs), pope.pope_doc_to_visual, k, "pope", "test"),
            k,
        )
        for k, doc in enumerate(docs)
    ]
    answers = model.generate_until(generate)
    contexts = [request.args[0] for request in generate]
    assert answers == vlm.generate(images, contexts, max_new_tokens=4)
    scored = pope.pope_process_results(docs[0], [answers[0]])  # lmms-eval's own POPE scoring of our text
    assert scored["pope_accuracy"]["prediction"] == answers[0].lower().strip()

    # loglikelihood: the target from doc_to_target (a callable or a string), the image from doc_to_visual
    likelihood = [
        instance(
            "loglikelihood", (contexts[0], lambda doc: doc["answer"], pope.pope_doc_to_visual, 0, "pope", "test"), 0
        ),
        instance("loglikelihood", (contexts[1], " no", pope.pope_doc_to_visual, 1, "pope", "test"), 1),
        instance("loglikelihood", (contexts[2], "blue", None, 2, "pope", "test"), 2),
    ]
    results = model.loglikelihood(likelihood)
    assert results[0] == continuation_logprob(vlm, images[0], contexts[0], "yes")
    assert results[1] == continuation_logprob(vlm, images[1], contexts[1], "no")
    assert results[2] == continuation_logprob(vlm, None, contexts[2], "blue")
    assert all(isinstance(lp, float) and lp < 0 and isinstance(greedy, bool) for lp, greedy in results)


def test_lmms_eval_builds_the_model_from_its_argument_string(tiny) -> None:
    pytest.importorskip("lmms_eval")
    from lmms_eval.models import get_model

    run, vlm, _ = tiny
    model = get_model("ssmvlm").create_from_arg_string(f"run={run},device=cpu,batch_size=3", {"batch_size": None})
    assert model.batch_size == 3
    assert model.vlm.tokenizer.vocab_size == vlm.tokenizer.vocab_size
    with pytest.raises(NotImplementedError, match="single-round"):
        model.generate_until_multi_round([])
    with pytest.raises(ConfigError, match="batch_size: must be a positive integer, got 'auto'"):
        get_model("ssmvlm").create_from_arg_string(f"run={run},batch_size=auto")


TOY_TASK = """task: ssmvlm_toy
dataset_path: parquet
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 3
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""
TOY_UTILS = """import io

from PIL import Image


def doc_to_visual(doc):
    return [Image.open(io.BytesIO(doc["image"]["bytes"])).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"] + "\\nAnswer the question using a single word or phrase."
"""


def test_lmms_eval_evaluator_runs_a_task_with_the_model(tiny, tmp_path: Path) -> None:
    """lmms-eval's own evaluator, from a task YAML to its metric, with the model found by name (offline)."""
    pytest.importorskip("lmms_eval")
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    run, vlm, images = tiny
    encoded = []
    for image in images[:2]:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append({"bytes": buffer.getvalue(), "path": None})
    questions = ["What color is the shape?", "Which shape is shown?"]
    # the references are the model's own answers for one question, and a wrong one for the other
    answers = vlm.generate(
        images[:2], [q + "\nAnswer the question using a single word or phrase." for q in questions], max_new_tokens=3
    )
    rows = [
        {"question": questions[0], "answer": answers[0], "image": encoded[0]},
        {"question": questions[1], "answer": answers[1] + " not this", "image": encoded[1]},
    ]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("question", pa.string()), ("answer", pa.string()), ("image", image_type)])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "test.parquet")
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "toy.yaml").write_text(
        TOY_TASK.format(data=tmp_path / "test.parquet", cache=tmp_path / "cache")
    )
    (tmp_path / "task" / "utils.py").write_text(TOY_UTILS)
    results = simple_evaluate(
        model="ssmvlm",
        model_args=f"run={run},device=cpu,max_new_tokens=3",
        tasks=["ssmvlm_toy"],
        task_manager=TaskManager(include_path=str(tmp_path / "task")),
        batch_size=2,
        log_samples=True,
    )
    responses = [sample["resps"][0][0] for sample in results["samples"]["ssmvlm_toy"]]
    assert responses == answers
    assert results["results"]["ssmvlm_toy"]["exact_match,none"] == pytest.approx(0.5)
