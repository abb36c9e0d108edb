"""A synthetic English-like word-level corpus: CoNLL-2003 style (`word POS NER`, `-DOCSTART-` between documents),
tags in BIOES with `_` separators (`B_disease`, `E_disease`, `S_drug`). Offline, seeded, byte-identical per seed:
what the word-level example study (`studies/words_demo.yaml`) and its tests read.
"""

from __future__ import annotations

import random
from pathlib import Path

from ablate.errors import UserError

LEXICON = {
    "disease": ["diabetes", "type 2 diabetes", "influenza", "chronic kidney disease", "asthma", "hypertension",
                "acute bronchitis", "migraine", "gastric ulcer", "atrial fibrillation"],
    "drug": ["metformin", "insulin glargine", "ibuprofen", "amoxicillin", "aspirin", "salbutamol", "omeprazole",
             "warfarin", "paracetamol"],
    "symptom": ["headache", "chest pain", "shortness of breath", "fever", "persistent cough", "nausea", "fatigue",
                "blurred vision"],
    "body": ["kidney", "left ventricle", "stomach", "lungs", "liver", "lower back", "retina"],
    "person": ["Dr. Chen", "Dr. Maria Lopez", "Nurse Wang", "Professor Ito", "Dr. Okafor"],
}
TEMPLATES = [
    "The patient with {disease} was given {drug} after reporting {symptom} .",
    "{person} prescribed {drug} for {disease} .",
    "Patients who report {symptom} should have their {body} examined .",
    "{symptom} and {symptom} are common signs of {disease} .",
    "According to {person} , {drug} may damage the {body} .",
    "A new study links {disease} to changes in the {body} .",
    "{person} recommends {drug} rather than {drug} for {symptom} .",
    "Long-term {disease} often affects the {body} and causes {symptom} .",
]
POS = {".": ".", ",": ",", "the": "DT", "a": "DT", "The": "DT", "A": "DT", "and": "CC", "for": "IN", "of": "IN",
       "with": "IN", "to": "TO", "after": "IN", "in": "IN", "than": "IN", "may": "MD", "should": "MD"}


def _sentence(rng: random.Random) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for piece in rng.choice(TEMPLATES).split():
        if piece.startswith("{") and piece.endswith("}"):
            etype = piece[1:-1].split("}")[0]
            words = rng.choice(LEXICON[etype]).split()
            for i, w in enumerate(words):
                role = "S" if len(words) == 1 else "B" if i == 0 else "E" if i == len(words) - 1 else "I"
                rows.append((w, "NNP" if etype == "person" else "NN", f"{role}_{etype}"))
        else:
            rows.append((piece, POS.get(piece, "VB" if piece.endswith(("ed", "s")) else "NN"), "O"))
    return rows


def make_words_corpus(out_dir: Path, sentences: int = 600, seed: int = 0) -> dict[str, Path]:
    """Write {train,dev,test}.conll (70/15/15) under out_dir, 3 columns, documents of 20 sentences."""
    rng = random.Random(seed)
    sents = [_sentence(rng) for _ in range(sentences)]
    cut1, cut2 = int(0.7 * sentences), int(0.85 * sentences)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = {}
        for split, part in (("train", sents[:cut1]), ("dev", sents[cut1:cut2]), ("test", sents[cut2:])):
            lines = []
            for k, rows in enumerate(part):
                if k % 20 == 0:
                    lines += ["-DOCSTART- -X- O", ""]
                lines += [" ".join(r) for r in rows] + [""]
            path = out_dir / f"{split}.conll"
            path.write_bytes("\n".join(lines).encode("utf-8"))
            written[path.name] = path
    except OSError as e:
        raise UserError(f"{e.filename or out_dir}: cannot write the word-level demo corpus there ({e.strerror or e})") from None
    return written
