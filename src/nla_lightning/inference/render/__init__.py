"""Renderers of NLA explanations, steering and fidelity results (Markdown, JSON, HTML)."""

from nla_lightning.inference.render.report import Report, clean, token_dicts

__all__ = ["Report", "clean", "token_dicts"]
