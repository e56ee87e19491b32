"""Renderers of NLA explanations, steering and fidelity results (Markdown, JSON, HTML)."""

from nla_lightning.inference.render.document import Document, clean, token_dicts

__all__ = ["Document", "clean", "token_dicts"]
