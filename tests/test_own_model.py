"""Your own model (models.card): an ONNX file or a fine-tuned architecture with its own labels and preprocessing.

The custom model has a known right answer: EfficientNet-Lite0's real ImageNet weights with its classifier cut
down to six of its rows under new names (`ROWS`), so the cat photograph must come out "cat" and so on. The
reference is torchvision's own transform with the card's settings (through PIL) fed to onnxruntime on the same
ONNX file; the project's labels must be the reference's on every frame in fp32, and on at least 95 % in int8.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from stream.cli import main
from stream.media.sample import make_labelled_set, pan_zoom, photo
from tests.conftest import read_all_frames, run_cli

# ImageNet row → the custom model's name for it; the first three are the photographs' right answers.
ROWS = {285: "cat", 967: "coffee", 657: "rocket", 287: "wild cat", 504: "mug", 812: "shuttle"}
LABELS = list(ROWS.values())
ANSWERS = {"chelsea": "cat", "coffee": "coffee", "rocket": "rocket"}
FRAMES_PER_PHOTO = 12
CARD = """name = "things"
onnx = "{onnx}"
labels = "labels.txt"
[preprocess]
resize = 256
crop = 224
interpolation = "bicubic"
mean = {mean}
std = {std}
channels = "{channels}"
[output]
kind = "{kind}"
"""
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class _Sliced(torch.nn.Module):
    """Lite0 with its classifier cut to ROWS; `layout`/`channels`/`kind` make the export variants."""

    def __init__(self, layout: str = "nchw", channels: str = "rgb", kind: str = "logits") -> None:
        super().__init__()
        from models.registry import load_model

        self.net = load_model("efficientnet_lite0", "imagenet").module
        fc = self.net._fc
        rows = torch.tensor(list(ROWS))
        head = torch.nn.Linear(fc.in_features, len(ROWS))
        head.weight.data, head.bias.data = fc.weight.data[rows].clone(), fc.bias.data[rows].clone()
        self.net._fc = head
        self.layout, self.channels, self.kind = layout, channels, kind

    def forward(self, x):
        if self.layout == "nhwc":
            x = x.permute(0, 3, 1, 2)
        if self.channels == "bgr":
            x = x.flip(1)  # the network inside is RGB: a BGR model in effect
        y = self.net(x)
        return y.softmax(1) if self.kind == "probabilities" else y


def _export(module: torch.nn.Module, path: Path, layout: str, batch: int | None) -> None:
    shape = (batch or 2, 224, 224, 3) if layout == "nhwc" else (batch or 2, 3, 224, 224)
    dynamic = None if batch else {"image": {0: "n"}, "scores": {0: "n"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notices about its own future
        torch.onnx.export(module.eval(), (torch.zeros(shape),), str(path), input_names=["image"],
                          output_names=["scores"], dynamic_axes=dynamic, opset_version=17, dynamo=False)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """Every variant of the six-class model as ONNX with its card, the same head as a Lite0 state dict, and a
    six-class resnet18 (seeded random weights) state dict."""
    root = tmp_path_factory.mktemp("own-models")
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    variants = {"things": ("nchw", "rgb", "logits", None), "nhwc": ("nhwc", "rgb", "logits", None),
                "bgr": ("nchw", "bgr", "logits", None), "single": ("nchw", "rgb", "probabilities", 1)}
    for name, (layout, channels, kind, batch) in variants.items():
        module = _Sliced(layout, channels, kind)
        _export(module, root / f"{name}.onnx", layout, batch)
        mean, std = (MEAN[::-1], STD[::-1]) if channels == "bgr" else (MEAN, STD)
        (root / f"{name}.toml").write_text(CARD.format(onnx=f"{name}.onnx", mean=mean, std=std, channels=channels,
                                                       kind=kind))
    torch.save(_Sliced().net.state_dict(), root / "lite0-things.pth")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        import torchvision

        resnet = torchvision.models.resnet18(weights=None, num_classes=len(ROWS))
    torch.save(resnet.state_dict(), root / "resnet18-things.pth")
    return root


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """FRAMES_PER_PHOTO panned and zoomed views of each photograph, in turn (MJPG: frames decode alike)."""
    path = tmp_path_factory.mktemp("own-clip") / "photos.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (480, 320))
    for name in ANSWERS:
        for view in pan_zoom(photo(name), 480, 320, FRAMES_PER_PHOTO, zoom=1.3):
            writer.write(view)
    writer.release()
    return path


def reference_labels(onnx: Path, frames: list[np.ndarray], channels: str = "rgb", layout: str = "nchw") -> list[str]:
    """onnxruntime on torchvision's own transform of each frame, with the card's settings (through PIL)."""
    import onnxruntime as ort
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms._presets import ImageClassification

    mean, std = (MEAN[::-1], STD[::-1]) if channels == "bgr" else (MEAN, STD)
    transform = ImageClassification(crop_size=224, resize_size=256, interpolation=InterpolationMode.BICUBIC,
                                    mean=mean, std=std)
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    out = []
    for frame in frames:
        pixels = frame if channels == "bgr" else frame[:, :, ::-1]
        x = transform(Image.fromarray(np.ascontiguousarray(pixels))).unsqueeze(0).numpy()
        if layout == "nhwc":
            x = x.transpose(0, 2, 3, 1)
        out.append(LABELS[int(session.run(None, {"image": np.ascontiguousarray(x)})[0].argmax())])
    return out


@pytest.fixture(scope="session")
def reference(models_dir, clip) -> list[str]:
    return reference_labels(models_dir / "things.onnx", read_all_frames(clip))


def project_labels(tmp_path: Path, *args: str) -> list[str]:
    """The top-1 label of every frame of a whole run (its --predictions log)."""
    predictions = tmp_path / "predictions.jsonl"
    result = run_cli(*args, "--predictions", str(predictions), "--no-display", "--no-dashboard", timeout=240)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in predictions.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: r["frame"])
    return [r["top5"][0]["label"] for r in rows]


def agreement(mine: list[str], reference: list[str]) -> float:
    assert len(mine) == len(reference) == len(ANSWERS) * FRAMES_PER_PHOTO
    return sum(a == b for a, b in zip(mine, reference, strict=True)) / len(reference)


def test_the_reference_gives_each_photograph_its_right_answer(reference):
    assert reference == [a for a in ANSWERS.values() for _ in range(FRAMES_PER_PHOTO)]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_card_labels_every_frame_as_the_reference_does_in_fp32(models_dir, clip, reference, tmp_path, backend):
    labels = project_labels(tmp_path, "--source", str(clip), "--model", str(models_dir / "things.toml"),
                            "--backend", backend, "--cache-dir", str(tmp_path / "cache"))
    print(f"{backend} fp32 agreement with the reference: {agreement(labels, reference):.1%}")
    assert labels == reference


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_int8_calibrated_on_the_users_frames_agrees_with_the_reference(models_dir, clip, reference, tmp_path, backend):
    labels = project_labels(tmp_path, "--source", str(clip), "--model", str(models_dir / "things.toml"),
                            "--backend", backend, "--precision", "int8", "--calibration", str(clip),
                            "--calibration-frames", "36", "--cache-dir", str(tmp_path / "cache"))
    rate = agreement(labels, reference)
    print(f"{backend} int8 agreement with the reference: {rate:.1%}")
    assert rate >= 0.95


def backend_labels(backend_cls, request, frames, cache: Path):
    from stream.backends import BackendOptions
    from stream.pipeline.preprocess import make_preprocessor

    backend = backend_cls(request, BackendOptions(device="cpu", cache_dir=str(cache), max_batch=8))
    try:
        batch = make_preprocessor(backend.model.preprocess, "cpu")(frames)
        logits = np.concatenate([backend.infer(batch[i:i + 8]) for i in range(0, len(batch), 8)])
        return [backend.model.categories[i] for i in logits.argmax(1)], logits, backend.load
    finally:
        backend.close()


@pytest.mark.parametrize("variant", ["nhwc", "bgr", "single"])
def test_nhwc_bgr_and_fixed_batch_probability_exports_label_as_the_nchw_rgb_model(models_dir, clip, reference,
                                                                                   tmp_path, variant):
    """nhwc: N×H×W×3 input; bgr: BGR channels with the mean/std in that order; single: a fixed batch of 1 whose
    output is probabilities (run frame by frame, not softmaxed again)."""
    from models.card import resolve
    from stream.backends.onnxruntime_backend import OnnxRuntimeBackend
    from stream.backends.openvino_backend import OpenVinoBackend
    from stream.pipeline.postprocess import softmax

    frames = read_all_frames(clip)
    card = resolve(str(models_dir / f"{variant}.toml"))
    base = resolve(str(models_dir / "things.toml"))
    _, base_logits, _ = backend_labels(OnnxRuntimeBackend, base, frames, tmp_path)
    for cls in (OnnxRuntimeBackend, OpenVinoBackend):
        labels, logits, _ = backend_labels(cls, card, frames, tmp_path)
        assert labels == reference, cls.name
        np.testing.assert_allclose(softmax(logits), softmax(base_logits), atol=2e-4)
    layout, channels = ("nhwc", "rgb") if variant == "nhwc" else ("nchw", "bgr" if variant == "bgr" else "rgb")
    assert reference_labels(models_dir / f"{variant}.onnx", frames, channels, layout) == reference


def test_a_fine_tuned_lite0_head_on_pytorch_labels_as_the_onnx_model(models_dir, clip, reference, tmp_path):
    """The same six rows as a state dict: the head is built from the file (6 classes), named by --labels."""
    labels = project_labels(tmp_path, "--source", str(clip), "--model", "efficientnet_lite0", "--weights",
                            str(models_dir / "lite0-things.pth"), "--labels", str(models_dir / "labels.txt"),
                            "--backend", "torch")
    assert labels == reference


def test_a_fine_tuned_torchvision_architecture_computes_what_torch_computes_on_the_reference_transform(models_dir,
                                                                                                      clip):
    """resnet18 with a seeded random six-class head: the project's logits are torch's own forward on
    torchvision's transform of the same frames (random weights: the labels mean nothing, the numbers do)."""
    import torchvision

    from models.card import resolve
    from models.registry import reference_transform
    from stream.backends import BackendOptions
    from stream.backends.torch_backend import TorchBackend
    from stream.pipeline.preprocess import make_preprocessor

    frames = read_all_frames(clip)[::6]
    request = resolve("resnet18", str(models_dir / "resnet18-things.pth"), labels=str(models_dir / "labels.txt"))
    backend = TorchBackend(request, BackendOptions(device="cpu"))
    assert list(backend.model.categories) == LABELS
    mine = backend.infer(make_preprocessor(backend.model.preprocess, "cpu")(frames))
    module = torchvision.models.resnet18(num_classes=len(ROWS))
    module.load_state_dict(torch.load(models_dir / "resnet18-things.pth"))
    transform = reference_transform("resnet18")
    with torch.no_grad():
        theirs = module.eval()(torch.stack([transform(Image.fromarray(f[:, :, ::-1].copy())) for f in frames]))
    assert mine.shape == (len(frames), len(ROWS))
    np.testing.assert_allclose(mine, theirs.numpy(), atol=0.02 * float(np.abs(theirs.numpy()).max()))
    assert (mine.argmax(1) == theirs.numpy().argmax(1)).all()


