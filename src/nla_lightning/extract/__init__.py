"""Corpus extraction: prefix activations of real documents, split by document, resumable."""

from nla_lightning.extract.prefixes import prefix_lengths
from nla_lightning.extract.reader import read_split
from nla_lightning.extract.report import ExtractionReport
from nla_lightning.extract.run import extract_corpus
from nla_lightning.extract.sources import iter_documents

__all__ = ["ExtractionReport", "extract_corpus", "iter_documents", "prefix_lengths", "read_split"]
