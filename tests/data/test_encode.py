"""Encoding: every character gets exactly one prediction (dropped chars, sub-words, windows), batches, cache."""

from __future__ import annotations

import random
import time

import pytest

from ablate.data import encode as enc
from ablate.data.encode import IGNORE_INDEX, Window, batches, collate, encode, encode_cached, padding_fraction, stitch
from ablate.data.readers import Sentence, read_conll, read_jsonl
from ablate.data.tags import entity_types, label_list
from ablate.errors import UserError

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LABEL2ID = {t: i for i, t in enumerate(label_list(["BODY", "SYMP"]))}


def _tokenizer(tmp_path, tokens, name="tok"):
    """A BERT WordPiece tokenizer over `tokens`, saved and loaded by path as a real checkpoint is."""
    from transformers import AutoTokenizer, BertTokenizerFast

    # transformers 5 ignores BertTokenizerFast(vocab_file=...): pass the vocab itself.
    vocab = {t: i for i, t in enumerate(dict.fromkeys(SPECIALS + list(tokens)))}
    BertTokenizerFast(vocab=vocab).save_pretrained(tmp_path / name)
    return AutoTokenizer.from_pretrained(tmp_path / name)


def _sent(chars, tags=None, sid="s"):
    chars = tuple(chars)
    return Sentence(sid, "ft", chars, tuple(tags) if tags is not None else ("O",) * len(chars))


def _char_of_each_prediction(windows, lengths):
    """Stitch fake per-token outputs that name the character each token came from."""
    return stitch(windows, [list(w.word_ids) for w in windows], lengths)


def _check_one_prediction_per_char(windows, sentences, max_length):
    lengths = [len(s) for s in sentences]
    assert all(len(w.input_ids) <= max_length for w in windows)
    assert all(len(w.input_ids) == len(w.word_ids) == len(w.labels) for w in windows)
    # Every character has at least one sub-token in some window and exactly one head overall.
    for k, s in enumerate(sentences):
        mine = [w for w in windows if w.sentence == k]
        covered = {i for w in mine for i in w.word_ids if i is not None}
        assert covered == set(range(len(s)))
        heads = sorted(w.word_ids[t] for w in mine for t in w.heads)
        assert heads == list(range(len(s)))
    assert _char_of_each_prediction(windows, lengths) == [list(range(n)) for n in lengths]


@pytest.fixture(scope="module")
def char_tok(tmp_path_factory):
    return _tokenizer(tmp_path_factory.mktemp("chars"), list("我頭痛發燒了abcdｄ，。"))


@pytest.fixture(scope="module")
def piece_tok(tmp_path_factory):
    # Multi-character word pieces: a "character" that is a Latin word splits into ##sub-words.
    return _tokenizer(tmp_path_factory.mktemp("pieces"), list("我頭痛") + ["pred", "##nis", "##olone", "play", "##ing"])


def test_dropped_and_unknown_characters_still_get_exactly_one_prediction(char_tok):
    # The tokenizer produces no sub-token at all for a space, U+3000, zero-width space, a control char.
    chars = ["我", " ", "頭", "\u3000", "痛", "\u200b", "\x07", "😀", "Ｄ", "a", "b", "。"]
    s = _sent(chars)
    raw = char_tok([chars], is_split_into_words=True, add_special_tokens=False).word_ids(0)
    assert {1, 3, 5, 6} - set(raw) == {1, 3, 5, 6}  # they really are dropped
    windows = encode([s], char_tok, LABEL2ID, max_length=32)
    assert len(windows) == 1
    w = windows[0]
    _check_one_prediction_per_char(windows, [s], 32)
    # Round trip chars -> sub-tokens -> chars: the head token of each character is that character
    # (lower-cased by BERT), or [UNK] for a character the vocab lacks or the tokenizer dropped.
    head_tokens = char_tok.convert_ids_to_tokens(stitch(windows, [list(w.input_ids)], [len(s)])[0])
    assert head_tokens == ["我", "[UNK]", "頭", "[UNK]", "痛", "[UNK]", "[UNK]", "[UNK]", "ｄ", "a", "b", "。"]
    assert (w.input_ids[0], w.input_ids[-1]) == (char_tok.cls_token_id, char_tok.sep_token_id)
    assert w.word_ids[0] is None and w.word_ids[-1] is None


