"""AnswerCache: keys, round trip, atomic files, concurrent puts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nla_lightning.writers import AnswerCache, cache_key


def simple_key(writer: str, model: str, prompt: str) -> str:
    return cache_key({"writer": writer, "model": model}, prompt)


def test_key_depends_on_every_setting_and_the_prompt():
    base = simple_key("openai", "m", "p")
    assert base == simple_key("openai", "m", "p")
    assert len({base, simple_key("anthropic", "m", "p"), simple_key("openai", "n", "p")}) == 3
    assert simple_key("openai", "m", "q") != base
    assert simple_key("ab", "c", "p") != simple_key("a", "bc", "p")
    assert cache_key({"writer": "openai", "model": "m", "max_tokens": 9}, "p") != base
    # The settings' order does not matter; their values' types do (0 and 0.0 are keyed apart,
    # so writers store floats as floats).
    assert cache_key({"model": "m", "writer": "openai"}, "p") == base
    assert cache_key({"t": 0}, "p") != cache_key({"t": 0.0}, "p")


def test_key_refuses_values_json_cannot_hold():
    with pytest.raises(TypeError):
        cache_key({"cache_dir": Path("x")}, "p")
    with pytest.raises(ValueError):
        cache_key({"temperature": float("nan")}, "p")


def test_round_trip_miss_and_no_tmp_files(tmp_path):
    cache = AnswerCache(tmp_path / "c")
    key = cache_key({"writer": "openai"}, "p")
    assert cache.get(key) is None
    cache.put(key, "answer ✓")
    assert cache.get(key) == "answer ✓"
    assert [p.name for p in (tmp_path / "c").iterdir()] == [f"{key}.json"]


def test_corrupt_entry_is_a_miss(tmp_path):
    cache = AnswerCache(tmp_path)
    key = cache_key({"writer": "w"}, "p")
    (tmp_path / f"{key}.json").write_text("{torn")
    assert cache.get(key) is None


def test_concurrent_puts_leave_a_valid_entry(tmp_path):
    cache = AnswerCache(tmp_path)
    key = cache_key({"writer": "w"}, "p")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: cache.put(key, f"answer {i}" * 200), range(64)))
    assert cache.get(key) in {f"answer {i}" * 200 for i in range(64)}
    assert len(list(tmp_path.iterdir())) == 1


WRITER_PROCESS = """
import sys
from nla_lightning.writers.cache import AnswerCache, cache_key
cache, name = AnswerCache(sys.argv[1]), sys.argv[2]
for round_ in range(20):
    for i in range(25):
        key = cache_key({"writer": "w"}, f"prompt {i}")
        cache.put(key, f"{name} {round_} " + "x" * 4000)
        seen = cache.get(key)
        assert seen is not None and seen.endswith("x" * 4000), repr(seen)[:80]
"""


def test_two_runs_sharing_the_cache_directory_never_see_a_torn_entry(tmp_path):
    import subprocess
    import sys

    runs = [
        subprocess.Popen([sys.executable, "-c", WRITER_PROCESS, str(tmp_path), name])
        for name in ("first", "second")
    ]
    assert [run.wait(timeout=120) for run in runs] == [0, 0]
    cache = AnswerCache(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 25 and all(f.endswith(".json") for f in files)  # no temp file left
    for i in range(25):
        answer = cache.get(cache_key({"writer": "w"}, f"prompt {i}"))
        assert answer.split()[0] in {"first", "second"} and answer.endswith("x" * 4000)
