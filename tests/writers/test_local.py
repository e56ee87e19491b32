"""LocalWriter on a tiny random Qwen2 saved to disk: batching, order, statuses, cache, and
answers cut off by max_new_tokens (used, never cached).

The random model never ends an answer on its own, so tests that need whole answers make some
of the tokens it does generate stop tokens (its generation config's eos_token_id)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config

from nla_lightning.writers import CutOffAnswer, LocalWriter, build_prompt, parse_summary

SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
TAGS = ["<analysis>", "</analysis>", "<text>", "</text>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEXTS = ["the cat sat", "a dog ran far away", "one", "red blue green", "the end is near"]


def _tokenizer() -> PreTrainedTokenizerFast:
    pre = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")]
    )
    words: set[str] = {"user", "assistant", "-"}
    for text in [*TEXTS, build_prompt("")]:
        for tag in TAGS:
            text = text.replace(tag, " ")
        words.update(piece for piece, _ in pre.pre_tokenize_str(text))
    vocab = {t: i for i, t in enumerate([*SPECIALS, *TAGS, *sorted(words)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # words joined by spaces
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    # Non-special so the tags survive skip_special_tokens decoding.
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in TAGS])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<|im_end|>"
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random 2-layer Qwen2 and its tokenizer, saved so from_pretrained runs for real."""
    path = tmp_path_factory.mktemp("tiny_qwen2")
    tokenizer = _tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        # Large weights make greedy outputs depend on the prompt, so order mix-ups show.
        initializer_range=0.5,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def generated_ids(writer: LocalWriter, text: str, n: int) -> list[int]:
    """The first `n` token ids `writer` generates for `text`, one prompt alone."""
    model, tokenizer = writer._load()
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": build_prompt(text)}],
        tokenize=False,
        add_generation_prompt=True,
    )
    enc = tokenizer([chat + writer.answer_prefix], return_tensors="pt", add_special_tokens=False)
    out = model.generate(
        **enc,
        do_sample=False,
        max_new_tokens=n,
        pad_token_id=tokenizer.pad_token_id,
        repetition_penalty=writer.repetition_penalty,
    )
    return out[0, enc["input_ids"].shape[1] :].tolist()


def stop_at(writer: LocalWriter, ids: set[int]) -> None:
    """Make `ids` stop tokens of `writer`'s loaded model, besides its eos."""
    model, tokenizer = writer._load()
    model.generation_config.eos_token_id = sorted({tokenizer.eos_token_id, *ids})


def end_every_answer(writer: LocalWriter, texts: list[str]) -> None:
    """Stop tokens such that every answer ends on its own by its second token."""
    stop_at(writer, {generated_ids(writer, text, 2)[1] for text in texts})


def test_batched_answers_match_one_by_one_in_input_order(tiny_model_dir):
    prompts = [build_prompt(t) for t in TEXTS]
    calls: list[int] = []
    batched = LocalWriter(str(tiny_model_dir), batch_size=2, max_new_tokens=6)
    answers = batched._answer_many(prompts, calls.append)
    assert calls == [2, 2, 1]
    single = LocalWriter(str(tiny_model_dir), batch_size=1, max_new_tokens=6)
    # Left padding must not change what each prompt generates, nor its position in the output.
    assert answers == single._answer_many(prompts, lambda n: None)
    assert all(isinstance(a, str) and a.strip() for a in answers)
    assert len(set(answers)) > 1, "outputs must differ per prompt for the order check to bite"