def test_multi_piece_characters_are_labelled_on_their_first_sub_token_only(piece_tok):
    s = _sent(["我", "prednisolone", "頭", "playing", "痛"], ["O", "B-BODY", "I-BODY", "B-SYMP", "O"])
    (w,) = encode([s], piece_tok, LABEL2ID, max_length=32)
    assert piece_tok.convert_ids_to_tokens(list(w.input_ids)) == [
        "[CLS]", "我", "pred", "##nis", "##olone", "頭", "play", "##ing", "痛", "[SEP]"
    ]
    assert w.word_ids == (None, 0, 1, 1, 1, 2, 3, 3, 4, None)
    ids = [LABEL2ID[t] for t in s.tags]
    no = IGNORE_INDEX
    assert w.labels == (no, ids[0], ids[1], no, no, ids[2], ids[3], no, ids[4], no)
    _check_one_prediction_per_char([w], [s], 32)
    # As many sub-tokens as characters, yet not one each: a dropped space beside a two-piece word.
    odd = _sent(["playing", " "])
    (w,) = encode([odd], piece_tok, LABEL2ID, max_length=32)
    assert w.word_ids == (None, 0, 0, 1, None) and w.input_ids[3] == piece_tok.unk_token_id
    _check_one_prediction_per_char([w], [odd], 32)


def test_tags_unknown_to_label2id_are_ignored_in_the_loss_but_kept_for_scoring(char_tok):
    s = _sent("我頭痛了", ["B-DRUG", "B-BODY", "I-BODY", "O"])  # DRUG: a type training never saw
    (w,) = encode([s], char_tok, LABEL2ID, max_length=16)
    assert w.labels == (IGNORE_INDEX, IGNORE_INDEX, LABEL2ID["B-BODY"], LABEL2ID["I-BODY"], LABEL2ID["O"], IGNORE_INDEX)
    assert s.tags[0] == "B-DRUG"
    # Unlabelled text (no tags) encodes with no label at all, and still predicts every character.
    (u,) = encode([Sentence("u", "ft", tuple("我頭"), ())], char_tok, LABEL2ID, max_length=16)
    assert set(u.labels) == {IGNORE_INDEX} and len(u.heads) == 2


def _longest(path):
    return max(read_jsonl(path), key=len)


@pytest.mark.parametrize("max_length", [128, 64])
def test_long_real_sentences_lose_no_character_in_windows(rocling, tmp_path, max_length):
    longest = _longest(rocling / "healthner_test.jsonl")  # 249 characters in this file
    # The full ROCLING set reaches 442 characters, but that sentence is not public: chain real ones.
    chained = list(longest.chars)
    for s in sorted(read_jsonl(rocling / "healthner_test.jsonl"), key=len)[-3:-1]:
        chained += s.chars
    sentences = [longest, _sent(chained[:442], sid="chained"), _sent("我頭痛")]
    assert [len(s) for s in sentences][:2] == [249, 442]
    tok = _tokenizer(tmp_path, sorted({c for s in sentences for c in s.chars}))
    label2id = {t: i for i, t in enumerate(label_list(entity_types([longest])))}
    windows = encode(sentences, tok, label2id, max_length=max_length)
    _check_one_prediction_per_char(windows, sentences, max_length)
    assert len([w for w in windows if w.sentence == 1]) > 442 // max_length  # really windowed
    # Each character counts once in the loss: exactly its heads carry labels.
    for w in windows:
        assert {t for t, x in enumerate(w.labels) if x != IGNORE_INDEX} <= set(w.heads)
    assert sum(x != IGNORE_INDEX for w in windows if w.sentence == 0 for x in w.labels) == len(longest)
    # Head tokens spell the sentence back (this vocab has every character; BERT lower-cases Latin).
    heads = stitch(windows, [list(w.input_ids) for w in windows], [len(s) for s in sentences])
    assert tok.convert_ids_to_tokens(heads[0]) == [c.lower() for c in longest.chars]


