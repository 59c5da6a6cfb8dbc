"""One measured start of one (model, backend, precision, batch): run as its own process.

    python -m stream.lab.worker JOB.json RESULT.json

Everything the parent reports about a start comes from here: import time, load record (weights,
export/build, cache), warm-up, timed batches on real frames, logits for fidelity or accuracy, and
this process's own peak memory. The result file is always written, with a reason when it failed.
"""

import time

WORKER_START = time.perf_counter()  # before the heavy imports, so ready_s includes them

import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

from stream.backends.settings import BackendSettings  # noqa: E402


@dataclass(frozen=True, kw_only=True)
class Job(BackendSettings):
    """One start, with every backend setting the run has (BackendSettings'): a new one travels by itself."""

    kind: str  # "bench": timed batches over `inputs`; "eval": one timed pass over `images`
    model: str
    weights: str
    backend: str
    batch: int
    warmup: int = 5
    repeats: int = 30  # timed batches (bench); at least this many (eval, which repeats a small set)
    inputs: str | None = None  # bench: video, image or folder
    frames: int = 32  # bench: real frames read from `inputs`
    images: list[str] = field(default_factory=list)  # eval: the labelled images, in order
    logits_path: str | None = None  # where the logits of every input frame/image are saved (.npy)

    @staticmethod
    def load(path: str | Path) -> "Job":
        return Job(**json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self)))


def backend_options(job: Job):
    """The run's rule for what the backend is told, for a file read losslessly (no live source)."""
    from stream.backends import BackendOptions

    return BackendOptions.from_settings(job, batch=job.batch, live=False, threads=job.threads,
                                        calibration=job.calibration_request())


def _batches(preprocess, frames: list, size: int) -> tuple[list, float]:
    """Frames in batches of `size` (the last may be short), preprocessed; and ms per image it took."""
    started, out = time.perf_counter(), []
    for i in range(0, len(frames), size):
        out.append(preprocess(frames[i:i + size]))
    return out, (time.perf_counter() - started) * 1000 / len(frames)


def measure(job: Job, result: dict) -> None:
    from models.card import resolve
    from stream.backends import backend_class
    from stream.media.stills import load_frames
    from stream.observe.stats import peak_rss_mb
    from stream.pipeline.preprocess import make_preprocessor

    started = time.perf_counter()
    cls = backend_class(job.backend)
    for module in cls.runtime_modules:
        importlib.import_module(module)
    result["import_s"] = time.perf_counter() - started
    frames = load_frames(job.inputs, job.frames) if job.kind == "bench" else None  # bad input before the load

    backend = cls(resolve(job.model, job.weights), backend_options(job))  # a name, an ONNX file or a card
    try:
        load = backend.load
        result["load"] = {"weights_s": load.weights_s, "build_s": load.build_s, "cache": load.cache,
                          "artifact": load.artifact}
        info = backend.model
        result["model"] = {"name": info.name, "weights": info.weights, "random_weights": info.random_weights,
                           "categories": list(info.categories)}
        result["backend"] = {"name": backend.name, "device": backend.device, "precision": backend.precision,
                             "threads": getattr(backend, "threads", None)}
        import psutil

        result["rss_after_load_mb"] = psutil.Process().memory_info().rss / 2**20
        preprocess = make_preprocessor(info.preprocess, backend.input_device, job.resize)
        if job.kind == "eval":
            _eval_pass(job, backend, preprocess, result)
        else:
            _bench_batches(job, backend, preprocess, frames, result)
        result["memory"] = {"peak_rss_mb": peak_rss_mb(), "device_peak_mb": backend.device_peak_mb(), **_cuda(backend)}
        result["torch_threads"] = _torch_threads()
    finally:
        backend.close()


def _warm(job: Job, backend, batches: list, result: dict, iterations: int | None = None) -> None:
    t = time.perf_counter()
    for i in range(job.warmup if iterations is None else iterations):
        backend.infer(batches[i % len(batches)])
    result["warmup_s"] = time.perf_counter() - t
    result["ready_s"] = time.perf_counter() - WORKER_START


def _save_logits(job: Job, logits: list, result: dict) -> None:
    import numpy as np

    if job.logits_path and logits:
        np.save(job.logits_path, np.concatenate(logits).astype(np.float32))
        result["logits_path"] = job.logits_path


