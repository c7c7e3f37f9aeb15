"""Throughput of `oesdn predict`'s model on this machine: torch vs onnxruntime, batch 1 vs batch N.

Images are decoded once up front (decoding is timed on its own line), so the network rows compare
the two runtimes on equal input. Each figure is the median of `repeats` passes over all images,
after one warm-up pass; on a shared machine, compare rows of one run only.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def images_per_second(run: Callable[[], None], count: int, repeats: int) -> float:
    run()  # warm-up: allocator, oneDNN primitives, onnxruntime's first-run graph work
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return count / statistics.median(times)


def measure_predict_speed(model_spec: str, images_dir: Path | None, batch_size: int, repeats: int, project: Path) -> str:
    """The benchmark as markdown: a header line, the decode rate and one row per runtime and batch."""
    import torch

    from components.inference.models import resolve_model
    from components.inference.onnx_export import INPUT_NAME, export_onnx, onnx_session
    from components.inference.predict import read_image
    from components.inference.sources import expand_sources
    from components.models.oesdn.bundle import BundleModel

    with tempfile.TemporaryDirectory() as scratch:
        resolved = resolve_model(model_spec, project, Path(scratch))
        model = BundleModel.load(resolved.bundle_dir, device="cpu")
        folder = images_dir or project / "data" / "bundled" / model.info.category / "test"
        paths = [s.path for s in expand_sources([str(folder)], Path(scratch))]
        started = time.perf_counter()
        images = np.stack([read_image(model, path) for path in paths])
        decode_rate = len(paths) / (time.perf_counter() - started)
        session = onnx_session(export_onnx(model, resolved, Path(scratch) / "onnx").onnx_path)

        def torch_run(batch: int) -> Callable[[], None]:
            return lambda: model.score(images, batch)

        def onnx_run(batch: int) -> Callable[[], None]:
            def run() -> None:
                for start in range(0, len(images), batch):
                    session.run(None, {INPUT_NAME: images[start : start + batch].astype(np.float32) / np.float32(255.0)})

            return run

        n = len(images)
        rows = [
            (runtime, batch, images_per_second(make(batch), n, repeats))
            for batch in (1, batch_size)
            for runtime, make in (("torch", torch_run), ("onnxruntime", onnx_run))
        ]
    pre = model.info.preprocessing
    machine = platform.processor() or platform.machine()
    threads = torch.get_num_threads()
    lines = [
        f"{n} images at {pre.channels}x{pre.image_size}x{pre.image_size}, {machine}, torch {torch.__version__} ({threads} threads), median of {repeats}",
        f"decode (Pillow, one thread): {decode_rate:.0f} images/s",
        "",
        "| runtime | batch | images/s | ms/image |",
        "|---|---:|---:|---:|",
        *(f"| {runtime} | {batch} | {rate:.1f} | {1000 / rate:.1f} |" for runtime, batch, rate in rows),
    ]
    return "\n".join(lines) + "\n"
