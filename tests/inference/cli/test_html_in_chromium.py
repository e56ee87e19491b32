"""The nla-explain HTML page opened in headless Chromium (Debian `chromium`, installed by
.ci/run where the machine allows): after the page's script ran, every token and explanation
is in the DOM, and a click shows all samples of that token."""

from __future__ import annotations

import html
import json
import shutil
import subprocess

import pytest

from nla_lightning.inference.cli.explain import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")


def rendered_dom(page, tmp_path, fragment: str = "") -> str:
    uri = page.as_uri() + fragment
    done = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", uri],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_page_shows_tokens_and_explanations_in_a_browser(
    capsys, model_args, text, tokens, tmp_path
):
    page = tmp_path / "page.html"
    fast = ["--samples", "2", "--max-new-tokens", "4", "--seed", "0"]
    assert main([*model_args, "--text", text, *fast, "--format", "html", "--out", str(page)]) == 0
    assert main([*model_args, "--text", text, *fast, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    # Click the first token from inside the page, then dump the DOM the browser built.
    clicked = tmp_path / "clicked.html"
    clicked.write_text(
        page.read_text(encoding="utf-8").replace(
            "</body>",
            "<script>document.querySelector('span.tok[data-index]').click();</script></body>",
        ),
        encoding="utf-8",
    )
    dom = rendered_dom(clicked, tmp_path)
    for i, token in enumerate(tokens):
        assert f'data-index="{i}"' in dom and html.escape(token) in dom
    for t in data["tokens"]:
        best = t["samples"][0]["explanation"] or "(no explanation)"
        assert html.escape(best, quote=False).split(" ")[0] in dom
    # The click filled the side panel with token 0's samples (before it held only a hint).
    panel = dom.split('id="panel">', 1)[1].split("</aside>", 1)[0]
    assert "Click a token" not in panel
    for sample in data["tokens"][0]["samples"]:
        assert html.escape(sample["explanation"] or "(no explanation)", quote=False) in panel

    # A link ending in #token=N opens the page with token N selected and its samples shown.
    last = data["tokens"][-1]
    dom = rendered_dom(page, tmp_path, f"#token={last['index']}")
    panel = dom.split('id="panel">', 1)[1].split("</aside>", 1)[0]
    for sample in last["samples"]:
        assert html.escape(sample["explanation"] or "(no explanation)", quote=False) in panel
    assert f'class="tok sel" data-index="{last["index"]}"' in dom
    assert dom.count("tok sel") == 1
