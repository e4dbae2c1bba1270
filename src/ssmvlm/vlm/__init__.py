"""The VLM (frozen encoder → connector → LLM), its LLMs and tokenizers, prompt formats, and run loading."""

from ssmvlm.vlm.builder import VLMConfig, build_vlm, load_vlm, prepare_tokenizer
from ssmvlm.vlm.model import IGNORE_INDEX, VLM
from ssmvlm.vlm.prompts import PROMPT_FORMATS, PromptFormat, get_prompt_format

__all__ = [
    "IGNORE_INDEX",
    "PROMPT_FORMATS",
    "VLM",
    "PromptFormat",
    "VLMConfig",
    "build_vlm",
    "get_prompt_format",
    "load_vlm",
    "prepare_tokenizer",
]
