"""The registered model: one MLflow pyfunc wrapping a bundle (AE/SDN pair, preprocessing, threshold).

Input: a DataFrame with a column `image` (base64-encoded PNG/JPEG bytes) or `path` (local files).
Output: `pred_score` and `pred_label`; with the param `anomaly_map=True`, also each image's map.
"""

from __future__ import annotations

import base64
import binascii
import io
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from components.data.errors import DatasetError
from components.models.oesdn.bundle import BundleModel

BUNDLE_ARTIFACT = "bundle"
INPUT_COLUMNS = ("image", "path")
RUNTIME_PACKAGES = ("torch", "kornia", "numpy", "pandas", "pillow", "pydantic", "pyyaml", "mlflow")


class OESDNPyfunc(PythonModel):
    """Scores images exactly as the evaluate stage does, from the bundle logged with the model."""

    def load_context(self, context: Any) -> None:
        self.model = BundleModel.load(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        images = np.stack([self.model.decode(source) for source in image_sources(model_input)])
        scores, maps = self.model.score(images)
        output = pd.DataFrame({"pred_score": scores, "pred_label": scores > self.model.info.image_threshold})
        if (params or {}).get("anomaly_map", False):
            output["anomaly_map"] = [m.tolist() for m in maps]
        return output


def image_sources(frame: pd.DataFrame) -> list[bytes | str]:
    """Encoded bytes or paths, one per row; a clear error names the row and column at fault."""
    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame)
    present = [column for column in INPUT_COLUMNS if column in frame.columns and frame[column].notna().any()]
    if len(present) != 1:
        raise DatasetError(f"input needs exactly one of the columns {list(INPUT_COLUMNS)}; got {list(frame.columns)}")
    column = present[0]
    if len(frame) == 0:
        raise DatasetError("input has no rows")
    sources: list[bytes | str] = []
    for row, value in enumerate(frame[column]):
        if not isinstance(value, str) or not value:
            raise DatasetError(f"row {row}: column {column!r} must hold a non-empty string, got {value!r}")
        sources.append(_b64decode(value, row) if column == "image" else value)
    return sources


def _b64decode(value: str, row: int) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise DatasetError(f"row {row}: column 'image' is not valid base64 ({error})") from error


def encode_array(pixels: np.ndarray) -> str:
    """A uint8 (C, H, W) array as base64 PNG text, for small input examples."""
    from PIL import Image

    image = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def signature() -> ModelSignature:
    inputs = Schema([ColSpec("string", name, required=False) for name in INPUT_COLUMNS])
    outputs = Schema([ColSpec("double", "pred_score"), ColSpec("boolean", "pred_label")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=ParamSchema([ParamSpec("anomaly_map", "boolean", False)]))


def pip_requirements() -> list[str]:
    """The packages scoring imports, pinned to the versions installed now."""
    return [f"{name}=={metadata.version(name)}" for name in RUNTIME_PACKAGES]
