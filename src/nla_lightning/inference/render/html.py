"""One self-contained HTML page: tokens coloured by best score, samples on click."""

from __future__ import annotations

from html import escape

from nla_lightning.inference.render.document import Document, token_dicts

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;display:flex;min-height:100vh}
main{flex:3;padding:1.5em;line-height:2}
aside{flex:2;padding:1.5em;border-left:1px solid #ccc;background:#fafafa}
.tok{white-space:pre-wrap;font-family:monospace;padding:2px 1px;border-radius:3px;cursor:pointer}
.tok.none{background:#e0e0e0;cursor:default}
.tok.sel{outline:2px solid #333}
.legend{display:flex;align-items:center;gap:.5em;font-size:.9em}
.bar{width:12em;height:1em;background:linear-gradient(to right,hsl(0,75%,75%),
hsl(60,75%,75%),hsl(120,75%,75%))}
.samples{display:none}
"""

# Clicking a token copies its hidden sample list into the side panel; a link ending in
# "#token=N" opens the page with token N selected (to share one token's explanations).
SCRIPT = """
document.querySelectorAll('.tok[data-index]').forEach(function(el){
  el.addEventListener('click',function(){
    document.querySelectorAll('.tok.sel').forEach(function(s){s.classList.remove('sel')});
    el.classList.add('sel');
    var src=document.getElementById('samples-'+el.dataset.index);
    document.getElementById('panel').innerHTML=src?src.innerHTML:'';
  });
});
var chosen=location.hash.match(/^#token=(\\d+)$/);
var first=chosen&&document.querySelector('.tok[data-index="'+chosen[1]+'"]');
if(first){first.click();}
"""


def colour(score: float | None) -> str:
    """Red (-1) through yellow (0) to green (1); scores outside [-1, 1] are clamped."""
    if score is None:
        return "#e0e0e0"
    hue = (max(-1.0, min(1.0, score)) + 1) * 60
    return f"hsl({hue:.0f},75%,75%)"


def text_or_none(value: object) -> str:
    return "(no explanation)" if value is None else str(value)


def span(index: int, token: str, entry: dict[str, object] | None) -> str:
    """A token span; explained ones carry data-index, a title (best) and a score colour."""
    if entry is None:
        return f'<span class="tok none">{escape(token)}</span>'
    title = escape(text_or_none(entry["best"]), quote=True)
    style = f"background:{colour(entry['best_score'])}"  # type: ignore[arg-type]
    return (
        f'<span class="tok" data-index="{index}" title="{title}" style="{style}">'
        f"{escape(token)}</span>"
    )


def samples_block(entry: dict[str, object]) -> str:
    """The hidden panel content of one token: its samples with score and cosine."""
    items = "".join(
        f"<li><b>{s['score']}</b> (cos {s['cosine']}) {escape(text_or_none(s['explanation']))}</li>"
        for s in entry["samples"]  # type: ignore[attr-defined]
    )
    head = f"<h3>token {entry['index']}: <code>{escape(str(entry['token']))}</code></h3>"
    return f'<div class="samples" id="samples-{entry["index"]}">{head}<ol>{items}</ol></div>'


def explanations_html(report: Document) -> str:
    """The whole page as one string; every text from the model or user is escaped."""
    entries = {int(e["index"]): e for e in token_dicts(report.results)}  # type: ignore[call-overload]
    # Without the full token list, show only the explained tokens, at their own indices.
    pairs = list(enumerate(report.tokens)) or [(r.index, r.token) for r in report.results]
    spans = "".join(span(i, t, entries.get(i)) for i, t in pairs)
    blocks = "".join(samples_block(e) for e in entries.values())
    title = f"NLA explanations — {report.base_model}, layer {report.layer}"
    legend = (
        '<div class="legend">best score: -1 <span class="bar"></span> 1'
        ' &nbsp; <span class="tok none">grey</span> = not explained</div>'
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<main><h1>{escape(title)}</h1>{legend}<p>{spans}</p>{blocks}</main>"
        '<aside><h2>Samples</h2><div id="panel">Click a token to see its samples.</div></aside>'
        f"<script>{SCRIPT}</script></body></html>\n"
    )