def test_replacing_the_onnx_file_is_a_new_cache_entry_and_no_user_name_is_in_a_cache_path(models_dir, tmp_path):
    from models.card import resolve
    from stream.backends.openvino_backend import OpenVinoBackend

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "labels.txt").write_text((models_dir / "labels.txt").read_text())
    (folder / "cats.toml").write_text((models_dir / "things.toml").read_text().replace("things.onnx", "cats.onnx"))
    frames = [photo("chelsea")]
    cache = tmp_path / "cache"
    loads = []
    for source in ("things", "bgr", "bgr"):  # a first build, a replaced file (rebuilt), the same file (a hit)
        (folder / "cats.onnx").write_bytes((models_dir / f"{source}.onnx").read_bytes())
        _, _, load = backend_labels(OpenVinoBackend, resolve(str(folder / "cats.toml")), frames, cache)
        loads.append(load.cache)
    assert loads[0].startswith("miss") and loads[1].startswith("miss") and loads[2] == "hit", loads
    names = [p.name for p in cache.rglob("*")]
    assert names and not [n for n in names if "cats" in n or "things" in n], names


# ---- bad input: one line, exit 2, before any model loads


def _onnx(path: Path, inputs: list[tuple[str, list]], output: list) -> Path:
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Identity", [inputs[0][0]], ["y"])]
    if len(inputs) == 2:
        nodes = [helper.make_node("Add", [inputs[0][0], inputs[1][0]], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, output)])
    onnx.save(helper.make_model(graph), str(path))
    return path