def _bench_batches(job: Job, backend, preprocess, frames: list, result: dict) -> None:
    """`repeats` timed full batches of the real frames, then the logits of each frame once, in order."""
    # A short clip is cycled so that every timed batch has `batch` frames.
    cycled = [frames[i % len(frames)] for i in range(max(len(frames), job.batch))]
    full, result["preprocess_ms_per_image"] = _batches(preprocess, cycled[: len(cycled) // job.batch * job.batch],
                                                       job.batch)
    _warm(job, backend, full, result)
    timed = []
    for i in range(job.repeats):
        t = time.perf_counter()
        backend.infer(full[i % len(full)])  # returns host logits: device work is finished
        timed.append(time.perf_counter() - t)
    result["batch_s"], result["batch_sizes"] = timed, [job.batch] * len(timed)
    if job.logits_path:  # every frame exactly once, so rows of any batch size compare frame by frame
        _save_logits(job, [backend.infer(b) for b in _batches(preprocess, frames, job.batch)[0]], result)


EVAL_POOL = 4  # preprocessed batches of each size kept for timing: a large set never sits in memory


def _eval_pass(job: Job, backend, preprocess, result: dict) -> None:
    """The labelled images batch by batch, for their logits; then their latency, timed as bench does.

    One pass over a small set is too few samples (a 7-image set is a single batch), so the timing repeats
    the set's own sequence of batch shapes for at least `repeats` batches, after warming up every shape
    (the last, partial batch is a shape of its own), on a few kept batches of each size.
    """
    from stream.errors import UserError
    from stream.media.stills import read_images

    read, skipped, logits, sizes, preprocess_s = [], [], [], [], 0.0
    pool: dict[int, list] = {}
    for i in range(0, len(job.images), job.batch):
        frames, ok, bad = read_images(job.images[i:i + job.batch])
        skipped += bad
        if not frames:
            continue
        t = time.perf_counter()
        batch = preprocess(frames)  # finished work: the GPU preprocessor synchronises before it returns
        preprocess_s += time.perf_counter() - t
        logits.append(backend.infer(batch))
        read += ok
        sizes.append(len(frames))
        kept = pool.setdefault(len(frames), [])
        if len(kept) < EVAL_POOL:
            kept.append(batch)
    if not read:
        raise UserError("none of the images could be decoded")
    shapes = [kept[0] for kept in pool.values()]
    _warm(job, backend, shapes, result, iterations=max(job.warmup, 1) * len(shapes))
    timed, timed_sizes = [], []
    for i in range(max(job.repeats, len(sizes))):
        size = sizes[i % len(sizes)]
        batch = pool[size][(i // len(sizes)) % len(pool[size])]
        t = time.perf_counter()
        backend.infer(batch)  # returns host logits: device work is finished
        timed.append(time.perf_counter() - t)
        timed_sizes.append(size)
    result.update(images_read=read, skipped=skipped, batch_s=timed, batch_sizes=timed_sizes,
                  preprocess_ms_per_image=preprocess_s * 1000 / len(read))
    _save_logits(job, logits, result)


def _cuda(backend) -> dict:
    if not backend.device.startswith("cuda") or "torch" not in sys.modules:
        return {}
    import torch

    return {"cuda_allocated_peak_mb": torch.cuda.max_memory_allocated(backend.device) / 2**20,
            "cuda_reserved_peak_mb": torch.cuda.max_memory_reserved(backend.device) / 2**20}


def _torch_threads() -> int | None:
    return sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None


def main(argv: list[str]) -> int:
    job_path, result_path = argv
    result: dict = {"pid": os.getpid(), "status": "ok", "reason": None}
    code = 0
    try:
        job = Job.load(job_path)
        measure(job, result)
    except KeyboardInterrupt:
        result.update(status="failed", reason="interrupted")
        code = 130
    except Exception as exc:  # noqa: BLE001 - any failure becomes the row's reason, not a crash of the bench
        from stream.errors import UserError

        result["status"] = "failed"
        if isinstance(exc, UserError):
            result["reason"], code = str(exc), 2
        else:
            result["reason"], code = f"unexpected {type(exc).__name__}: {str(exc)[:300]}", 1
            if os.environ.get("STREAM_DEBUG"):
                import traceback

                traceback.print_exc()
    tmp = Path(f"{result_path}.tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, result_path)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
