"""Batched prediction over many files, where one bad file never stops the others.

Decoding happens on a small thread pool (Pillow releases the GIL), one batch ahead of the network,
so a line camera's folder is scored at the rate the model allows. Images are decoded exactly as the
prepare stage decoded the training data (`BundleModel.decode`), and scored by the same detector as
the evaluate stage, so a file's score here equals its score in `reports/<category>/scores.csv`.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from components.data.errors import DatasetError
from components.data.images import probe_image
from components.inference.sources import Source
from components.io import atomic_path
from components.models.oesdn.bundle import BundleModel

CSV_COLUMNS = ("path", "status", "pred_score", "pred_label", "threshold", "model_name", "model_version", "error")
_CHANNEL_NAMES = {1: "grayscale", 3: "RGB"}


class UnreadableImage(ValueError):
    """A file that cannot be scored; the message is the reason written to the CSV."""


@dataclass(frozen=True)
class Prediction:
    source: Source
    score: float | None
    """None when the file could not be read; `error` says why."""
    anomalous: bool | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Summary:
    scored: int
    anomalous: int
    unreadable: int
    seconds: float

    @property
    def normal(self) -> int:
        return self.scored - self.anomalous

    @property
    def images_per_second(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else float("nan")


MapSink = Callable[[Source, np.ndarray], None]
"""Receives each scored image's float32 (H, W) anomaly map, e.g. to write heat maps."""


def read_image(model: BundleModel, path: Path) -> np.ndarray:
    """uint8 (C, H, W) network input for `path`; UnreadableImage says why a file cannot be scored.

    "Wrong channel count" follows the prepare stage's rule that one category has one channel count:
    a grayscale file given to an RGB model (or a colour file to a grayscale one) is refused rather
    than silently converted, since it most likely comes from another camera or product. Alpha
    channels and CMYK/palette encodings of colour images are converted, exactly as in training.
    """
    try:
        if path.stat().st_size == 0:
            raise UnreadableImage("empty file (0 bytes)")
        data = path.read_bytes()
    except OSError as error:
        raise UnreadableImage(f"cannot open file ({type(error).__name__}: {error.strerror or error})") from error
    import io

    expected = model.info.preprocessing.channels
    try:
        stored = probe_image(io.BytesIO(data)).channels  # type: ignore[arg-type]  # streams are accepted
        if stored != expected:
            raise UnreadableImage(
                f"wrong channel count: a {stored}-channel ({_CHANNEL_NAMES[stored]}) image, but the model "
                f"expects {expected}-channel ({_CHANNEL_NAMES[expected]}) images"
            )
        return model.decode(data)
    except DatasetError as error:
        reason = str(error).replace("from the given bytes ", "")
        raise UnreadableImage(f"corrupt or not an image: {reason}") from error


def predict(
    model: BundleModel,
    sources: Sequence[Source],
    batch_size: int = 32,
    progress: bool = True,
    map_sink: MapSink | None = None,
    workers: int | None = None,
) -> tuple[list[Prediction], Summary]:
    """Score every source; unreadable files become error rows instead of exceptions."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    threshold = model.info.image_threshold
    predictions: list[Prediction] = []
    started = time.perf_counter()
    workers = workers or min(4, os.cpu_count() or 1)
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(sources), desc="predict", unit="img", disable=not progress) as bar,
    ):
        for chunk, decoded in _decoded_batches(pool, model, sources, batch_size):
            good = [(source, array) for source, array in zip(chunk, decoded, strict=True) if isinstance(array, np.ndarray)]
            if good:
                scores, maps = model.score(np.stack([array for _, array in good]), batch_size)
            by_source = {id(source): index for index, (source, _) in enumerate(good)}
            for source, result in zip(chunk, decoded, strict=True):
                if isinstance(result, UnreadableImage):
                    predictions.append(Prediction(source, None, None, str(result)))
                    continue
                index = by_source[id(source)]
                score = float(scores[index])
                predictions.append(Prediction(source, score, score > threshold))
                if map_sink is not None:
                    map_sink(source, maps[index])
            bar.update(len(chunk))
    seconds = time.perf_counter() - started
    scored = [p for p in predictions if p.ok]
    summary = Summary(len(scored), sum(bool(p.anomalous) for p in scored), len(predictions) - len(scored), seconds)
    return predictions, summary


def _decoded_batches(
    pool: ThreadPoolExecutor, model: BundleModel, sources: Sequence[Source], batch_size: int
) -> Iterator[tuple[Sequence[Source], list[np.ndarray | UnreadableImage]]]:
    """Yield (batch, decoded images or errors), decoding the next batch while the caller scores this one."""

    def submit(start: int) -> tuple[Sequence[Source], list[Future[np.ndarray]]]:
        chunk = sources[start : start + batch_size]
        return chunk, [pool.submit(_read_source, model, source) for source in chunk]

    pending = submit(0) if sources else None
    for start in range(0, len(sources), batch_size):
        assert pending is not None
        chunk, futures = pending
        pending = submit(start + batch_size) if start + batch_size < len(sources) else None
        yield chunk, [_outcome(future) for future in futures]


def _read_source(model: BundleModel, source: Source) -> np.ndarray:
    """`read_image`, unless the source already says why it cannot be scored (it was never fetched)."""
    if source.error is not None:
        raise UnreadableImage(source.error)
    return read_image(model, source.path)


def _outcome(future: Future[np.ndarray]) -> np.ndarray | UnreadableImage:
    try:
        return future.result()
    except UnreadableImage as error:
        return error


def write_predictions(
    path: Path, predictions: Sequence[Prediction], threshold: float, model_name: str, model_version: str
) -> None:
    """predictions.csv, one row per file; scores at full float precision, so they compare exactly."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for p in predictions:
            label = "" if p.anomalous is None else ("anomalous" if p.anomalous else "normal")
            score = "" if p.score is None else repr(p.score)
            writer.writerow(
                [
                    p.source.location,
                    "ok" if p.ok else "error",
                    score,
                    label,
                    repr(threshold),
                    model_name,
                    model_version,
                    p.error or "",
                ]
            )
