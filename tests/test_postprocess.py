import numpy as np
import pytest

from stream.pipeline.postprocess import softmax, top_k


def test_top_k_orders_by_probability_with_labels():
    categories = [f"class{i}" for i in range(10)]
    logits = np.array([[0, 5, 1, 9, 2, 8, 0, 0, 3, 7], [9, 0, 0, 0, 0, 0, 0, 0, 0, 8]], np.float32)
    rows = top_k(logits, categories, k=5)
    assert [t.index for t in rows[0]] == [3, 5, 9, 1, 8]
    assert [t.label for t in rows[1][:2]] == ["class0", "class9"]
    probs = softmax(logits)
    assert rows[0][0].prob == pytest.approx(probs[0, 3])
    assert np.allclose(probs.sum(axis=1), 1.0)


def test_softmax_is_stable_for_large_logits():
    probs = softmax(np.array([[1000.0, 1000.0, -1000.0]]))
    assert np.allclose(probs, [[0.5, 0.5, 0.0]])


def test_logits_must_match_the_categories():
    with pytest.raises(ValueError):
        top_k(np.zeros((1, 5), np.float32), ["a", "b"])
