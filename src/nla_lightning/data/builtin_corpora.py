"""Real text written by people that ships with Python itself, for runs without a corpus or a
network: `data.builtin=python_reference` is the prose of the Python language reference (the
`pydoc_data.topics` module behind `help()`, ~465k characters), one document per paragraph."""

from __future__ import annotations

import re
from collections.abc import Iterator

from nla_lightning.errors import NLAConfigError

MIN_WORDS = 30
# Prose: sentences, not grammar productions, tables or code.
_SENTENCE_END = re.compile(r"[.!?:]\s")


def _is_prose(paragraph: str) -> bool:
    lines = paragraph.splitlines()
    if len(paragraph.split()) < MIN_WORDS:
        return False
    if any(line.startswith((" ", "\t")) for line in lines):  # code, grammar, tables
        return False
    if ">>>" in paragraph or "::=" in paragraph or "====" in paragraph:
        return False
    letters = sum(c.isalpha() or c.isspace() for c in paragraph)
    return letters / len(paragraph) > 0.9 and bool(_SENTENCE_END.search(paragraph + " "))


def python_reference() -> Iterator[tuple[str, str]]:
    """(doc_id, text): the language reference's prose paragraphs, in a fixed order, each
    paragraph's lines joined into one."""
    from pydoc_data.topics import topics

    for topic in sorted(topics):
        for number, paragraph in enumerate(topics[topic].split("\n\n")):
            if _is_prose(paragraph):
                yield f"{topic}-{number}", " ".join(paragraph.split())


BUILTIN_CORPORA = {"python_reference": python_reference}


def builtin_documents(name: str) -> Iterator[tuple[str, str]]:
    if name not in BUILTIN_CORPORA:
        raise NLAConfigError(
            f"data.builtin={name!r}: choose one of {sorted(BUILTIN_CORPORA)}, or pass your own "
            "documents with data.files=[...]"
        )
    return BUILTIN_CORPORA[name]()
