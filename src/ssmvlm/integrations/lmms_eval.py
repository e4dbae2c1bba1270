"""An lmms-eval model for any ssmvlm run: ``lmms-eval --model ssmvlm --model_args run=RUN_DIR ...``.

Needs the ``lmms`` extra (``pip install 'ssmvlm[lmms]'``, lmms-eval 0.7). The class is registered the two ways
lmms-eval 0.7 finds models: ``@register_model("ssmvlm")`` and the ``lmms_eval.models`` entry point declared in
``pyproject.toml`` (:func:`manifest`), so ``--model ssmvlm`` works without ``--include_path``.

Model arguments: ``run`` (a trained run directory), ``device`` (default: CUDA when available), ``batch_size``
(generation batch, default 1) and ``max_new_tokens`` (when a task sets none, default 128); from Python, ``vlm=``
passes a VLM already loaded. One process; one image per prompt. Answers to ``loglikelihood`` are scored as the
assistant's turn (see :func:`ssmvlm.vlm.conversation.continuation_logprob`); multi-round generation is not
supported.
"""

from __future__ import annotations

from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.api.registry import register_model

from ssmvlm.integrations import requests as harness
from ssmvlm.utils.errors import ConfigError
from ssmvlm.utils.progress import progress_bar

MODEL_NAME = "ssmvlm"


@register_model(MODEL_NAME)
class SsmvlmLMM(lmms):
    """A trained ssmvlm run behind lmms-eval's simple-model interface."""

    is_simple = True

    def __init__(
        self,
        run: str,
        device: str | None = None,
        batch_size: int | str = 1,
        max_new_tokens: int | str = 128,
        vlm: Any = None,
        **harness_args: Any,  # lmms-eval also passes settings of its own (e.g. max_batch_size) that do not apply
    ) -> None:
        super().__init__()
        if not str(batch_size).isdigit() or int(batch_size) < 1:
            raise ConfigError("batch_size", f"must be a positive integer, got {batch_size!r}")
        if vlm is None:
            from ssmvlm.vlm import load_vlm  # heavy: only when lmms-eval builds the model

            vlm = load_vlm(run, device=device)
        self.vlm = vlm
        self.run = run
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)

    def _doc(self, request: Instance) -> Any:
        *_, doc_id, task, split = request.args
        return self.task_dict[task][split][doc_id]

    def _image(self, request: Instance, doc_to_visual: Any) -> Any:
        visuals = doc_to_visual(self._doc(request)) if doc_to_visual is not None else None
        return harness.one_image(visuals, f"lmms-eval task {request.task_name} doc {request.doc_id}")

    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers: list[str] = [""] * len(requests)
        # consecutive requests with the same generation kwargs are answered as one batch
        batches: list[list[int]] = []
        for index, request in enumerate(requests):
            same = batches and requests[batches[-1][0]].args[1] == request.args[1]
            if same and len(batches[-1]) < self.batch_size:
                batches[-1].append(index)
            else:
                batches.append([index])
        with progress_bar() as progress:
            bar = progress.add_task("lmms-eval generate_until", total=len(requests), status="")
            for batch in batches:
                chosen = [requests[i] for i in batch]
                contexts = [r.args[0] for r in chosen]
                images = [self._image(r, r.args[2]) for r in chosen]
                gen_kwargs = dict(chosen[0].args[1] or {})
                texts = harness.generate_until(
                    self.vlm, contexts, images, gen_kwargs, default_max_new_tokens=self.max_new_tokens
                )
                for index, request, text in zip(batch, chosen, texts, strict=True):
                    answers[index] = text
                    self.cache_hook.add_partial("generate_until", (request.args[0], gen_kwargs), text)
                progress.update(bar, advance=len(batch))
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        results = []
        with progress_bar() as progress:
            bar = progress.add_task("lmms-eval loglikelihood", total=len(requests), status="")
            for request in requests:
                context, doc_to_target, doc_to_visual, *_ = request.args
                target = doc_to_target if isinstance(doc_to_target, str) else doc_to_target(self._doc(request))
                result = harness.loglikelihood(self.vlm, context, str(target), self._image(request, doc_to_visual))
                self.cache_hook.add_partial("loglikelihood", (context, target), result)
                results.append(result)
                progress.update(bar, advance=1)
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("ssmvlm's lmms-eval model answers single-round requests only")


def manifest() -> Any:
    """The ``lmms_eval.models`` entry point: where lmms-eval 0.7 finds this model by name."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.SsmvlmLMM")
