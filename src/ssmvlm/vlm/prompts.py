"""Prompt formats, as prismatic-vlms builds them (``vicuna_v15_prompter.py``, ``base_prompter.py``).

A format turns a conversation into one string per turn; the dataset tokenizes the turns one by one so that the
loss mask falls exactly on the answer turns (see :mod:`ssmvlm.train.dataset`). ``<image>`` placeholders are
removed and messages stripped; an empty answer becomes one space, as upstream.

- ``vicuna-v15``: ``{system} USER: {msg} ASSISTANT: `` then ``{answer}</s>``; later human turns: no system.
- ``plain``: prismatic's ``PurePromptBuilder``: ``In: {msg}\\nOut: `` then ``{answer}</s>``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ssmvlm.utils.errors import ConfigError

VICUNA_SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
EOS_TEXT = "</s>"


@dataclass(frozen=True)
class PromptFormat:
    name: str
    system_prompt: str  # with its trailing space, or ""
    human_template: str  # "{msg}" is replaced by the user message
    eos: str = EOS_TEXT

    def wrap_turn(self, role: str, message: str, turn_index: int) -> str:
        """The string turn ``turn_index`` adds to the context (human turns at even indices)."""
        expected = "human" if turn_index % 2 == 0 else "gpt"
        if role != expected:
            raise ValueError(f"turn {turn_index} must be a {expected} turn, got {role!r}")
        message = message.replace("<image>", "").strip()
        if role == "gpt":
            return f"{message or ' '}{self.eos}"
        wrapped = self.human_template.format(msg=message)
        return self.system_prompt + wrapped if turn_index == 0 else wrapped

    def turn_strings(self, turns: list[tuple[str, str]]) -> list[str]:
        return [self.wrap_turn(role, text, index) for index, (role, text) in enumerate(turns)]

    def inference_prompt(self, message: str) -> str:
        """The prompt for one user message, ending right before the answer (rstripped, BOS not included)."""
        return self.wrap_turn("human", message, 0).rstrip()


PROMPT_FORMATS: dict[str, PromptFormat] = {
    "vicuna-v15": PromptFormat("vicuna-v15", VICUNA_SYSTEM_PROMPT + " ", "USER: {msg} ASSISTANT: "),
    "plain": PromptFormat("plain", "", "In: {msg}\nOut: "),
}


def get_prompt_format(name: str) -> PromptFormat:
    if name not in PROMPT_FORMATS:
        raise ConfigError("model.prompt_format", f"unknown prompt format {name!r}", allowed=sorted(PROMPT_FORMATS))
    return PROMPT_FORMATS[name]
