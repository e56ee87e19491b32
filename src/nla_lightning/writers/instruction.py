"""The prompt that asks an LLM for a warm-start summary of a text prefix."""

from __future__ import annotations

INSTRUCTION = """Below is the beginning of a text. Imagine a language model reading it and \
stopping at the very LAST token. Describe what the model is representing at that last token.

Write 2-3 short features, each 10-20 words. Each feature says one thing the model is \
tracking at the last token: topic, genre, speaker, entities, syntax or intent. The last \
feature must be about the very end of the text and what must follow next.

Answer with the features as a list, one per line, inside <analysis> and </analysis> tags, \
for example:
<analysis>
- first feature
- second feature
- last feature: the end of the text and what must follow
</analysis>

Text:
<text>
{text}
</text>"""


def build_prompt(text: str) -> str:
    """Fill the instruction template with one text prefix."""
    # str.format only parses the template, so braces inside `text` are safe.
    return INSTRUCTION.format(text=text)