def test_each_character_is_predicted_where_it_has_most_context(char_tok):
    s = _sent("我頭痛發燒了" * 12)  # 72 characters, one sub-token each
    windows = encode([s], char_tok, LABEL2ID, max_length=20, overlap=8)
    assert len(windows) > 4
    n = len(s)
    owner = {w.word_ids[t]: k for k, w in enumerate(windows) for t in w.heads}

    def context(w, i):  # sub-tokens between character i and the nearest cut edge of window w
        chars = [x for x in w.word_ids if x is not None]
        left = i - chars[0] if chars[0] > 0 else n
        right = chars[-1] - i if chars[-1] < n - 1 else n
        return min(left, right)

    shared = 0
    for i in range(n):
        holders = [k for k, w in enumerate(windows) if i in w.word_ids]
        shared += len(holders) > 1
        assert context(windows[owner[i]], i) == max(context(windows[k], i) for k in holders)
    assert shared >= 8 * (len(windows) - 1) - len(windows)  # the windows really overlap
    # Overlap 0 still covers every character once.
    _check_one_prediction_per_char(encode([s], char_tok, LABEL2ID, max_length=20, overlap=0), [s], 20)


def test_bad_lengths_are_user_errors(char_tok):
    with pytest.raises(UserError, match="max_length 2"):
        encode([_sent("我")], char_tok, LABEL2ID, max_length=2)
    with pytest.raises(UserError, match="overlap 30"):
        encode([_sent("我")], char_tok, LABEL2ID, max_length=32, overlap=30)
    assert encode([], char_tok, LABEL2ID) == []


def test_stitch_refuses_outputs_that_miss_a_character(char_tok):
    windows = encode([_sent("我頭痛")], char_tok, LABEL2ID, max_length=16)
    with pytest.raises(ValueError, match="no prediction"):
        stitch(windows, [list(w.word_ids) for w in windows], [4])
    # A sentence with no characters gets no window and an empty prediction.
    windows = encode([Sentence("e", "ft", (), ()), _sent("我")], char_tok, LABEL2ID, max_length=16)
    assert [w.sentence for w in windows] == [1]
    assert stitch(windows, [list(w.word_ids) for w in windows], [0, 1]) == [[], [0]]


def _windows(lengths):
    return [Window(k, 0, (1,) * n, (None,) * n, (IGNORE_INDEX,) * n, ()) for k, n in enumerate(lengths)]


def test_batches_hold_every_window_once_and_are_deterministic():
    rng = random.Random(1)
    windows = _windows([rng.randint(5, 120) for _ in range(1000)])
    b1 = batches(windows, 16, shuffle=True, seed=3, bucket_factor=4)
    assert sorted(i for b in b1 for i in b) == list(range(1000))
    assert all(len(b) <= 16 for b in b1)
    assert b1 == batches(windows, 16, shuffle=True, seed=3, bucket_factor=4)
    assert b1 != batches(windows, 16, shuffle=True, seed=4, bucket_factor=4)
    ordered = batches(windows, 16, shuffle=False)
    flat = [i for b in ordered for i in b]
    assert sorted(flat) == list(range(1000))
    assert [len(windows[i]) for i in flat] == sorted(len(w) for w in windows)
    budget = batches(windows, 64, shuffle=True, seed=0, max_tokens=600)
    assert sorted(i for b in budget for i in b) == list(range(1000))
    assert all(len(b) * max(len(windows[i]) for i in b) <= 600 for b in budget)