@pytest.fixture(scope="module")
def bad(models_dir, tmp_path_factory) -> dict[str, list[str]]:
    root = tmp_path_factory.mktemp("bad-models")
    (root / "five.txt").write_text("\n".join(LABELS[:5]) + "\n")
    (root / "corrupt.onnx").write_bytes(b"\x08\x07this is not a protobuf of a model" * 40)
    _onnx(root / "two-inputs.onnx", [("a", ["n", 3, 224, 224]), ("b", ["n", 3, 224, 224])], ["n", 3, 224, 224])
    _onnx(root / "vector.onnx", [("x", ["n", 10])], ["n", 10])
    card = (models_dir / "things.toml").read_text().replace("things.onnx", str(models_dir / "things.onnx"))
    card = card.replace('labels = "labels.txt"', f'labels = "{models_dir / "labels.txt"}"')
    (root / "nameless.toml").write_text(card.replace('name = "things"\n', ""))
    (root / "lanczos.toml").write_text(card.replace('"bicubic"', '"lanczos"'))
    things = str(models_dir / "things.onnx")
    return {
        "label count": (["--model", things, "--labels", str(root / "five.txt")], ["5 labels", "6 classes"]),
        "two inputs": (["--model", str(root / "two-inputs.onnx")], ["2 inputs", "one image batch"]),
        "not an image": (["--model", str(root / "vector.onnx")], ["?×10", "not an image batch"]),
        "missing card key": (["--model", str(root / "nameless.toml")], ["missing key 'name'"]),
        "unknown interpolation": (["--model", str(root / "lanczos.toml")], ["interpolation", "'lanczos'", "bicubic"]),
        "corrupt onnx": (["--model", str(root / "corrupt.onnx")], ["not a readable ONNX model"]),
        "onnx on torch": (["--model", things, "--backend", "torch"], ["--backend torch", "onnxruntime or openvino"]),
        "fine-tune label count": (["--model", "resnet18", "--weights", str(models_dir / "resnet18-things.pth"),
                                   "--labels", str(root / "five.txt"), "--backend", "torch"],
                                  ["5 labels", "6 classes"]),
    }


