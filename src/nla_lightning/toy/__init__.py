"""Toy world: synthetic corpus, word-level tokenizer and template explanations."""
