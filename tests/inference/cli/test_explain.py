"""nla-explain in-process: each format, --tokens, --file/--out, and its errors."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from nla_lightning.inference.cli.explain import main
from tests.launcher import run_python

FAST = ["--samples", "2", "--max-new-tokens", "4", "--seed", "0"]


def explain(capsys, *args: str) -> tuple[int, str, str]:
    code = main([*args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_every_token_and_its_samples(capsys, model_args, text, tokens):
    code, out, _ = explain(capsys, *model_args, "--text", text, *FAST, "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["text"] == text and data["layer"] == 2
    assert [t["index"] for t in data["tokens"]] == list(range(len(tokens)))
    assert [t["token"] for t in data["tokens"]] == tokens
    for t in data["tokens"]:
        assert len(t["samples"]) == 2
        assert t["best_score"] == max(s["score"] for s in t["samples"])


def test_markdown_has_a_row_per_token(capsys, model_args, text, tokens):
    code, out, _ = explain(capsys, *model_args, "--text", text, *FAST, "--format", "md")
    assert code == 0
    for i, token in enumerate(tokens):
        assert re.search(rf"^\| {i} \| {re.escape(json.dumps(token))} \| ", out, re.M), token
    assert out.count("\n1. (") == out.count("\n2. (") == len(tokens)


def test_html_is_self_contained_and_complete(capsys, model_args, text, tokens, tmp_path):
    out_file = tmp_path / "page.html"
    args = [*model_args, "--text", text, *FAST, "--format", "html", "--out", str(out_file)]
    code, out, _ = explain(capsys, *args)
    assert code == 0 and out == ""
    page = out_file.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    spans = re.findall(
        r'<span class="tok" data-index="(\d+)" title="[^"]*"[^>]*>([^<]*)</span>', page
    )
    assert spans == [(str(i), html.escape(t)) for i, t in enumerate(tokens)]
    data = json.loads(main_json(capsys, model_args, text))
    for t in data["tokens"]:
        for s in t["samples"]:
            assert html.escape(s["explanation"] or "(no explanation)") in page


def main_json(capsys, model_args, text) -> str:
    assert main([*model_args, "--text", text, *FAST, "--format", "json"]) == 0
    return capsys.readouterr().out


def test_chosen_tokens_from_a_file(capsys, model_args, text, tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    code, out, _ = explain(
        capsys, *model_args, "--file", str(path), "--tokens", "1,3", *FAST, "--format", "json"
    )
    assert code == 0
    assert [t["index"] for t in json.loads(out)["tokens"]] == [1, 3]


def test_missing_text_is_a_usage_error(capsys, model_args):
    code, _, err = explain(capsys, *model_args)
    assert code == 2 and "--text" in err and "--file" in err


def test_missing_av_dir_reports_the_config_error(capsys, model_args, text, tmp_path):
    args = [*model_args, "--text", text]
    args[1] = str(tmp_path / "no_such_av")
    code, _, err = explain(capsys, *args)
    assert code == 2
    assert err.startswith("nla-explain: error: no NLA metadata at")


def test_empty_text_is_refused(capsys, model_args, tmp_path):
    code, _, err = explain(capsys, *model_args, "--text", "")
    assert code == 2 and "empty" in err
    path = tmp_path / "blank.txt"
    path.write_text("  \n", encoding="utf-8")
    code, _, err = explain(capsys, *model_args, "--file", str(path))
    assert code == 2 and "empty" in err


def test_unreadable_files_and_bad_tokens(capsys, model_args, text, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9".encode("latin-1"))
    code, _, err = explain(capsys, *model_args, "--file", str(path))
    assert code == 2 and "not valid UTF-8" in err
    code, _, err = explain(capsys, *model_args, "--file", str(tmp_path / "absent.txt"))
    assert code == 2 and "cannot read --file" in err
    code, _, err = explain(capsys, *model_args, "--text", text, "--tokens", "0,99", *FAST)
    assert code == 2 and "out of range" in err
    code, _, err = explain(capsys, *model_args, "--text", text, "--tokens", "a,b")
    assert code == 2 and "comma-separated" in err


def test_module_entry_point_runs(model_args, text):
    root = Path(__file__).resolve().parents[3]
    cmd = [
        "-m",
        "nla_lightning.inference.cli.explain",
        *model_args,
        "--text",
        text,
        *FAST,
        "--format",
        "json",
    ]
    done = run_python(cmd, root)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["tokens"]) == 6
