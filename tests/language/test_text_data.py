"""Text datasets: the embedded Tiny Shakespeare loads offline, windows and labels line up, user text files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from phasescope.data import DataError, load_dataset, measurement_indices
from phasescope.data.text import CharVocabulary, continuation_marks, shakespeare_text, text_splits, window_offsets


@pytest.fixture(scope="module")
def shakespeare():
    return load_dataset("shakespeare")


def test_shakespeare_is_embedded_with_its_size_split_and_vocabulary(shakespeare, monkeypatch):
    text = shakespeare_text()
    assert len(text) == 1_115_394 and text.startswith("First Citizen:\nBefore we proceed any further")
    d = shakespeare
    assert d.num_classes == 65 and d.info["vocab_size"] == 65 and d.classes == sorted(set(text))
    assert d.info["vocabulary"] == "".join(sorted(set(text)))
    split = d.info["split"]
    assert split == {"train_tokens": 1_003_854, "test_tokens": 111_540, "test_fraction": 0.1}  # the usual 90/10
    assert d.input_shape == (64,) and d.x_train.dtype == torch.int64
    assert len(d.y_train) == 1_003_854 - 64 and len(d.y_test) == 111_540 - 64  # every window
    vocab = CharVocabulary(d.classes)
    # window i is text[i : i + 64], its label text[i + 64]; the held-out windows come from the last 10%
    for i in (0, 5000, len(d.y_train) - 1):
        assert vocab.decode(d.x_train[i]) == text[i : i + 64] and vocab.decode([d.y_train[i]]) == text[i + 64]
    j = 123
    assert vocab.decode(d.x_test[j]) == text[1_003_854 + j : 1_003_854 + j + 64]
    assert d.x_train.untyped_storage().nbytes() < 10 * 1_115_394  # a view of the token stream, not 64 copies


def test_shakespeare_reads_no_file_outside_the_package(monkeypatch, tmp_path):
    """No download and no data folder: --data-dir is refused and nothing but the packaged file is read."""
    with pytest.raises(DataError, match="shakespeare is embedded"):
        load_dataset("shakespeare", data_dir=tmp_path)
    from phasescope.data import text

    assert text.SHAKESPEARE.is_file() and text.SHAKESPEARE.stat().st_size < 500_000  # compressed in the package


def test_context_sets_the_window_length():
    d = load_dataset("shakespeare", context=16)
    assert d.input_shape == (16,) and d.info["context"] == 16 and len(d.y_train) == 1_003_854 - 16


def test_measured_windows_are_seeded_uniform_positions(shakespeare):
    fit, test = measurement_indices(shakespeare, 500, 200, seed=3)
    fit2, test2 = measurement_indices(shakespeare, 500, 200, seed=4)
    assert len(fit) == 500 and len(test) == 200 and np.all(np.diff(fit) > 0)
    assert not np.array_equal(fit, fit2) and np.array_equal(test, test2)  # the test windows: one set for all seeds
    assert window_offsets(shakespeare, fit[:3], "train") == [int(i) for i in fit[:3]]


def test_continuation_marks_count_the_training_text():
    train = np.array([0, 1, 2, 0, 1, 2, 0, 1, 3, 0, 1, 2], dtype=np.int64)
    marks = continuation_marks(train, train, context=3, vocab=4, n=2)
    # windows of 3; next tokens at positions 3..11: 0 1 2 0 1 3 0 1 2
    assert np.allclose(marks["target_frequency"] * 12, [4, 4, 3, 4, 4, 1, 4, 4, 3])
    # P(next | previous 2): after (0, 1) comes 2 three times and 3 once
    assert marks["continuation_probability"][2] == pytest.approx(3 / 4)
    assert marks["continuation_probability"][5] == pytest.approx(1 / 4)


def test_a_text_file_is_a_dataset(tmp_path):
    f = tmp_path / "poem.txt"
    f.write_text("the cat sat on the mat; " * 40, encoding="utf-8")
    d = load_dataset("text", data_dir=f, context=8)
    assert d.classes == sorted(set("the cat sat on the mat; ")) and d.input_shape == (8,)
    assert d.info["source"] == str(f) and d.info["split"]["train_tokens"] == int(960 * 0.9)
    with pytest.raises(DataError, match="too few for windows of 500"):
        load_dataset("text", data_dir=f, context=500)
    with pytest.raises(DataError, match="give it as --data-dir"):
        load_dataset("text")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(DataError, match="not UTF-8"):
        load_dataset("text", data_dir=tmp_path / "bin.txt")


def test_a_tokenizer_of_the_users_gives_the_vocabulary():
    class Words:
        words = ["<unk>", "to", "be", "or", "not"]

        def __len__(self):
            return len(self.words)

        def encode(self, text):
            return [self.words.index(w) if w in self.words else 0 for w in text.split()]

        def decode(self, ids):
            return " ".join(self.words[i] for i in ids)

    d = text_splits("words", "to be or not to be " * 30, context=4, tokenizer=Words())
    assert d.num_classes == 5 and d.classes == Words.words and d.info["tokens"] == "Words"
    assert d.x_train[0].tolist() == [1, 2, 3, 4] and int(d.y_train[0]) == 1
