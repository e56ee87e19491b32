"""Every writer's cache key: each constructor argument either changes the key (it can change the
answer) or is declared in `settings_outside_key` (it cannot), and a new argument fails here
until it is put on one side or the other."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from nla_lightning.writers import WRITERS, AnthropicWriter, LocalWriter, OpenAIWriter, cache_key
from nla_lightning.writers import instruction as instruction_module
from nla_lightning.writers.base import SummaryWriter

PROMPT = "a prompt"
REQUIRED: dict[type[SummaryWriter], dict[str, Any]] = {
    OpenAIWriter: {"base_url": "http://127.0.0.1:1/v1", "model": "m"},
    AnthropicWriter: {"model": "m"},
    LocalWriter: {"model_or_path": "m"},
}
# Another value for every constructor argument of every writer ("TMP": a fresh directory).
OTHER: dict[str, Any] = {
    # Can change the answer.
    "model": "other-model",
    "model_or_path": "other-model",
    "base_url": "http://127.0.0.1:2/v1",
    "max_tokens": 512,
    "temperature": 0.7,
    "instruction": "short",
    "max_new_tokens": 64,
    "dtype": "bfloat16",
    "device": "cuda",
    "answer_prefix": "<analysis>\n",
    "repetition_penalty": 1.2,
    # Cannot: how requests are sent, where things are kept, parsing after the cache.
    "api_key_env": "OTHER_KEY_ENV",
    "concurrency": 3,
    "max_retries": 1,
    "timeout_s": 5.0,
    "backoff_s": 0.5,
    "max_retry_after_s": 5.0,
    "jitter": False,
    "batch_size": 2,
    "models_dir": "/elsewhere",
    "cache_dir": "TMP",
    "min_features": 3,
    "sentence_rule": True,
    "ending_words": 2,
}


def constructor_args(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword arguments `cls(...)` takes, following **kwargs up to the parents."""
    args: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())[1:]
        for param in params:
            if param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                args.setdefault(param.name, param)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return args


def key_of(writer: SummaryWriter) -> str:
    return cache_key(writer.answer_settings(), PROMPT)


CASES = [(cls, arg) for cls in WRITERS.values() for arg in constructor_args(cls)]


@pytest.mark.parametrize("cls", list(WRITERS.values()), ids=lambda c: c.name)
def test_every_constructor_argument_has_another_value_here(cls):
    unknown = sorted(set(constructor_args(cls)) - set(OTHER))
    assert not unknown, (
        f"{cls.__name__} takes {unknown}: add another value to OTHER, and either put the "
        "argument in answer_settings() (it can change the answer) or in settings_outside_key"
    )
    # A name there that no constructor takes is a typo (the base's hold for every subclass).
    declared = cls.settings_outside_key - SummaryWriter.settings_outside_key
    stray = sorted(declared - set(constructor_args(cls)))
    assert not stray, f"{cls.__name__}.settings_outside_key names no argument: {stray}"
    assert SummaryWriter.settings_outside_key <= set(constructor_args(SummaryWriter))


@pytest.mark.parametrize(("cls", "arg"), CASES, ids=[f"{c.name}-{a}" for c, a in CASES])
def test_an_argument_changes_the_key_exactly_when_it_can_change_the_answer(cls, arg, tmp_path):
    other = str(tmp_path) if OTHER[arg] == "TMP" else OTHER[arg]
    default = constructor_args(cls)[arg].default
    assert other != default, f"OTHER[{arg!r}] must differ from the default"
    base = key_of(cls(**REQUIRED[cls]))
    changed = key_of(cls(**{**REQUIRED[cls], arg: other}))
    if arg in cls.settings_outside_key:
        assert changed == base, f"{arg} cannot change the answer, so must not be in the key"
    else:
        assert changed != base, f"{arg} can change the answer, so must be in answer_settings()"


@pytest.mark.parametrize("cls", list(WRITERS.values()), ids=lambda c: c.name)
def test_editing_the_instruction_text_changes_the_key(cls, monkeypatch):
    before = cls(**REQUIRED[cls]).answer_settings()
    edited = instruction_module.INSTRUCTIONS["release"] + "\nBe brief."
    monkeypatch.setitem(instruction_module.INSTRUCTIONS, "release", edited)
    after = cls(**REQUIRED[cls]).answer_settings()
    # The prompt changes too; the key changes even for the same prompt string.
    assert cache_key(after, PROMPT) != cache_key(before, PROMPT)
    assert after["instruction"] == before["instruction"] == "release"


def test_same_setting_spelled_differently_keys_alike():
    assert key_of(OpenAIWriter("http://h/v1", "m", temperature=0)) == key_of(
        OpenAIWriter("http://h/v1/", "m", temperature=0.0)
    )
    assert key_of(AnthropicWriter("m", temperature=1)) == key_of(
        AnthropicWriter("m", temperature=1.0)
    )
    assert key_of(LocalWriter("m", repetition_penalty=1)) == key_of(LocalWriter("m"))
    # The kind of device can change greedy answers, which one of a kind cannot.
    assert key_of(LocalWriter("m", device="cuda:0")) == key_of(LocalWriter("m", device="cuda:1"))
    assert key_of(LocalWriter("m", device="cpu")) != key_of(LocalWriter("m", device="cuda"))


def test_settings_are_json_and_name_the_writer():
    for cls, required in REQUIRED.items():
        settings = cls(**required).answer_settings()
        assert settings["writer"] == cls.name and settings["model"] == "m"
        assert len(settings["instruction_sha256"]) == 64
        key_of(cls(**required))  # JSON-able, or cache_key raises