def test_collate_pads_inputs_masks_and_ignores_padding_labels(char_tok):
    windows = encode([_sent("我頭痛", ["B-BODY", "O", "B-SYMP"]), _sent("我")], char_tok, LABEL2ID, max_length=16)
    batch = collate(windows, [1, 0], pad_id=char_tok.pad_token_id)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["labels"].shape == (2, 5)
    assert batch["input_ids"][0].tolist() == list(windows[1].input_ids) + [char_tok.pad_token_id] * 2
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1] * 5]
    assert batch["labels"][0].tolist() == list(windows[1].labels) + [IGNORE_INDEX] * 2
    assert batch["labels"][1].tolist() == list(windows[0].labels)


@pytest.fixture(scope="module")
def rocling_train(rocling, tmp_path_factory):
    sentences = read_jsonl(rocling / "healthner_test.jsonl") + read_conll(rocling / "rocling22_chner_truth.txt", "wa")
    tok = _tokenizer(tmp_path_factory.mktemp("rocling"), sorted({c for s in sentences for c in s.chars}))
    return sentences, tok, {t: i for i, t in enumerate(label_list(entity_types(sentences)))}


def test_real_training_data_encodes_fast_and_batches_with_little_padding(rocling_train):
    sentences, tok, label2id = rocling_train
    t0 = time.perf_counter()
    windows = encode(sentences, tok, label2id, max_length=128)
    seconds = time.perf_counter() - t0
    assert seconds < 5, f"encoding {sum(map(len, sentences))} characters took {seconds:.1f} s"
    _check_one_prediction_per_char(windows, sentences, 128)  # includes a stray U+FEFF inside a sentence
    grouped = batches(windows, 32, shuffle=True, seed=0)
    assert sorted(i for b in grouped for i in b) == list(range(len(windows)))
    order = list(range(len(windows)))
    random.Random(0).shuffle(order)
    plain = [order[i : i + 32] for i in range(0, len(order), 32)]
    assert padding_fraction(windows, grouped) <= 0.10
    assert padding_fraction(windows, grouped) < padding_fraction(windows, plain) / 5


def test_cache_hits_on_the_same_inputs_and_misses_when_any_changes(char_tok, piece_tok, tmp_path, monkeypatch):
    sentences = [_sent("我頭痛發燒了" * 5, ["B-BODY", "I-BODY", "B-SYMP", "I-SYMP", "O", "O"] * 5), _sent("我")]
    first = encode_cached(sentences, char_tok, LABEL2ID, 16, tmp_path)
    assert first == encode(sentences, char_tok, LABEL2ID, 16)
    assert len(list(tmp_path.glob("encode-*.pkl"))) == 1
    calls = []
    real = enc.encode
    monkeypatch.setattr(enc, "encode", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert encode_cached(sentences, char_tok, LABEL2ID, 16, tmp_path) == first
    assert calls == []  # loaded, not encoded
    encode_cached(sentences, char_tok, LABEL2ID, 32, tmp_path, overlap=16 // 4)  # same overlap as the default
    encode_cached(sentences, piece_tok, LABEL2ID, 16, tmp_path)
    encode_cached(sentences, char_tok, {**LABEL2ID, "B-DRUG": 5}, 16, tmp_path)
    encode_cached(sentences[:1], char_tok, LABEL2ID, 16, tmp_path)
    encode_cached(sentences, char_tok, LABEL2ID, 16, tmp_path, overlap=2)
    assert len(calls) == 5 and len(list(tmp_path.glob("encode-*.pkl"))) == 6
    # A corrupt entry is recomputed, not trusted.
    for p in tmp_path.glob("encode-*.pkl"):
        p.write_bytes(b"not a pickle")
    assert encode_cached(sentences, char_tok, LABEL2ID, 16, tmp_path) == first
