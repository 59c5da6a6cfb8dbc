"""Which int8 calibration method keeps the model's answers: each method against fp32, on real images.

    python scripts/int8_methods.py                                  # EfficientNet-Lite0 (real weights)
    python scripts/int8_methods.py --model alexnet --weights random --frames 300

For every method (minmax, entropy, percentile) the model is quantized on the default calibration set
(64 frames of the sample clip) and run on ONNX Runtime, then compared with the fp32 model on the
labelled sample set (52 photographs, a different set of views) and on `--frames` frames of the sample
clip: top-1 agreement with fp32 overall and where fp32 leads its runner-up by ≥ 0.1, top-5 overlap,
mean |Δlogit|, the sample set's top-1 accuracy, quantization time and model-only ms per image.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--weights", default="imagenet")
    ap.add_argument("--frames", type=int, default=300, help="frames of the sample clip compared (default 300)")
    args = ap.parse_args()

    import numpy as np

    from models.spec import ModelRequest
    from stream.backends import BackendOptions
    from stream.backends.onnxruntime_backend import OnnxRuntimeBackend
    from stream.backends.quantize import METHODS, Calibration
    from stream.lab.dataset import scan_folder
    from stream.lab.inputs import load_frames, read_images
    from stream.lab.metrics import fidelity
    from stream.media.sample import sample_clip, sample_set
    from stream.pipeline.preprocess import make_preprocessor

    request = ModelRequest(args.model, args.weights)
    data = scan_folder(sample_set())
    images, _, _ = read_images([i.path for i in data.images])
    clip = load_frames(str(sample_clip()), args.frames)
    with tempfile.TemporaryDirectory(prefix="int8-methods-") as cache:
        fp32 = OnnxRuntimeBackend(request, BackendOptions(device="cpu", cache_dir=cache))
        pre = make_preprocessor(fp32.model.preprocess, "cpu")
        sets = {"sample set": np.concatenate([pre(images[i:i + 8]) for i in range(0, len(images), 8)]),
                "sample clip": np.concatenate([pre(clip[i:i + 8]) for i in range(0, len(clip), 8)])}

        def logits(backend, x):
            return np.concatenate([backend.infer(x[i:i + 8]) for i in range(0, len(x), 8)])

        reference = {k: logits(fp32, x) for k, x in sets.items()}
        cats = [c.lower().replace(" ", "_") for c in fp32.model.categories]
        labels = [i.label.lower().replace(" ", "_") for i in data.images]

        def accuracy(z):
            return sum(cats[int(t)] == lab for t, lab in zip(z.argmax(1), labels, strict=True))

        def speed(backend, x):
            backend.infer(x[:8])
            t = time.perf_counter()
            for _ in range(10):
                backend.infer(x[:8])
            return (time.perf_counter() - t) / 80 * 1000

        print(f"{args.model} ({args.weights}); fp32: sample-set top-1 {accuracy(reference['sample set'])}/"
              f"{len(labels)}, {speed(fp32, sets['sample clip']):.2f} ms/img at batch 8")
        print(f"{'method':11} {'quantize s':>10} {'ms/img':>7}  {'set top-1':>9}  "
              + "  ".join(f"{k + ': agree / clear / top-5 / mean|Δ|':44}" for k in sets))
        for method in METHODS:
            started = time.perf_counter()
            q = OnnxRuntimeBackend(request, BackendOptions(device="cpu", precision="int8", cache_dir=cache,
                                                           calibration=Calibration(None, 64, method)))
            build = time.perf_counter() - started
            cells = []
            for k, x in sets.items():
                f = fidelity(reference[k], logits(q, x), request.weights == "random")
                share = f["top1_agreement_clear"]
                clear = "–" if share is None else f"{share:.1%} of {f['clear_frames']}"
                cells.append(f"{f['top1_agreement']:6.1%} / {clear:>13} / {f['top5_overlap']:5.1%} / "
                             f"{f['mean_abs_logit_diff']:.3g}")
            print(f"{method:11} {build:10.1f} {speed(q, sets['sample clip']):7.2f}  "
                  f"{accuracy(logits(q, sets['sample set'])):>5}/{len(labels)}  " + "  ".join(f"{c:44}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
