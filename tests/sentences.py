"""Four tagged sentences over three genres, shared by the loop, head and saving tests (small enough to overfit)."""

from __future__ import annotations

from ablate.data.readers import Sentence


def sentence(text: str, tags: list[str], genre: str = "ft", i: int = 0) -> Sentence:
    return Sentence(f"s{i}", genre, tuple(text), tuple(tags))


FOUR = [
    sentence("頭痛吃藥", ["B-SYMP", "I-SYMP", "O", "B-DRUG"], "ft", 0),
    sentence("胃痛看醫生", ["B-BODY", "O", "O", "O", "O"], "sm", 1),
    sentence("糖尿病患者", ["B-DISE", "I-DISE", "I-DISE", "O", "O"], "wa", 2),
    sentence("他說頭很痛", ["O", "O", "B-BODY", "O", "B-SYMP"], "ft", 3),
]