def test_every_row_gets_a_status_and_untagged_rows_are_dropped(tiny_model_dir, tmp_path):
    writer = LocalWriter(str(tiny_model_dir), batch_size=3, max_new_tokens=6, cache_dir=tmp_path)
    end_every_answer(writer, TEXTS)
    rows, report = writer.write(TEXTS, progress=False)
    raw = writer._answer_many([build_prompt(t) for t in TEXTS], lambda n: None)
    assert len(rows) == len(TEXTS)
    for row, answer in zip(rows, raw, strict=True):
        summary, status = parse_summary(answer)
        expected = "written" if status == "written" else "dropped"
        assert (row.status, row.summary) == (expected, summary)
        if status == "no_tags":
            assert row.reason == "no_tags"
    assert any(r.reason == "no_tags" for r in rows)
    assert report.written + report.dropped == len(TEXTS) and report.failed == 0
    assert report.cut_off == 0 and not any(isinstance(a, CutOffAnswer) for a in raw)

    # A rerun with the same generation settings (another batch size) is served from the cache
    # without loading the model.
    again = LocalWriter(str(tiny_model_dir), max_new_tokens=6, cache_dir=tmp_path)
    rows2, report2 = again.write(TEXTS, progress=False)
    assert rows2 == rows and report2.cached == len(TEXTS) and again._loaded is None
    # Another max_new_tokens generates afresh.
    longer = LocalWriter(str(tiny_model_dir), max_new_tokens=7, cache_dir=tmp_path)
    _, report3 = longer.write(TEXTS, progress=False)
    assert report3.cached == 0 and longer._loaded is not None


def test_answers_that_run_into_max_new_tokens_are_used_but_not_cached(tiny_model_dir, tmp_path):
    writer = LocalWriter(str(tiny_model_dir), batch_size=2, max_new_tokens=6, cache_dir=tmp_path)
    stop = generated_ids(writer, TEXTS[-1], 1)[0]
    stop_at(writer, {stop})  # the last text's answer ends at once, most others run on
    cut = [stop not in generated_ids(writer, text, 6) for text in TEXTS]
    assert not cut[-1] and any(cut), "the test needs both kinds of answer"

    rows, report = writer.write(TEXTS, progress=False)
    # Parsed like any answer (the random model's have no tags, so every row is dropped and
    # says whether it was cut off), but only whole answers reach the cache.
    assert all(r.status == "dropped" for r in rows)
    assert [r.reason.endswith("(cut off: max_new_tokens=6)") for r in rows] == cut
    assert report.cut_off == sum(cut)
    assert len(list(tmp_path.glob("*.json"))) == cut.count(False)

    again = LocalWriter(str(tiny_model_dir), max_new_tokens=6, cache_dir=tmp_path)
    _, report2 = again.write(TEXTS, progress=False)
    assert report2.cached == cut.count(False) and again._loaded is not None


def test_bad_dtype_is_rejected(tiny_model_dir):
    with pytest.raises(ValueError, match="dtype"):
        LocalWriter(str(tiny_model_dir), dtype="float33")._answer_many(["x"], lambda n: None)


def test_answer_prefix_starts_every_answer_and_keys_its_own_cache(tiny_model_dir, tmp_path):
    """The prefix is generated from (so it starts each raw answer), and answers made with it
    are never served to a writer without it: the generation settings are in the cache key."""
    primed = LocalWriter(
        str(tiny_model_dir),
        max_new_tokens=4,
        cache_dir=tmp_path,
        answer_prefix="<analysis>\n",
        repetition_penalty=1.3,
    )
    raw = primed._answer_many([build_prompt(t) for t in TEXTS[:2]], lambda n: None)
    assert all(answer.startswith("<analysis>\n") for answer in raw)
    end_every_answer(primed, TEXTS[:2])  # whole answers, so they are cached
    primed.write(TEXTS[:2], progress=False)
    _, report = LocalWriter(str(tiny_model_dir), max_new_tokens=4, cache_dir=tmp_path).write(
        TEXTS[:2], progress=False
    )
    assert report.cached == 0
    _, again = primed.write(TEXTS[:2], progress=False)
    assert again.cached == 2
    with pytest.raises(ValueError, match="repetition_penalty"):
        LocalWriter(str(tiny_model_dir), repetition_penalty=0)
