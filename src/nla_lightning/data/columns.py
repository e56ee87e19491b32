"""The warm-start explanations of a dataset, from whichever column its layout keeps them in.

- nla_lightning's own files: an `explanation` column (and `response` beside it);
- the release's AV-SFT files: `response`, `<explanation>\\n{text}\\n</explanation>`;
- the release's AR-SFT files: only `prompt`, the WHOLE AR input
  `critic_template.format(explanation=text)`, so the text is what the template wraps.
A `prompt` of chat messages (AV-SFT, RL) is the AV's input, never an explanation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nla_lightning.core.meta import NLAMeta
from nla_lightning.core.verbalizer import extract_explanation
from nla_lightning.errors import NLAConfigError

# Stands in for the explanation when the template is formatted, to split it into the text
# before and after: a NUL never occurs in a template.
_MARK = "\x00"


def explanations(columns: Mapping[str, Sequence[Any]], meta: NLAMeta) -> list[str]:
    """Warm-start explanations of every row: our `explanation` column, the bodies of
    `response`, or the AR inputs of an AR-SFT `prompt` column with the template removed."""
    if "explanation" in columns:
        return list(columns["explanation"])
    if "response" in columns:
        return response_bodies(columns["response"])
    prompts = columns.get("prompt")
    if prompts is not None and holds_ar_inputs(prompts, meta):
        return ar_input_bodies(prompts, meta.critic_template)
    raise NLAConfigError(
        "this dataset has no 'explanation' or 'response' column and no 'prompt' column of AR "
        "inputs: it holds no warm-start explanations (was it written for the RL part?)"
    )


def response_bodies(responses: Sequence[str | None]) -> list[str]:
    """The text inside each response's `<explanation>` tags."""
    bodies = [None if r is None else extract_explanation(r) for r in responses]
    missing = [i for i, b in enumerate(bodies) if b is None]
    if missing:
        raise NLAConfigError(
            f"rows {missing[:5]} have a response without a closed <explanation> tag"
        )
    return bodies


def holds_ar_inputs(prompts: Sequence[Any], meta: NLAMeta) -> bool:
    """Whether a `prompt` column holds AR inputs: strings, unless they are the AV's own
    message (nla_lightning's files store it as a plain string beside `explanation`)."""
    first = next((p for p in prompts if p is not None), None)
    if not isinstance(first, str):
        return False  # chat messages: the AV's prompt
    actor = meta.actor_message()
    return not all(p == actor for p in prompts)


def ar_input_bodies(prompts: Sequence[str | None], critic_template: str) -> list[str]:
    """Each AR input with the template's text before and after `{explanation}` removed."""
    prefix, suffix = critic_template.format(explanation=_MARK).split(_MARK)
    bodies = []
    for row, prompt in enumerate(prompts):
        problem = _template_mismatch(prompt, prefix, suffix)
        if problem:
            raise NLAConfigError(
                f"row {row} of the 'prompt' column is not an AR input of this dataset's critic "
                f"template {critic_template!r}: {problem}. The template comes from the "
                "sidecar's prompt_templates.critic: fix it there, or drop the row"
            )
        bodies.append(prompt[len(prefix) : len(prompt) - len(suffix)])
    return bodies


def _template_mismatch(prompt: str | None, prefix: str, suffix: str) -> str | None:
    if not isinstance(prompt, str):
        return f"it is {prompt!r}, not a string"
    if not prompt.startswith(prefix):
        return f"it does not start with {prefix!r} (it starts {prompt[: len(prefix) + 20]!r})"
    if not prompt.endswith(suffix) or len(prompt) < len(prefix) + len(suffix):
        tail = prompt[max(0, len(prompt) - len(suffix) - 20) :]
        return f"it does not end with {suffix!r} (it ends {tail!r})"
    return None


def table_explanations(table: Any) -> list[str]:
    """The warm-start explanations of a read dataset (`data.store.ActivationTable`)."""
    return explanations(table.columns, table.meta)
