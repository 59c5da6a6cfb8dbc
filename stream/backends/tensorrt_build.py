"""Building a TensorRT engine: from the cached ONNX export (TensorRT's parser) or with torch2trt.

Networks are created strongly typed (`NetworkDefinitionCreationFlag.STRONGLY_TYPED`, in TensorRT since
10.0 and the only typing TensorRT 11 has): the precision is the ONNX graph's, so fp16 is an fp16
export with fp32 input and output. TF32 is on by default in TensorRT for fp32 layers on Ampere and
newer (`BuilderFlag.TF32`); an engine called fp32 is built with it cleared, so that it is fp32.
"""

from __future__ import annotations

from pathlib import Path

from models.spec import GraphIO
from stream.backends.progress import BuildProgress
from stream.errors import UserError

WORKSPACE_BYTES = 1 << 30
TORCH2TRT_MAX_TENSORRT = 10  # torch2trt uses IInt8Calibrator, EXPLICIT_BATCH and BuilderFlag.FP16: gone in 11


def tensorrt_major(trt) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except ValueError:
        return 0


def allows_tf32(precision: str) -> bool:
    """Whether the engine may use TF32: never for fp32, which means what it says."""
    return precision != "fp32"


def build_onnx(trt, logger, onnx_path: Path, input_shape: tuple[int, int, int], batch: int, precision: str,
               name: str, progress: BuildProgress, graph: GraphIO = GraphIO()) -> bytes:
    """`input_shape` is C, H, W; a user's graph may take H, W, C (`graph.layout`) and a fixed batch (then
    `batch` is it, and the profile is that batch alone)."""
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT's ONNX parser rejected {name}: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    tf32 = getattr(trt.BuilderFlag, "TF32", None)  # on by default since TensorRT 7.1; still a flag in 11
    if not allows_tf32(precision) and tf32 is not None:
        config.clear_flag(tf32)
    c, h, w = input_shape
    image = (h, w, c) if graph.layout == "nhwc" else (c, h, w)
    smallest = batch if graph.batch is not None else 1
    profile = builder.create_optimization_profile()
    profile.set_shape(network.get_input(0).name, (smallest, *image), (batch, *image), (batch, *image))
    config.add_optimization_profile(profile)
    monitor = _progress_monitor(trt, progress)
    if monitor is not None:
        config.progress_monitor = monitor
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise UserError(f"TensorRT could not build an engine for {name} (see its log lines above)")
    return bytes(plan)


def check_torch2trt_supported(trt) -> None:
    if tensorrt_major(trt) > TORCH2TRT_MAX_TENSORRT:
        raise UserError(f"--trt-converter torch2trt works with TensorRT {TORCH2TRT_MAX_TENSORRT}.x at most (it "
                        f"uses APIs removed in 11), this is TensorRT {trt.__version__}; use the default "
                        "--trt-converter onnx")


def build_torch2trt(trt, module, device: str, input_shape: tuple[int, int, int], batch: int, precision: str,
                    name: str) -> bytes:
    """torch2trt's engine; every way it can fail is one line with the way out."""
    check_torch2trt_supported(trt)
    import torch

    c, h, w = input_shape
    try:
        from torch2trt import torch2trt

        example = torch.zeros((batch, c, h, w), device=device)
        converted = torch2trt(module, [example], fp16_mode=precision == "fp16", max_batch_size=batch,
                              min_shapes=[(1, c, h, w)], opt_shapes=[(batch, c, h, w)],
                              max_shapes=[(batch, c, h, w)])
        engine = getattr(converted, "engine", None)
        if engine is None:
            raise RuntimeError("it returned no engine")
        return bytes(engine.serialize())
    except Exception as exc:  # noqa: BLE001 - torch2trt lags TensorRT releases; say so in one line
        raise UserError(f"torch2trt could not convert {name} ({type(exc).__name__}: {str(exc)[:160]}); "
                        "use the default --trt-converter onnx") from None


def _progress_monitor(trt, progress: BuildProgress):
    """A TensorRT progress monitor that names the current build phase in the elapsed-time lines."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class Monitor(base):
        def __init__(self) -> None:
            base.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            progress.phase = phase_name

        def step_complete(self, phase_name, step):
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            pass

    return Monitor()
