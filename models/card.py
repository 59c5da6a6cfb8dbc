"""A user's own model: a model card (TOML), an ONNX file, a label file and preprocessing flags, made into a
`ModelRequest` before anything heavy loads. Every mistake is one line naming the key, the file or the flag.

    name = "cats"
    onnx = "cats.onnx"                 # or: architecture = "resnet50" + weights = "finetuned.pth"
    labels = "labels.txt"              # one class name per line (or a JSON list), in output order
    [preprocess]                       # each key optional; defaults below
    resize = 256                       # shorter side before the centre crop (equal to crop: no crop)
    crop = 224
    interpolation = "bilinear"         # bilinear | bicubic | nearest
    mean = [0.485, 0.456, 0.406]       # on the 0..1 scale, in the model's channel order
    std = [0.229, 0.224, 0.225]
    channels = "rgb"                   # rgb | bgr
    [output]
    kind = "logits"                    # logits | probabilities

Paths in a card are relative to the card. An ONNX model's input size comes from its graph; its defaults are
those of torchvision's ImageNet models: resize = crop / 0.875, bilinear, ImageNet mean/std (reversed for bgr),
RGB, logits. A torchvision architecture's defaults are its weights' own transform. Torch-free: onnx is read
without its weights (`load_external_data=False`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import tomllib
from pathlib import Path

from models.spec import CustomModel, GraphIO, ModelRequest, PreprocessSpec, file_sha256
from stream.errors import UserError

INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
CHANNELS = ("rgb", "bgr")
OUTPUT_KINDS = ("logits", "probabilities")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CROP_FRACTION = 0.875  # torchvision's ImageNet evaluation: resize = crop / 0.875 (224 → 256)
TOP_KEYS = ("name", "onnx", "architecture", "weights", "labels", "preprocess", "output")
PREPROCESS_KEYS = ("resize", "crop", "interpolation", "mean", "std", "channels")
OUTPUT_KEYS = ("kind",)
MAX_CLASSES = 1_000_000


def is_card(model: str) -> bool:
    return model.lower().endswith(".toml")


def is_onnx(model: str) -> bool:
    return model.lower().endswith(".onnx")


# ---- labels


def read_labels(path: str | Path, what: str = "--labels") -> tuple[str, ...]:
    """Class names in output order: a text file (one per line) or a JSON list of strings."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{what} {path}: no such file (want one class name per line, or a JSON list)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{what} {path}: cannot read it ({type(exc).__name__})") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            labels = json.loads(text)
        except ValueError as exc:
            raise UserError(f"{what} {path}: not a JSON list ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(labels, list) or not all(isinstance(v, str) and v.strip() for v in labels):
            raise UserError(f"{what} {path}: want a JSON list of non-empty strings")
        labels = [v.strip() for v in labels]
    else:
        lines = [line.strip() for line in text.splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        if "" in lines:
            raise UserError(f"{what} {path}: line {lines.index('') + 1} is empty; one class name per line")
        labels = lines
    if not labels:
        raise UserError(f"{what} {path}: no class names in it")
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        if label in seen:
            raise UserError(f"{what} {path}: {label!r} is listed twice (entries {seen[label] + 1} and {i + 1}); "
                            "each output needs a name of its own")
        seen[label] = i
    return tuple(labels)


def check_label_count(labels: tuple[str, ...] | None, classes: int, model: str, source: str) -> None:
    if labels is not None and len(labels) != classes:
        raise UserError(f"{source} has {len(labels)} labels but {model} outputs {classes} classes; "
                        "give one label per output, in output order")


def numbered_labels(classes: int) -> tuple[str, ...]:
    return tuple(f"class {i}" for i in range(classes))


# ---- the ONNX graph


@functools.cache
def _inspect(path: str, size: int, mtime_ns: int) -> tuple[GraphIO, int | None, int | None, int, str]:
    """(io, height, width, classes, content hash) of an ONNX image classifier, checked: one float input of
    rank 4 with 3 channels (NCHW or NHWC), one output of (batch, classes)."""
    import onnx

    name = Path(path).name
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's errors differ by version: one line for all
        raise UserError(f"{name}: not a readable ONNX model ({type(exc).__name__}: {str(exc)[:100]})") from None
    graph = model.graph
    initialisers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialisers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise UserError(f"{name} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}) and "
                        f"{len(graph.output)} outputs; an image classifier here takes one image batch and returns "
                        "one batch of class scores")
    tensor = inputs[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    shown = "×".join("?" if d is None else str(d) for d in dims) or "no shape"
    if tensor.elem_type != onnx.TensorProto.FLOAT:
        raise UserError(f"{name}: its input {inputs[0].name!r} is of type "
                        f"{onnx.TensorProto.DataType.Name(tensor.elem_type).lower()}; this tool feeds normalised "
                        "float32 images (export the model with a float input)")
    if len(dims) == 4 and dims[1] == 3:
        layout, height, width = "nchw", dims[2], dims[3]
    elif len(dims) == 4 and dims[3] == 3:
        layout, height, width = "nhwc", dims[1], dims[2]
    else:
        raise UserError(f"{name}: its input {inputs[0].name!r} has shape {shown}, not an image batch "
                        "(N×3×H×W or N×H×W×3 with 3 colour channels)")
    out = graph.output[0].type.tensor_type
    out_dims = [d.dim_value if d.HasField("dim_value") else None for d in out.shape.dim]
    if len(out_dims) != 2 or out_dims[1] is None or not 1 <= out_dims[1] <= MAX_CLASSES:
        shown_out = "×".join("?" if d is None else str(d) for d in out_dims) or "no shape"
        raise UserError(f"{name}: its output {graph.output[0].name!r} has shape {shown_out}, not (batch, classes) "
                        "with a fixed number of classes")
    batch = dims[0] if dims[0] else None
    io = GraphIO(input_name=inputs[0].name, layout=layout, batch=batch)
    return io, height, width, out_dims[1], _content_hash(Path(path), model)


def _content_hash(path: Path, model) -> str:
    """The ONNX file's hash, with every external data file it names: replacing either is a new model."""
    locations = sorted({entry.value for t in model.graph.initializer for entry in t.external_data
                        if entry.key == "location"})
    if not locations:
        return file_sha256(path)
    digest = hashlib.sha256(file_sha256(path).encode())
    for location in locations:
        data = (path.parent / location).resolve()
        if path.parent.resolve() not in data.parents or not data.is_file():
            raise UserError(f"{path.name}: its weights file {location!r} is missing (it must sit beside the model)")
        digest.update(f"\n{location}:{file_sha256(data)}".encode())
    return digest.hexdigest()


def inspect_onnx(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} not found")
    stat = path.stat()
    return _inspect(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


# ---- preprocessing values


def _positive_int(value, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 8192:
        raise UserError(f"{key} = {value!r}: want a whole number of pixels from 1 to 8192")
    return value


def _triple(value, key: str, positive: bool) -> tuple[float, float, float]:
    given = value
    if isinstance(value, str):
        try:
            value = [float(v) for v in value.split(",")]
        except ValueError:
            raise UserError(f"{key} = {value!r}: want three numbers, like 0.485,0.456,0.406") from None
    ok = isinstance(value, (list, tuple)) and len(value) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e6 and v == v for v in value)
    if not ok or (positive and any(v <= 0 for v in value)):
        raise UserError(f"{key} = {given!r}: want three {'positive ' if positive else ''}numbers on the 0..1 scale, "
                        "one per channel in the model's channel order")
    return tuple(float(v) for v in value)


def _choice(value, key: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UserError(f"{key} = {value!r}: choose one of {', '.join(choices)}")
    return value


def check_preprocess(values: dict, where: str) -> dict:
    """Checked preprocessing overrides (PreprocessSpec field → value); `where` names them in errors."""
    out = {}
    for key, value in values.items():
        named = f"{where}{key}"
        if key in ("resize", "crop"):
            out[key] = _positive_int(value, named)
        elif key in ("mean", "std"):
            out[key] = _triple(value, named, positive=key == "std")
        elif key == "interpolation":
            out[key] = _choice(value, named, INTERPOLATIONS)
        elif key == "channels":
            out[key] = _choice(value, named, CHANNELS)
        else:
            raise UserError(f"{named}: unknown key; [preprocess] takes {', '.join(PREPROCESS_KEYS)}")
    if "resize" in out and "crop" in out and out["crop"] > out["resize"]:
        raise UserError(f"{where}crop = {out['crop']} is larger than resize = {out['resize']}: the crop is taken "
                        "from the resized image (equal values: no crop)")
    return out


# ---- the card


def read_card(path: str | Path) -> dict:
    """The card's values, checked, with paths made absolute (relative to the card)."""
    path = Path(path)
    where = path.name
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"model card {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"model card {path}: cannot read it ({type(exc).__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"model card {where}: not valid TOML ({exc})") from None
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; a model card takes {', '.join(TOP_KEYS)}")

    def text(key: str, required: bool = False) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                raise UserError(f"{where}: missing key {key!r} (see README, Your own model)")
            return None
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"{where}: {key} = {value!r} should be a non-empty string")
        return value.strip()

    def file(key: str) -> str | None:
        value = text(key)
        if value is None:
            return None
        resolved = (path.parent / value).resolve()
        if not resolved.is_file():
            raise UserError(f"{where}: {key} = {value!r}: no such file (paths are relative to the card)")
        return str(resolved)

    card = {"name": text("name", required=True), "onnx": file("onnx"), "architecture": text("architecture"),
            "labels": file("labels")}
    if card["onnx"] and card["architecture"]:
        raise UserError(f"{where}: give either onnx or architecture (with weights), not both")
    if not card["onnx"] and not card["architecture"]:
        raise UserError(f"{where}: missing key 'onnx' (or 'architecture' with 'weights')")
    if card["onnx"] and not is_onnx(card["onnx"]):
        raise UserError(f"{where}: onnx = {data['onnx']!r} should name a .onnx file")
    weights = text("weights")
    if card["architecture"] and weights is None:
        raise UserError(f"{where}: missing key 'weights' (a state_dict .pth for {card['architecture']}, "
                        "or 'imagenet' / 'random')")
    if card["onnx"] and weights is not None:
        raise UserError(f"{where}: weights applies to an architecture; an ONNX model carries its own")
    card["weights"] = weights if weights in (None, "imagenet", "random") else file("weights")
    for table, keys in (("preprocess", PREPROCESS_KEYS), ("output", OUTPUT_KEYS)):
        if not isinstance(data.get(table, {}), dict):
            raise UserError(f"{where}: {table} should be a table ([{table}])")
        extra = [k for k in data.get(table, {}) if k not in keys]
        if extra:
            raise UserError(f"{where}: [{table}] {extra[0]}: unknown key; [{table}] takes {', '.join(keys)}")
    card["preprocess"] = check_preprocess(data.get("preprocess", {}), f"{where}: [preprocess] ")
    kind = data.get("output", {}).get("kind", "logits")
    card["output"] = _choice(kind, f"{where}: [output] kind", OUTPUT_KINDS)
    return card


# ---- the request


def default_onnx_spec(crop: int, channels: str) -> PreprocessSpec:
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == "rgb" else (IMAGENET_MEAN[::-1], IMAGENET_STD[::-1])
    return PreprocessSpec(round(crop / CROP_FRACTION), crop, mean, std, "bilinear", channels)


def resolve(model: str, weights: str = "imagenet", *, labels: str | None = None, input_size: int | None = None,
            mean=None, std=None, interpolation: str | None = None, channels: str | None = None) -> ModelRequest:
    """The request for `--model` (a name, a card or an ONNX file) with the flags that describe it (they win
    over the card). Reads the card, the labels and the ONNX graph (not its weights); prints its warnings."""
    flags = {k: v for k, v in (("mean", mean), ("std", std), ("interpolation", interpolation),
                               ("channels", channels)) if v is not None}
    if input_size is not None:
        flags.update(crop=input_size, resize=round(input_size / CROP_FRACTION))
    flags = check_preprocess(flags, "--")
    key = (model, weights, labels, tuple(sorted(flags.items())))
    known = _READ.get(key)
    if known is not None and known[1] == _stamps(known[0]):
        return known[0]
    request = _resolve(*key)
    _READ[key] = (request, _stamps(request))
    return request


_READ: dict[tuple, tuple[ModelRequest, tuple]] = {}  # once per process (its warnings too), unless a file changed


def _stamps(request: ModelRequest) -> tuple:
    """The identity of every file a request was read from: a replaced card, label file or model is read again."""
    out = []
    for path in request.custom.files if request.custom is not None else ():
        try:
            stat = Path(path).stat()
            out.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def _resolve(model: str, weights: str, labels_flag: str | None, flags: tuple) -> ModelRequest:
    label_path, output, overrides = labels_flag, "logits", {}
    if is_card(model):
        card = read_card(model)
        if weights != "imagenet":
            raise UserError(f"--weights {weights}: the card {Path(model).name} names its model's weights; drop "
                            "--weights (or change the card)")
        label_path = labels_flag or card["labels"]
        output, overrides = card["output"], card["preprocess"]
        name, onnx, arch = card["name"], card["onnx"], card["architecture"]
        weights = card["weights"] or weights
    elif is_onnx(model):
        name, onnx, arch = Path(model).stem, str(Path(model).resolve()), None
        if not Path(model).is_file():
            raise UserError(f"--model {model}: no such ONNX file")
        if weights != "imagenet":
            raise UserError(f"--weights {weights}: an ONNX model carries its own weights; drop --weights")
    else:
        if "/" in model or "\\" in model or model.startswith("."):
            raise UserError(f"--model {model}: not a model name, and not a .onnx file or a .toml model card")
        name, onnx, arch = model, None, model
    overrides = {**overrides, **dict(flags)}
    source = str(Path(model).resolve()) if is_card(model) or onnx else ""
    labels = read_labels(label_path, "--labels" if label_path == labels_flag else f"{Path(model).name}: labels") \
        if label_path else None
    files = tuple(str(Path(p).resolve()) for p in (model if is_card(model) else None, label_path) if p)
    if onnx is None:
        if labels is None and not overrides and output == "logits" and not is_card(model):
            return ModelRequest(arch, weights)  # a plain torchvision model or efficientnet_lite0
        custom = CustomModel(name, None, labels, tuple(sorted(overrides.items())), GraphIO(output=output),
                             None, source, files)
        return ModelRequest(arch, weights, custom)
    io, height, width, classes, sha = inspect_onnx(onnx)
    shown = Path(onnx).name
    crop = overrides.get("crop")
    if height is None or width is None:
        if crop is None:
            raise UserError(f"{shown}: its input size is not fixed in the graph; give --input-size "
                            "(or [preprocess] crop in a card)")
    else:
        if height != width:
            raise UserError(f"{shown}: its input is {height}×{width}; only square inputs are supported (the centre "
                            "crop is square)")
        if crop is not None and crop != height:
            raise UserError(f"{shown}: its input is {height}×{width}, not {crop}×{crop} (--input-size or "
                            "[preprocess] crop): drop it, the size is read from the graph")
        crop = height
    base = default_onnx_spec(crop, overrides.get("channels", "rgb"))
    spec = {**{k: getattr(base, k) for k in PREPROCESS_KEYS}, **overrides}
    if spec["crop"] > spec["resize"]:
        raise UserError(f"{shown}: resize {spec['resize']} is smaller than its input size {spec['crop']}")
    given = "--labels" if label_path == labels_flag else f"{Path(model).name}: labels"
    check_label_count(labels, classes, shown, given)
    if labels is None:
        print(f"warning: no labels for {shown}: its {classes} outputs are shown as class 0..{classes - 1} "
              "(give --labels FILE, one name per line)", flush=True)
    if io.batch is not None:
        how = "frame by frame" if io.batch == 1 else f"{io.batch} at a time (a short batch padded)"
        print(f"note: {shown} has a fixed batch of {io.batch}: frames are run {how}", flush=True)
    custom = CustomModel(name, onnx, labels or numbered_labels(classes), tuple(sorted(spec.items())),
                         GraphIO(io.input_name, io.layout, io.batch, output), sha, source, (*files, onnx))
    return ModelRequest(name, "imagenet", custom)
