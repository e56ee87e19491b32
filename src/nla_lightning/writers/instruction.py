"""The prompt that asks an LLM for a warm-start summary of a text prefix, in the style of the
release's summaries: 2-3 features, about 80-100 words in all, the last about the final token and
what must follow (parsing.py strips list markers and joins the features by a blank line)."""

from __future__ import annotations

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


def build_prompt(text: str) -> str:
    """Fill the instruction template with one text prefix."""
    # str.format only parses the template, so braces inside `text` are safe.
    return INSTRUCTION.format(text=text)
