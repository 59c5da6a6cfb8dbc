"""Command lines of `run_stream.py bench` and `run_stream.py eval`, and their report files."""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from dataclasses import asdict, replace
from pathlib import Path

from models.spec import check_model_name
from stream.argparsing import OneLineParser
from stream.backends import AUTO, choose_backend, offering, precision_choices, runs
from stream.backends import BACKEND_NAMES as BACKENDS
from stream.backends.settings import BackendSettings, add_backend_flags
from stream.errors import Terminated, UserError
from stream.interrupts import EXIT_SIGINT, EXIT_SIGTERM

COMMANDS = ("bench", "eval")
EXIT_SOME_FAILED = 1
LIMIT = 1_000_000  # the largest count or number any lab flag takes


def _list(kind, choices=None):
    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        try:
            values = [kind(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a list of {kind.__name__}: {text!r}") from None
        bad = [v for v in values if choices and v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"{bad[0]!r} is not one of {', '.join(choices)}")
        if kind is int and any(not 1 <= v <= LIMIT for v in values):
            raise argparse.ArgumentTypeError(f"must be from 1 to {LIMIT}: {text!r}")
        return values
    return parse


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not 0 <= value <= LIMIT:  # also refuses nan and inf; a warm-up of 1e20 batches would never end
            raise argparse.ArgumentTypeError(f"use a number from 0 to {LIMIT}: {text!r}")
        return value
    return parse


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", type=_list(str), default=["alexnet"],
                   help="comma list; name:weights overrides --weights for one model (efficientnet_lite0:imagenet)")
    p.add_argument("--weights", default="imagenet", help="imagenet, random, or a state_dict file (default imagenet)")
    p.add_argument("--backends", type=_list(str, (AUTO, *BACKENDS)), default=["torch", "onnxruntime"],
                   help=f"comma list of {', '.join(BACKENDS)}, or auto (what a run picks here: the fastest installed) "
                        "(default torch,onnxruntime)")
    # Every backend flag of the run's, by construction (--precision is a comma list below).
    add_backend_flags(p, BackendSettings(), helps={
        "cache_dir": "keep exports/engines here (default: a fresh cache in --out, deleted at the end, so first "
                     "starts measure the build)",
        "calibration": "int8: video, image or image folder to calibrate on (default: the sample clip)",
        "openvino_hint": "OpenVINO performance hint (default auto: latency at batch 1, else throughput)"})
    p.add_argument("--timeout", type=_positive(float), default=1800.0, help="seconds per worker process")


def build_parsers() -> dict[str, argparse.ArgumentParser]:
    bench = OneLineParser(prog="run_stream.py bench", description="Load time, per-image latency, memory, numeric "
                    "change against PyTorch fp32 and a real-time verdict for every model/backend/precision/batch, "
                    "each measured in fresh processes.")
    _common(bench)
    bench.add_argument("--precision", type=_list(str, precision_choices()), default=["auto"],
                       help=f"comma list (default auto); int8 rows run on {', '.join(offering('precisions', 'int8'))}")
    bench.add_argument("--batch", type=_list(int), default=[1, 8], help="comma list of batch sizes (default 1,8)")
    bench.add_argument("--warmup", type=_positive(int), default=5, help="untimed batches per start (default 5)")
    bench.add_argument("--repeats", type=_positive(int), default=30, help="timed batches per warm start (default 30)")
    bench.add_argument("--starts", type=_positive(int), default=3,
                       help="processes per combination: a first (cold) start, then warm starts (default 3)")
    bench.add_argument("--inputs", help="video, image or image folder of real frames (default: the sample clip)")
    bench.add_argument("--frames", type=_positive(int), default=32, help="frames taken from --inputs (default 32)")
    bench.add_argument("--target-fps", type=_positive(float), default=30.0, help="real-time target (default 30)")
    bench.add_argument("--pipeline-frames", type=_positive(int), default=150,
                       help="frames of a whole-pipeline run per combination for the verdict; 0: model only")
    bench.add_argument("--pipeline-video", action="store_true", help="include writing the annotated video")
    bench.add_argument("--out", help="report folder (default out/bench-<time>)")

    ev = OneLineParser(prog="run_stream.py eval", description="Top-1/top-5 accuracy of every model/backend on a "
                 "labelled image set, with per-class results and the images each got wrong.")
    _common(ev)
    src = ev.add_mutually_exclusive_group()
    src.add_argument("--data", help="folder with one sub-folder of images per class (ImageNet name or WordNet id); "
                                    "default: a sample set of 52 real photographs in 4 classes")
    src.add_argument("--labels", help="CSV of path,label (paths relative to the CSV)")
    ev.add_argument("--precision", type=_list(str, precision_choices()), default=["auto"],
                    help=f"comma list (default auto); int8 rows run on {', '.join(offering('precisions', 'int8'))}")
    ev.add_argument("--batch", type=_list(int), default=[8], help="batch size (default 8)")
    ev.add_argument("--warmup", type=_positive(int), default=2)
    ev.add_argument("--out", help="report folder (default out/eval-<time>)")
    return {"bench": bench, "eval": ev}


def _models(names: list[str], weights: str) -> list[tuple[str, str]]:
    from models.card import is_card, is_onnx

    out = []
    for name in names:
        model, _, w = name.partition(":")
        if is_card(model) or is_onnx(model):  # the workers run in the project's folder: the file's own path
            model = str(Path(model).resolve())
        else:
            check_model_name(model, "--models")
        out.append((model, w or weights))
    return out


def _backend(args) -> BackendSettings:
    """The backend settings of every job; each combination has its own precision."""
    settings = BackendSettings.of({**vars(args), "precision": "auto"})
    settings.check_values()
    if settings.calibration and not Path(settings.calibration).exists():
        raise UserError(f"--calibration {settings.calibration}: no such file or folder")
    if settings.calibration:  # the workers run in the project's folder
        settings = replace(settings, calibration=str(Path(settings.calibration).resolve()))
    return settings


def _out_dir(path: str | None, kind: str) -> Path:
    # Absolute: the workers run in the project's folder.
    out = Path(path or f"out/{kind}-{datetime.datetime.now():%Y%m%d-%H%M%S}").resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write there ({exc.strerror or type(exc).__name__})") from None
    return out


def _weights_exist(models: list[tuple[str, str]]) -> None:
    for name, weights in models:
        if weights not in ("imagenet", "random") and not Path(weights).is_file():
            raise UserError(f"--weights for {name}: file {weights} not found; pass 'imagenet', 'random' or a "
                            "state_dict file")


def _onnx_only(models: list[tuple[str, str]], backends: list[str]) -> frozenset:
    """Every model read and checked (a card, an ONNX graph, labels) before any worker starts; the ONNX models
    among them (their torch rows cannot run: said once, and left out)."""
    from models.card import resolve

    names = frozenset(name for name, weights in models if resolve(name, weights).onnx_only)
    if names and "torch" in backends:
        if len(names) == len(models) and backends == ["torch"]:
            raise UserError("--backends torch runs torchvision architectures, and every model here is an ONNX "
                            "model; use --backends onnxruntime,openvino")
        for name in sorted(names):
            print(f"note: {name} is an ONNX model: --backends torch does not run it (its rows are left out)")
    return names


def main(command: str, argv: list[str]) -> int:
    args = build_parsers()[command].parse_args(argv)
    if AUTO in args.backends:  # the backend a run would pick, measured under its own name
        chosen = choose_backend(args.device, "auto")
        print(f"auto: {chosen.name} ({chosen.reason})")
        args.backends = list(dict.fromkeys(chosen.name if b == AUTO else b for b in args.backends))
    models = _models(args.models, args.weights)
    _weights_exist(models)
    args.onnx_models = _onnx_only(models, args.backends)
    args.skip = frozenset((name, "torch") for name in args.onnx_models)
    out = _out_dir(args.out, command)
    from stream.lab.environment import fingerprint

    report = {"kind": command, "status": "running", "created": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": "run_stream.py " + shlex.join([command, *argv]), "environment": fingerprint(args.threads)}
    return (_bench if command == "bench" else _eval)(args, models, out, report)


def _finish(report: dict, out: Path, markdown, charts, status: str) -> None:
    report["status"] = status
    try:
        report["charts"] = charts(report, out)
    except Exception as exc:  # noqa: BLE001 - a chart failure must not lose the tables
        report["charts"] = []
        report.setdefault("warnings", []).append(f"charts not drawn: {type(exc).__name__}: {exc}")
    _write(report, out, markdown)


def _write(report: dict, out: Path, markdown) -> None:
    from stream.session.report import json_safe

    texts = {"report.json": json.dumps(json_safe(report), indent=1) + "\n", "report.md": markdown(report)}
    for name, text in texts.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / name)


def _bench(args, models, out: Path, report: dict) -> int:
    from stream.lab.bench import BenchSettings, combos, run_bench
    from stream.lab.charts import bench_charts
    from stream.lab.inputs import default_inputs
    from stream.lab.report_md import bench_markdown

    if args.starts < 2:
        raise UserError("--starts must be at least 2 (a first start, then at least one warm start)")
    if args.repeats < 1:
        raise UserError("--repeats must be at least 1")
    if args.inputs and not Path(args.inputs).exists():
        raise UserError(f"--inputs {args.inputs}: no such file or folder")
    settings = BenchSettings(
        combos=combos(models, args.backends, args.precision, args.batch, args.skip), out=out,
        inputs=args.inputs or default_inputs(args.cache_dir), frames=args.frames, warmup=args.warmup,
        repeats=args.repeats,
        starts=args.starts, target_fps=args.target_fps or 30.0, pipeline_frames=args.pipeline_frames,
        pipeline_video=args.pipeline_video, backend=_backend(args), timeout=args.timeout,
        onnx_models=args.onnx_models)
    report["settings"] = {**{k: v for k, v in vars(settings).items() if k not in ("combos", "out", "backend")},
                          **{k: v for k, v in asdict(settings.backend).items() if k != "precision"},
                          "onnx_models": sorted(settings.onnx_models)}
    print(f"bench: {len(settings.combos)} combination(s) × {args.starts} starts"
          + (f" + a {args.pipeline_frames}-frame pipeline run" if args.pipeline_frames else "") + f" → {out}/",
          flush=True)

    def write(partial: dict) -> None:
        report.update(partial)
        _write(report, out, bench_markdown)

    return _run(lambda: run_bench(settings, write), report, out, bench_markdown, bench_charts)


def _eval(args, models, out: Path, report: dict) -> int:
    from stream.lab.charts import eval_charts
    from stream.lab.dataset import read_csv, scan_folder
    from stream.lab.evaluate import EvalSettings, data_summary, run_eval
    from stream.lab.report_md import eval_markdown

    if len(args.batch) != 1:
        raise UserError("eval takes one --batch size")
    if not args.data and not args.labels:
        from stream.media.sample import sample_set

        args.data = str(sample_set(args.cache_dir))
        print(f"no --data or --labels given: using the sample set {args.data} (real photographs, hand-labelled)")
    data = scan_folder(args.data) if args.data else read_csv(args.labels)
    settings = EvalSettings(models=models, backends=args.backends, data=data, out=out, precisions=tuple(args.precision),
                            batch=args.batch[0], warmup=args.warmup, backend=_backend(args), timeout=args.timeout,
                            skip=args.skip)
    report["data"] = data_summary(data)
    report["rows"] = []
    count = sum(runs(b, p) and (m, b) not in args.skip
                for m, _ in models for b in args.backends for p in args.precision)
    print(f"eval: {len(data.images)} images, {len(report['data']['labels'])} labels, {count} run(s) → {out}/",
          flush=True)

    def write(rows: list) -> None:
        report["rows"] = rows
        _write(report, out, eval_markdown)

    return _run(lambda: {"rows": run_eval(settings, write)}, report, out, eval_markdown, eval_charts)


def _run(work, report: dict, out: Path, markdown, charts) -> int:
    try:
        report.update(work())
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (stream.cli raises Terminated)
        _finish(report, out, markdown, charts, "interrupted")
        print(f"interrupted: {out / 'report.md'} holds what was measured so far", file=sys.stderr)
        return EXIT_SIGTERM if isinstance(exc, Terminated) else EXIT_SIGINT
    except Exception as exc:
        _finish(report, out, markdown, charts, f"failed ({type(exc).__name__})")
        raise
    _finish(report, out, markdown, charts, "completed")
    failed = [r for r in report["rows"] if r["status"] != "ok"]
    from stream.lab.report_md import bench_markdown, cpu_markdown

    if markdown is bench_markdown and (table := cpu_markdown(report)):
        print("\n".join(table[4:]))  # the CPU per frame table, as report.md has it
    print(f"report: {out / 'report.md'} (and report.json, {', '.join(report['charts']) or 'no charts'})")
    if failed:
        print(f"{len(failed)} of {len(report['rows'])} combination(s) failed; their reasons are in the report",
              file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0
