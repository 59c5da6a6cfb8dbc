"""A labelled image set for `eval`: class-named folders or a path,label CSV, and label → class index.

Labels are matched against the model's own category names (torchvision's weights metadata) or
WordNet ids (n02123045), whose order timm's ImageNetInfo supplies; what matches nothing, or more
than one class, is reported rather than dropped in silence.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from stream.errors import UserError
from stream.media.sources import IMAGE_EXTENSIONS, is_image

WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class LabelledImage:
    path: str
    label: str  # as the user wrote it: folder name or CSV cell


@dataclass(frozen=True)
class LabelledSet:
    images: list[LabelledImage]
    source: str
    ignored: list[str] = field(default_factory=list)  # files seen but not usable as labelled images


def scan_folder(root: str | Path) -> LabelledSet:
    root = Path(root).resolve()  # the workers run in the project's folder: every image by its full path
    if not root.is_dir():
        raise UserError(f"--data {root}: not a folder (want one sub-folder of images per class)")
    images, ignored = [], []
    for entry in sorted(root.iterdir()):
        if entry.is_dir():
            images += [LabelledImage(str(p), entry.name) for p in sorted(entry.rglob("*"))
                       if p.is_file() and is_image(p)]
        elif is_image(entry):
            ignored.append(f"{entry} (not in a class folder)")
    if not images:
        raise UserError(f"--data {root}: no images in class sub-folders ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return LabelledSet(images, str(root), ignored)


def read_csv(path: str | Path) -> LabelledSet:
    path = Path(path).resolve()  # as scan_folder's
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--labels {path}: cannot read ({type(exc).__name__})") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"]:
        rows = rows[1:]
    images, ignored = [], []
    for number, row in enumerate(rows, start=1):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise UserError(f"--labels {path}: row {number} is not 'path,label': {','.join(row)[:80]}")
        image = Path(row[0].strip())
        image = image if image.is_absolute() else path.parent / image
        if image.is_file():
            images.append(LabelledImage(str(image), row[1].strip()))
        else:
            ignored.append(f"{image} (not found)")
    if not images:
        raise UserError(f"--labels {path}: no existing images listed")
    return LabelledSet(images, str(path), ignored)


def _key(label: str) -> str:
    return " ".join(label.replace("_", " ").split()).lower()


@dataclass(frozen=True)
class Resolution:
    index: dict[str, int]  # label as written → class index
    unknown: list[str]
    ambiguous: dict[str, list[int]]  # matches several classes once case is ignored ("CARDIGAN")


def resolve(labels: set[str], categories: list[str], wnids: list[str] | None) -> Resolution:
    """Map each label to a class index by WordNet id, exact category name, or the name with case,
    '_' and runs of spaces ignored."""
    exact = {name: i for i, name in enumerate(categories)}
    by_name: dict[str, list[int]] = {}
    for i, name in enumerate(categories):
        by_name.setdefault(_key(name), []).append(i)
    by_wnid = {w: i for i, w in enumerate(wnids)} if wnids else {}
    index, unknown, ambiguous = {}, [], {}
    for label in sorted(labels):
        if WNID.match(label.strip()) and label.strip() in by_wnid:
            index[label] = by_wnid[label.strip()]
            continue
        # Exact spelling first: torchvision tells "Cardigan" (the corgi) from "cardigan" (the sweater) by case.
        hits = [exact[label]] if label in exact else by_name.get(_key(label), [])
        if len(hits) == 1:
            index[label] = hits[0]
        elif hits:
            ambiguous[label] = hits
        else:
            unknown.append(label)
    return Resolution(index, unknown, ambiguous)


def imagenet_wnids(num_classes: int) -> list[str] | None:
    """WordNet ids in class-index order for a 1000-class ImageNet model, from timm's ImageNetInfo."""
    if num_classes != 1000:
        return None
    try:
        from timm.data import ImageNetInfo
    except ImportError:
        return None
    return list(ImageNetInfo("imagenet-1k").label_names())
