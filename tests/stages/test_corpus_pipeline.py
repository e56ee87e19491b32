"""`python train.py data=corpus ...` on local text files with the tiny model, summaries from an
OpenAI-compatible server on 127.0.0.1 (with a fault), and a rerun served from the cache."""

import json

from omegaconf import OmegaConf

from nla_lightning.pipeline import run
from tests.conftest import TINY_RUN, compose
from tests.writers.conftest import llm  # noqa: F401  (the fake LLM server fixture)


def corpus_cfg(docs, server, out, cache, extra=()):
    overrides = [
        *[o for o in TINY_RUN if not o.startswith("data.")],
        "data=corpus",
        f"data.files=[{docs}]",
        "data.min_tokens=3",
        "data.max_tokens=40",
        "data.shard_rows=16",
        "writer=openai",
        f"writer.base_url={server}/v1",
        "writer.model=test-model",
        "writer.backoff_s=0.01",
        f"paths.cache_dir={cache}",
        f"paths.output_dir={out}",
        *extra,
    ]
    return OmegaConf.to_container(compose(overrides), resolve=True)


def test_corpus_pipeline_runs_end_to_end_and_reruns_from_cache(llm, tmp_path):  # noqa: F811
    from nla_lightning.toy.world import generate_documents

    docs = tmp_path / "docs"
    docs.mkdir()
    for d in generate_documents(40, seed=5):
        (docs / f"doc-{d.doc_id:03d}.txt").write_text(d.text, encoding="utf-8")
    llm.faults.extend(["500", "no_tags"])  # one retried row, one dropped row
    summary = run(corpus_cfg(docs, llm.url, tmp_path / "run", tmp_path / "cache"))
    stages = summary["stages"]
    assert {"av_sft", "ar_sft", "rl"} <= set(stages)
    writer = stages["data"]["writer"]
    assert set(writer) == {"av_sft", "ar_sft", "eval"}
    assert "1 dropped" in " ".join(writer.values())
    assert (tmp_path / "run" / "extract" / "progress.json").exists()
    first_requests = len(llm.requests)
    assert first_requests > 0
    body = llm.requests[-1].body
    assert body["model"] == "test-model" and "<analysis>" in body["messages"][0]["content"]
    # eval.json's examples show the held-out texts they explain (not only the explanations).
    import pyarrow.parquet as pq

    texts = pq.read_table(tmp_path / "run" / "data" / "eval.parquet").column("text").to_pylist()
    examples = stages["eval"]["examples"]["rl"]
    assert [e["text"] for e in examples] == texts[: len(examples)]
    assert len(examples) == min(5, len(texts))

    again = run(corpus_cfg(docs, llm.url, tmp_path / "again", tmp_path / "cache", ["stage=data"]))
    assert len(llm.requests) == first_requests  # every summary came from the cache
    assert set(again["stages"]) == {"target", "data"}
    on_disk = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert "from cache" in " ".join(on_disk["stages"]["data"]["writer"].values())


def test_corpus_without_documents_or_with_the_template_writer_is_refused(tmp_path):
    import pytest

    from nla_lightning.errors import NLAConfigError

    base = [o for o in TINY_RUN if not o.startswith("data.")]
    cfg = OmegaConf.to_container(
        compose([*base, "data=corpus", "writer=template", f"paths.output_dir={tmp_path}"]),
        resolve=True,
    )
    with pytest.raises(NLAConfigError, match="writer=template only knows the toy world"):
        run(cfg)
    cfg = OmegaConf.to_container(
        compose([*base, "data=corpus", f"paths.output_dir={tmp_path}"]),
        resolve=True,
    )
    with pytest.raises(NLAConfigError, match="data.files"):
        run(cfg)


def test_official_layout_response_column_gives_the_explanations(meta, tmp_path):
    import pytest
    import torch

    from nla_lightning.data.columns import table_explanations
    from nla_lightning.data.store import read_activations, write_activations
    from nla_lightning.errors import NLAConfigError

    responses = [
        "<explanation>\nthe colour is red .\n</explanation>",
        "<explanation>a</explanation>",
    ]
    path = write_activations(
        tmp_path / "av_sft.parquet", torch.randn(2, meta.d_model), {"response": responses}, meta
    )
    assert table_explanations(read_activations(path)) == ["the colour is red .", "a"]
    broken = write_activations(
        tmp_path / "b.parquet",
        torch.randn(1, meta.d_model),
        {"response": ["<explanation> x"]},
        meta,
    )
    with pytest.raises(NLAConfigError, match="closed <explanation>"):
        table_explanations(read_activations(broken))


def test_a_corpus_too_small_for_its_splits_is_refused_before_the_model_loads(tmp_path):
    import pytest

    from nla_lightning.errors import NLAConfigError

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(2):  # two documents cannot fill four splits
        (docs / f"doc-{i}.txt").write_text("a long enough document " * 20, encoding="utf-8")
    cfg = corpus_cfg(docs, "http://127.0.0.1:9/unused", tmp_path / "run", tmp_path / "cache")
    with pytest.raises(NLAConfigError, match=r"the 2 documents split as .* would be empty"):
        run(cfg)
    # Nothing was extracted (the check ran on the document ids, before the target loaded).
    assert not (tmp_path / "run" / "extract").exists()
    assert not (tmp_path / "run" / "data").exists()
