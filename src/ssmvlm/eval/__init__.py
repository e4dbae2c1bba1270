"""ssmvlm.eval: metrics, the task registry and loaders, the evaluation runner, controls and the report."""

from ssmvlm.eval.metrics import normalize_vqa_answer, parse_box, vqa_score
from ssmvlm.eval.protocol import EvalModel
from ssmvlm.eval.runner import evaluate_model, evaluate_run

__all__ = ["EvalModel", "evaluate_model", "evaluate_run", "normalize_vqa_answer", "parse_box", "vqa_score"]
