"""Accuracy counting, label resolution and labelled-set reading for `eval`."""

import numpy as np
import pytest

from stream.errors import UserError
from stream.lab.accuracy import score
from stream.lab.dataset import LabelledImage, LabelledSet, imagenet_wnids, read_csv, resolve, scan_folder
from stream.lab.evaluate import labels_of_read

CATS = ["a", "b", "c", "d", "e", "f"]


def test_score_counts_by_hand():
    logits = np.array([
        [9, 8, 7, 6, 5, 0],  # target a: top-1 right
        [9, 8, 7, 6, 5, 0],  # target c: top-5 only
        [9, 8, 7, 6, 5, 0],  # target f: last, missed
        [0, 1, 2, 3, 4, 9],  # target f: top-1 right
    ], np.float32)
    s = score(logits, [0, 2, 5, 5], ["a", "c", "f", "f"], ["1.jpg", "2.jpg", "3.jpg", "4.jpg"], CATS)
    assert (s["images"], s["top1"], s["top5"]) == (4, 2, 3)
    assert s["top1_rate"] == 0.5 and s["top5_rate"] == 0.75
    assert s["per_class"]["f"] == {"class": "f", "images": 2, "top1": 1, "top5": 1, "top1_rate": 0.5, "top5_rate": 0.5,
                                   "recall": 0.5, "predicted": 1, "precision": 1.0}
    # Rows 1-3 are labelled a, row 4 f: a is right once of three times; c is never chosen.
    assert s["per_class"]["a"]["precision"] == pytest.approx(1 / 3) and s["per_class"]["c"]["precision"] is None
    assert s["confusion"] == {"classes": ["a", "c", "f"], "matrix": [[1, 0, 0], [1, 0, 0], [1, 0, 1]]}
    assert s["per_class"]["c"]["top1"] == 0 and s["per_class"]["c"]["top5"] == 1
    wrong = {w["path"]: w for w in s["wrong"]}
    assert set(wrong) == {"2.jpg", "3.jpg"}
    assert wrong["2.jpg"]["in_top5"] and not wrong["3.jpg"]["in_top5"]
    assert [t["class"] for t in wrong["3.jpg"]["top5"]] == ["a", "b", "c", "d", "e"]
    assert wrong["3.jpg"]["top5"][0]["prob"] > wrong["3.jpg"]["top5"][1]["prob"]


def test_resolve_names_wnids_unknown_and_ambiguous():
    categories = ["tench", "tiger cat", "Cardigan", "Egyptian cat", "cardigan"]
    wnids = ["n01440764", "n02123159", "n02113186", "n02124075", "n02963159"]
    r = resolve({"Tiger_Cat", "egyptian  cat", "n01440764", "Cardigan", "cardigan", "CARDIGAN", "n02963159",
                 "unicorn", "n99999999"}, categories, wnids)
    assert r.index == {"Tiger_Cat": 1, "egyptian  cat": 3, "n01440764": 0, "Cardigan": 2, "cardigan": 4,
                       "n02963159": 4}
    assert r.ambiguous == {"CARDIGAN": [2, 4]}
    assert sorted(r.unknown) == ["n99999999", "unicorn"]
    assert resolve({"n01440764"}, categories, None).unknown == ["n01440764"]  # no id list: not guessed


def test_imagenet_wnids_follow_torchvision_class_order():
    from torchvision.models import AlexNet_Weights

    categories = AlexNet_Weights.DEFAULT.meta["categories"]
    wnids = imagenet_wnids(len(categories))
    assert len(wnids) == 1000 and len(set(wnids)) == 1000
    assert wnids[categories.index("tench")] == "n01440764"
    assert wnids[categories.index("tabby")] == "n02123045"
    assert wnids[categories.index("espresso")] == "n07920052"
    assert imagenet_wnids(10) is None


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_scan_folder(tmp_path):
    _touch(tmp_path / "tabby" / "1.jpg")
    _touch(tmp_path / "tabby" / "deeper" / "2.png")
    _touch(tmp_path / "espresso" / "3.JPG")
    _touch(tmp_path / "espresso" / "notes.txt")
    _touch(tmp_path / "stray.jpg")
    s = scan_folder(tmp_path)
    assert sorted((i.label, i.path.split("/")[-1]) for i in s.images) == [
        ("espresso", "3.JPG"), ("tabby", "1.jpg"), ("tabby", "2.png")]
    assert len(s.ignored) == 1 and "stray.jpg" in s.ignored[0]
    with pytest.raises(UserError, match="not a folder"):
        scan_folder(tmp_path / "missing")
    with pytest.raises(UserError, match="no images"):
        scan_folder(_touch(tmp_path / "empty" / "x" / "a.txt").parents[1])


def test_read_csv(tmp_path):
    _touch(tmp_path / "img" / "a.jpg")
    _touch(tmp_path / "b.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text(f"path,label\nimg/a.jpg,tabby\n{tmp_path / 'b.jpg'}, espresso \nimg/gone.jpg,tabby\n\n")
    s = read_csv(csv)
    assert [(i.path, i.label) for i in s.images] == [(str(tmp_path / "img" / "a.jpg"), "tabby"),
                                                      (str(tmp_path / "b.jpg"), "espresso")]
    assert len(s.ignored) == 1 and "gone.jpg (not found)" in s.ignored[0]
    csv.write_text("img/a.jpg\n")
    with pytest.raises(UserError, match="row 1 is not 'path,label'"):
        read_csv(csv)
    with pytest.raises(UserError, match="cannot read"):
        read_csv(tmp_path / "none.csv")


def test_labels_follow_the_images_the_worker_read():
    data = LabelledSet([LabelledImage("a", "x"), LabelledImage("bad", "y"), LabelledImage("a", "z"),
                        LabelledImage("c", "w")], "set")
    assert labels_of_read(data, ["a", "a", "c"]) == ["x", "z", "w"]
