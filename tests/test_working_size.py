"""`data.image_size` is a ceiling: a category works at its own images' size when they are smaller.

Why it matters: the default ceiling (256) lets 256 px photographs keep the one-pixel detail of thin
defects, while the bundled 128 px data is not blown up to 4x the pixels for no new detail. The side
prepare chooses must reach everything after it: the arrays, `dataset.json`, and the bundle that
`oesdn predict` resizes new images by.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from components.data.prepared import working_image_size
from pipelines.cli import main
from tests.conftest import PROJECT_ROOT, tiny_params, write_params

CATEGORY = "part"


def _image(path: Path, side: tuple[int, int], value: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 256, (side[1], side[0], 3), dtype=np.uint8)).save(path)
    return str(path)


def test_the_working_side_is_the_smallest_good_image_rounded_down_to_16_under_the_ceiling(tmp_path: Path) -> None:
    rows = [
        ("train", _image(tmp_path / "a.png", (72, 60), 1)),
        ("val", _image(tmp_path / "b.png", (100, 100), 2)),
        ("test", _image(tmp_path / "c.png", (20, 20), 3)),  # test images never set the side
    ]
    manifest = pd.DataFrame(rows, columns=["split", "path"])
    assert working_image_size(manifest, 256) == 48  # the shorter edge of the smallest good image, 60 -> 48
    assert working_image_size(manifest, 32) == 32  # the ceiling
    tiny = pd.DataFrame([("train", _image(tmp_path / "d.png", (10, 10), 4))], columns=["split", "path"])
    assert working_image_size(tiny, 256) == 16  # never below the networks' smallest side


@pytest.fixture
def small_images_project(tmp_path: Path) -> Path:
    """40 px images, with `data.image_size` 64 above them: the category must work at 32 px."""
    root = tmp_path / "data" / "mine" / CATEGORY
    for i in range(8):
        _image(root / "train" / "good" / f"{i:03d}.png", (40, 40), i)
    for i in range(2):
        _image(root / "test" / "good" / f"{i:03d}.png", (40, 40), 50 + i)
        _image(root / "test" / "crack" / f"{i:03d}.png", (40, 40), 60 + i)
        mask = np.zeros((40, 40), dtype=np.uint8)
        mask[5:15, 8:20] = 255
        (root / "ground_truth" / "crack").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(root / "ground_truth" / "crack" / f"{i:03d}_mask.png")
    params = tiny_params(yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text()), categories=(CATEGORY,))
    params["data"]["root"] = str(tmp_path / "data" / "mine")
    params["data"]["image_size"] = 64
    for section in ("ae", "sdn"):
        params[section]["epochs"] = 1
    write_params(tmp_path / "params.yaml", params)
    return tmp_path


def test_smaller_images_flow_at_their_own_size_from_prepare_to_predict(
    small_images_project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(small_images_project)
    assert main(["--no-progress", "prepare", "--category", CATEGORY]) == 0
    assert (
        "part: working at 32 px, the size of its smallest good image (data.image_size 64 is a ceiling)" in capsys.readouterr().out
    )
    prepared = small_images_project / "data" / "prepared" / CATEGORY
    assert json.loads((prepared / "dataset.json").read_text())["image_size"] == 32
    with np.load(prepared / "arrays.npz") as arrays:
        assert arrays["train"].shape[-2:] == (32, 32) and arrays["test"].shape[-2:] == (32, 32)
    for stage in ("train-ae", "train-sdn", "evaluate"):
        assert main(["--no-progress", stage, "--category", CATEGORY]) == 0, stage
    bundle = json.loads((small_images_project / "models" / CATEGORY / "bundle.json").read_text())
    assert bundle["preprocessing"]["image_size"] == 32
    out = small_images_project / "predictions"
    image = small_images_project / "data" / "mine" / CATEGORY / "test" / "crack" / "000.png"
    status = main(
        [
            "--no-progress",
            "predict",
            "--model",
            str(small_images_project / "models" / CATEGORY),
            "--out",
            str(out),
            "--maps",
            str(image),
        ]
    )
    assert status == 0
    assert Image.open(next(out.rglob("*_overlay.png"))).size == (40, 40)  # the map is shown on the image as given
