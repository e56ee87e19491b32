"""The prompt that asks an LLM for a warm-start summary of a text prefix, in the style of the
release's summaries: 2-3 features, about 80-100 words in all, the last about the final token and
what must follow (parsing.py strips list markers and joins the features by a blank line)."""

from __future__ import annotations

import hashlib

INSTRUCTION = """Below is the beginning of a text. Imagine a language model reading it and \
stopping at the very LAST token. Describe what the model is representing at that last token.

Write 2-3 features, about 80-100 words in all. Each feature is one or two sentences about one \
thing the model is tracking at the last token: topic, genre, speaker, entities, syntax or \
intent. The last feature must be about the final token itself and what must follow next.

Answer inside <analysis> and </analysis> tags, one feature per paragraph, with no headings, \
numbering or bold, for example:
<analysis>
The text is a ... about ...

It is written by ... for ...

The final token "..." ends ..., so next must come ...
</analysis>

Text:
<text>
{text}
</text>"""


# For writers too small to follow the instruction above (a 135M model): one short request,
# read with the sentence rule (writers/parsing.py) from an answer started as "<analysis>\n".
SHORT_INSTRUCTION = """Text:
{text}

Describe this text in exactly two sentences. Sentence one: what the text is about. Sentence \
two: what its last words are and what must come next."""

INSTRUCTIONS = {"release": INSTRUCTION, "short": SHORT_INSTRUCTION}


def build_prompt(text: str, style: str = "release") -> str:
    """Fill the instruction template (`style`: release or short) with one text prefix."""
    if style not in INSTRUCTIONS:
        raise ValueError(f"unknown instruction {style!r}: choose one of {sorted(INSTRUCTIONS)}")
    # str.format only parses the template, so braces inside `text` are safe.
    return INSTRUCTIONS[style].format(text=text)


def instruction_digest(style: str = "release") -> str:
    """Hex sha256 of the instruction's template text: part of the writers' cache key, so an
    edit to the text above is never answered from answers cached for the old text."""
    if style not in INSTRUCTIONS:
        raise ValueError(f"unknown instruction {style!r}: choose one of {sorted(INSTRUCTIONS)}")
    return hashlib.sha256(INSTRUCTIONS[style].encode("utf-8")).hexdigest()
