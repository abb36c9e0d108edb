"""Corpora: readers, tag repair, splits, encoding, the synthetic demo corpus and the ROCLING download."""

from ablate.data.readers import Sentence, read_conll, read_jsonl, read_corpus, write_conll, write_jsonl

__all__ = ["Sentence", "read_conll", "read_jsonl", "read_corpus", "write_conll", "write_jsonl"]
