"""The AV's and AR's prompt templates, by the name a model preset gives (`model.templates`).

`reference` is the release's wording (method.md, "Prompt templates"); `toy` is a one-line AV
prompt in the toy tokenizer's small vocabulary, with the release's AR template."""

from __future__ import annotations

from nla_lightning.errors import NLAConfigError

REFERENCE_ACTOR_TEMPLATE = (
    "You are a meticulous AI researcher conducting an important investigation into activation "
    "vectors from a language model. Your overall task is to describe the semantic content of "
    "that activation vector.\n\n"
    "We will pass the vector enclosed in <concept> tags into your context. You must then "
    "produce an explanation for the vector, enclosed within <explanation> tags. The "
    "explanation consists of 2-3 text snippets describing that vector.\n\n"
    "Here is the vector:\n\n"
    "<concept>{injection_char}</concept>\n\n"
    "Please provide an explanation."
)
REFERENCE_CRITIC_TEMPLATE = "Summary of the following text: <text>{explanation}</text> <summary>"

TOY_ACTOR_TEMPLATE = "Explain the vector <concept>{injection_char}</concept> ."

TEMPLATES = {
    "reference": (REFERENCE_ACTOR_TEMPLATE, REFERENCE_CRITIC_TEMPLATE),
    "toy": (TOY_ACTOR_TEMPLATE, REFERENCE_CRITIC_TEMPLATE),
}


def templates(name: str) -> tuple[str, str]:
    """(actor, critic) templates of a named set."""
    if name not in TEMPLATES:
        raise NLAConfigError(
            f"unknown prompt templates model.templates={name!r}: choose one of {sorted(TEMPLATES)}"
        )
    return TEMPLATES[name]
