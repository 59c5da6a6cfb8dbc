"""How faithful and how fast each preprocessing mode is, on real photographs and real video frames.

    .venv/bin/python scripts/bench_preprocess.py [--repeats 50]

The reference is the definition of a correct input: torchvision's transform of the weights applied
through PIL. For each mode it prints the mean |difference| of the model input in normalised units,
EfficientNet-Lite0's (real weights) top-1 agreement with its top-1 on the reference input, overall
and where the reference's top-1 leads its second by ≥ 0.1, and the cost per frame on one thread
(the inference thread's setting), median of interleaved repeats.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.registry import load_model, reference_transform, spec_of  # noqa: E402
from stream.media.sample import pan_zoom, photo  # noqa: E402
from stream.pipeline.preprocess import FastPreprocessor, Preprocessor  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina")
SIZES = ((640, 480), (768, 576), (1280, 720), (1920, 1080))
MODES = {"faithful": Preprocessor, "fast": FastPreprocessor}


def real_images(folder: Path, per_clip: int = 5) -> list[tuple[str, np.ndarray]]:
    """The photographs at their own size, and frames decoded from mp4v clips panned across each of them."""
    images = [(name, photo(name)) for name in PHOTOS]
    for w, h in SIZES:
        for name in PHOTOS:
            path = folder / f"{name}-{w}x{h}.mp4"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (w, h))
            for frame in pan_zoom(photo(name), w, h, per_clip, zoom=1.4):
                writer.write(frame)
            writer.release()
            cap = cv2.VideoCapture(str(path))
            for i in range(per_clip):
                ok, frame = cap.read()
                if ok:
                    images.append((f"{path.name}#{i}", frame))
            cap.release()
    return images


def reference(transform, bgr: np.ndarray) -> np.ndarray:
    return transform(Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))).numpy()


def fidelity(images, model_name: str, module) -> dict[str, dict]:
    transform = reference_transform(model_name)
    spec = spec_of(transform)
    refs = np.stack([reference(transform, im) for _, im in images])
    out = {}
    ref_probs = None
    if module is not None:
        with torch.inference_mode():
            ref_probs = torch.softmax(module(torch.from_numpy(refs)), 1).numpy()
    for mode, cls in MODES.items():
        ours = cls(spec)([im for _, im in images])
        row = {"mean_abs_diff": float(np.abs(ours - refs).mean()),
               "worst_image_mean_abs_diff": float(np.abs(ours - refs).mean(axis=(1, 2, 3)).max())}
        if ref_probs is not None:
            with torch.inference_mode():
                top = module(torch.from_numpy(ours)).argmax(1).numpy()
            ranked = np.sort(ref_probs, axis=1)
            confident = ranked[:, -1] - ranked[:, -2] >= 0.1
            same = top == ref_probs.argmax(1)
            row.update(agree=int(same.sum()), images=len(same), agree_confident=int(same[confident].sum()),
                       confident=int(confident.sum()))
        out[mode] = row
    return out


def timing(repeats: int) -> dict[str, dict[str, float]]:
    cv2.setNumThreads(1)
    spec_bilinear = spec_of(reference_transform("alexnet"))
    spec_bicubic = spec_of(reference_transform("efficientnet_lite0"))
    cases = {f"{mode} {spec.interpolation}": cls(spec) for mode, cls in MODES.items()
             for spec in (spec_bilinear, spec_bicubic)}
    results: dict[str, dict[str, float]] = {name: {} for name in cases}
    for w, h in ((640, 480), (1280, 720), (1920, 1080)):
        frame = pan_zoom(photo("astronaut"), w, h, 2)[1]
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(repeats):  # interleaved, so drift on a shared machine hits every case alike
            for name, pre in cases.items():
                started = time.perf_counter()
                pre([frame])
                samples[name].append(time.perf_counter() - started)
        for name in cases:
            results[name][f"{h}p"] = float(np.median(samples[name][2:]) * 1000)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        images = real_images(Path(tmp))
    sizes = sorted({f"{im.shape[1]}×{im.shape[0]}" for _, im in images})
    print(f"{len(images)} real images and video frames ({', '.join(sizes)})\n")
    lite0 = load_model("efficientnet_lite0", "imagenet").module
    print("| model (filter) | mode | mean \\|Δ\\| | worst image | top-1 = reference | where margin ≥ 0.1 |")
    print("|---|---|---|---|---|---|")
    for name, module in (("alexnet", None), ("efficientnet_lite0", lite0)):
        interp = spec_of(reference_transform(name)).interpolation
        for mode, r in fidelity(images, name, module).items():
            agree = f"{r['agree']}/{r['images']}" if "agree" in r else "(random weights: n/a)"
            conf = f"{r['agree_confident']}/{r['confident']}" if "agree" in r else ""
            print(f"| {name} ({interp}) | {mode} | {r['mean_abs_diff']:.4f} | {r['worst_image_mean_abs_diff']:.4f} "
                  f"| {agree} | {conf} |")
    print("\nms per frame, one thread, median of", args.repeats)
    print("| mode | 480p | 720p | 1080p |")
    print("|---|---|---|---|")
    for name, row in timing(args.repeats).items():
        print(f"| {name} | {row['480p']:.2f} | {row['720p']:.2f} | {row['1080p']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