@pytest.mark.parametrize("case", ["label count", "two inputs", "not an image", "missing card key",
                                  "unknown interpolation", "corrupt onnx", "onnx on torch", "fine-tune label count"])
def test_bad_input_is_one_line_and_exit_2(bad, clip, capsys, case):
    args, words = bad[case]
    status = main(["--source", str(clip), *args, "--no-dashboard", "--no-display"])
    out, err = capsys.readouterr()
    assert status == 2, (case, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    if case != "fine-tune label count":  # that count is in the weights file, read when the model loads
        assert "loading" not in out, out


def test_eval_scores_the_models_own_labels_on_a_folder_of_class_folders(models_dir, tmp_path):
    """Folders: cat, Coffee (matched ignoring case), rocket, mug (coffee photographs: all wrong, labelled coffee),
    tripod (no such label: listed, not scored). By hand: 12 of 16 right; coffee chosen 8 times, 4 rightly."""
    data = make_labelled_set(tmp_path / "photos", {"cat": "chelsea", "Coffee": "coffee", "rocket": "rocket",
                                                  "mug": "coffee", "tripod": "camera"}, per_class=4)
    out = tmp_path / "eval"
    result = run_cli("eval", "--models", str(models_dir / "things.toml"), "--data", str(data), "--backends",
                     "onnxruntime", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), timeout=240)
    assert result.returncode == 0, result.stderr
    row = json.loads((out / "report.json").read_text())["rows"][0]
    acc = row["accuracy"]
    assert (acc["images"], acc["top1"]) == (16, 12)
    assert row["unknown_labels"] == {"tripod": 4}
    per = acc["per_class"]
    assert per["Coffee"]["class"] == "coffee" and per["Coffee"]["precision"] == 0.5 and per["Coffee"]["recall"] == 1
    assert per["mug"]["recall"] == 0 and per["mug"]["precision"] is None and per["cat"]["precision"] == 1
    assert sorted(Path(w["path"]).parent.name for w in acc["wrong"]) == ["mug"] * 4
    assert acc["confusion"]["classes"] == ["cat", "coffee", "rocket", "mug"]
    assert acc["confusion"]["matrix"] == [[4, 0, 0, 0], [0, 4, 0, 0], [0, 0, 4, 0], [0, 4, 0, 0]]
    assert (out / "confusion-1.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "tripod" in report and "50% / 100%" in report and "confusion-1.png" in report


@pytest.mark.parametrize("text,expected", [
    ("cat\ncoffee\n\n", ("cat", "coffee")),
    ('["cat", "coffee"]', ("cat", "coffee")),
    ("cat\n\ncoffee\n", "line 2 is empty"),
    ("cat\ncoffee\ncat\n", "'cat' is listed twice"),
    ('["cat", 3]', "JSON list of non-empty strings"),
    ("", "no class names"),
])
def test_a_label_file_is_lines_or_a_json_list_and_anything_else_is_one_line(tmp_path, text, expected):
    from models.card import read_labels
    from stream.errors import UserError

    path = tmp_path / "labels.txt"
    path.write_text(text)
    if isinstance(expected, tuple):
        assert read_labels(path) == expected
    else:
        with pytest.raises(UserError, match=expected):
            read_labels(path)


def test_bench_takes_a_card_and_compares_it_with_onnx_runtime_on_its_own_file(models_dir, clip, tmp_path):
    out = tmp_path / "bench"
    result = run_cli("bench", "--models", str(models_dir / "things.toml"), "--backends", "torch,openvino",
                     "--batch", "1", "--starts", "2", "--repeats", "3", "--frames", "4", "--pipeline-frames", "0",
                     "--inputs", str(clip), "--out", str(out), "--cache-dir", str(tmp_path / "cache"), timeout=240)
    assert result.returncode == 0, result.stderr
    assert "is an ONNX model: --backends torch does not run it" in result.stdout
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert [(r["backend"], r["status"]) for r in rows] == [("openvino", "ok")]
    assert rows[0]["fidelity"]["top1_agreement"] == 1.0
    assert "compared with ONNX Runtime fp32 on their own file" in (out / "report.md").read_text()


def test_a_fixed_batch_graph_gets_full_padded_chunks_in_its_layout_and_its_probabilities_back_as_logits():
    from models.spec import GraphIO
    from stream.backends.onnx_model import run_graph
    from stream.pipeline.postprocess import softmax

    seen = []

    def graph(x):  # N×H×W×3 in, the mean of each channel out, normalised: "probabilities"
        seen.append(x.shape)
        means = x.mean(axis=(1, 2))
        return means / means.sum(axis=1, keepdims=True)

    batch = np.random.default_rng(0).uniform(1, 2, (7, 3, 4, 4)).astype(np.float32)
    out = run_graph(batch, GraphIO(layout="nhwc", batch=3, output="probabilities"), graph)
    assert seen == [(3, 4, 4, 3)] * 3
    expected = batch.mean(axis=(2, 3)) / batch.mean(axis=(2, 3)).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax(out), expected, rtol=1e-5)
