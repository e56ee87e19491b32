"""Offline word-level tokenizer for the toy world, with a Qwen-style chat template."""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from nla_lightning.toy.summaries import explanation_vocabulary
from nla_lightning.toy.world import vocabulary

INJECTION_CHAR = "㊗"
PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, UNK_TOKEN, IM_START, IM_END)
# Non-special so they survive decode(skip_special_tokens=True).
ADDED_TOKENS: tuple[str, ...] = (
    "<explanation>",
    "</explanation>",
    "<concept>",
    "</concept>",
    "<text>",
    "</text>",
    "<summary>",
    "<analysis>",
    "</analysis>",
    INJECTION_CHAR,
)
CHAT_ROLES: tuple[str, ...] = ("system", "user", "assistant")

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    # Each punctuation char is its own word, so "red." and "red ." tokenize alike.
    return pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )


def _words_of(texts: Sequence[str]) -> set[str]:
    pre = _pre_tokenizer()
    words: set[str] = set()
    for text in texts:
        # Strip tags first so they are not shredded into "<", "concept", ">" words.
        for tag in (*SPECIAL_TOKENS, *ADDED_TOKENS):
            text = text.replace(tag, " ")
        words.update(piece for piece, _ in pre.pre_tokenize_str(text))
    return words


def build_toy_tokenizer(extra_texts: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the toy world, explanation templates and `extra_texts`."""
    fixed = [*SPECIAL_TOKENS, *ADDED_TOKENS]
    words = set(vocabulary()) | set(explanation_vocabulary()) | set(CHAT_ROLES)
    words |= _words_of(extra_texts)
    ordered = fixed + sorted(words - set(fixed))
    vocab = {token: i for i, token in enumerate(ordered)}

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tok.pre_tokenizer = _pre_tokenizer()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in ADDED_TOKENS])

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        eos_token=IM_END,
        padding_side="right",
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf
