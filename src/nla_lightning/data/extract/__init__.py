"""Corpus extraction: prefix activations of real documents, split by document, resumable."""

from nla_lightning.data.extract.prefixes import prefix_lengths
from nla_lightning.data.extract.reader import read_split
from nla_lightning.data.extract.run import extract_corpus
from nla_lightning.data.extract.sources import iter_documents
from nla_lightning.data.extract.stats import ExtractionStats

__all__ = ["ExtractionStats", "extract_corpus", "iter_documents", "prefix_lengths", "read_split"]
