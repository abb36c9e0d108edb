"""Tokenizers for pre-split tokens: byte-level BPE families get `add_prefix_space`, as run_ner.py does; a scratch
backbone on word-level data gets a WordPiece vocabulary, so its words are not [UNK]."""

from __future__ import annotations

import json

from ablate.models.backbones import build_wordpiece_tokenizer, load_tokenizer


def _roberta_folder(tmp_path):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["the patient has a fever", "aspirin for headache"] * 20, vocab_size=300,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(tmp_path))
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    merges = [tuple(line.split()) for line in (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()[1:] if line]
    RobertaTokenizerFast(vocab=vocab, merges=merges).save_pretrained(str(tmp_path))
    return str(tmp_path)


def test_roberta_tokenizers_read_words_with_a_prefix_space(tmp_path):
    folder = _roberta_folder(tmp_path)
    tok = load_tokenizer(folder, "roberta")
    assert tok.add_prefix_space
    spaced = tok([["patient"]], is_split_into_words=True)["input_ids"][0]
    assert spaced == tok(" patient")["input_ids"]  # the word as it reads in running text
    plain = load_tokenizer(folder, "bert")
    assert not getattr(plain, "add_prefix_space", False)


def test_a_wordpiece_vocabulary_covers_the_training_words(tmp_path):
    words = [["Metformin", "lowers", "blood", "glucose"], ["Insulin", "lowers", "glucose", "too"]] * 10
    folder = build_wordpiece_tokenizer(words, tmp_path, vocab_size=200)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    enc = tok(words[:2], is_split_into_words=True, add_special_tokens=False)
    assert tok.unk_token_id not in {i for ids in enc["input_ids"] for i in ids}
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, 4]) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_the_label_sits_on_the_first_or_the_last_sub_token_as_set(tmp_path):
    from transformers import AutoTokenizer

    from ablate.data.encode import encode, stitch
    from ablate.data.readers import Sentence

    words = [["Metformin", "lowers", "glucose"]] * 3
    tok = AutoTokenizer.from_pretrained(str(build_wordpiece_tokenizer(words, tmp_path, vocab_size=40)))
    s = Sentence("s", "med", ("Metformin", "lowers", "glucose"), ("S_drug", "O", "O"))
    label2id = {"O": 0, "S_drug": 1}
    for where in ("first", "last"):
        [w] = encode([s], tok, label2id, 64, subtoken=where)
        first = [t for t, wid in enumerate(w.word_ids) if wid == 0]
        assert len(first) > 1  # the word is split: the setting matters
        expect = first[0] if where == "first" else first[-1]
        assert w.heads[0] == expect and w.labels[expect] == 1
        assert sum(lab != -100 for lab in w.labels) == 3  # one label per word
        assert stitch([w], [list(range(len(w.input_ids)))], [3]) == [[w.heads[0], w.heads[1], w.heads[2]]]
