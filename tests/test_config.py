from __future__ import annotations

import copy
from pathlib import Path

import pytest

from components.config import ConfigError, load_params
from tests.conftest import write_params


def test_project_params_are_valid(project_params, tmp_path: Path) -> None:
    params = load_params(write_params(tmp_path / "params.yaml", project_params))
    assert set(params.categories) == {"brick", "grass", "gravel"}
    assert params.sdn.lambda_oer == 0.5
    assert params.sdn.aux_transforms == ("foreign_patch", "noise_patch")
    assert params.ae.denoise_share == 0.5 and params.ae.denoise_transforms == ("shade_patch",)


@pytest.mark.parametrize(
    ("section", "key", "value", "named"),
    [
        ("ae", "epochs", 0, "ae.epochs"),
        ("sdn", "lambda_oer", 1.5, "sdn.lambda_oer"),
        ("data", "image_size", 70, "data.image_size"),
        ("data", "channels", 2, "data.channels"),
        ("data", "val_fraction", 0.0, "data.val_fraction"),
        ("loss", "ssim_window", 8, "loss"),
        ("score", "reduction", "median", "score.reduction"),
        ("sdn", "aux_transforms", ["rot45"], "sdn.aux_transforms"),
        ("ae", "learning_rat", 0.1, "ae.learning_rat"),
        ("sdn", "crop_size", 40, "sdn.crop_size"),
        ("ae", "validate_from", 1.0, "ae.validate_from"),
        ("sdn", "validations", -1, "sdn.validations"),
        ("score", "image_distances", ["squared", "squared"], "score.image_distances"),
        ("score", "image_distances", [], "score.image_distances"),
        ("score", "image_distances", ["cosine"], "score.image_distances"),
        ("score", "difference_sigmas", [0, 0.0], "score.difference_sigmas"),
        ("score", "difference_sigmas", [-1.0], "score.difference_sigmas"),
        ("score", "difference_sigmas", [], "score.difference_sigmas"),
        ("score", "multiscale_map", "sometimes", "score.multiscale_map"),
        ("ae", "denoise_share", 1.5, "ae.denoise_share"),
        ("ae", "denoise_transforms", ["rot90"], "ae.denoise_transforms"),
        ("ae", "denoise_transforms", [], "ae.denoise_transforms"),
    ],
)
def test_bad_values_name_their_key(project_params, tmp_path: Path, section, key, value, named) -> None:
    params = copy.deepcopy(project_params)
    params[section][key] = value
    with pytest.raises(ConfigError) as error:
        load_params(write_params(tmp_path / "params.yaml", params))
    assert named in str(error.value)


def test_one_difference_sigma_may_be_written_without_a_list(project_params, tmp_path: Path) -> None:
    project_params["score"]["difference_sigmas"] = 2
    assert load_params(write_params(tmp_path / "params.yaml", project_params)).score.difference_sigmas == [2.0]


def test_oer_without_transforms_is_rejected(project_params, tmp_path: Path) -> None:
    project_params["sdn"]["aux_transforms"] = []
    with pytest.raises(ConfigError, match="aux_transforms"):
        load_params(write_params(tmp_path / "params.yaml", project_params))
    project_params["sdn"]["lambda_oer"] = 0.0  # the plain SDN needs no auxiliary set
    assert load_params(write_params(tmp_path / "params.yaml", project_params)).sdn.lambda_oer == 0.0


def test_category_overrides_merge_and_validate(project_params, tmp_path: Path) -> None:
    project_params["categories"]["brick"] = {"sdn": {"epochs": 7}, "score": {"reduction": "max"}}
    params = load_params(write_params(tmp_path / "params.yaml", project_params))
    brick, grass = params.for_category("brick"), params.for_category("grass")
    assert (brick.sdn.epochs, brick.score.reduction) == (7, "max")
    assert brick.sdn.lambda_oer == params.sdn.lambda_oer
    assert (grass.sdn.epochs, grass.score.reduction) == (params.sdn.epochs, params.score.reduction)

    project_params["categories"]["brick"] = {"sdn": {"epochs": -1}}
    params = load_params(write_params(tmp_path / "params.yaml", project_params))
    with pytest.raises(ConfigError, match=r"categories\.brick[\s\S]*sdn\.epochs"):
        params.for_category("brick")
    with pytest.raises(ConfigError, match="unknown category 'tile'"):
        params.for_category("tile")


@pytest.mark.parametrize("name", ["../etc", "a/b", "", "sp ace"])
def test_category_must_be_a_plain_folder_name(project_params, tmp_path: Path, name: str) -> None:
    project_params["categories"] = {name: {}}
    with pytest.raises(ConfigError, match="plain folder name"):
        load_params(write_params(tmp_path / "params.yaml", project_params))


def test_unknown_override_section_is_rejected(project_params, tmp_path: Path) -> None:
    project_params["categories"]["brick"] = {"seeds": 3}
    with pytest.raises(ConfigError, match="overrides of 'brick'"):
        load_params(write_params(tmp_path / "params.yaml", project_params))


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("seed: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")


def test_channel_shuffle_needs_colour_images(project_params, tmp_path: Path) -> None:
    project_params["data"]["channels"] = 1
    project_params["sdn"]["aux_transforms"] = ["rot90", "channel_shuffle"]
    with pytest.raises(ConfigError, match="channel_shuffle needs data.channels: 3"):
        load_params(write_params(tmp_path / "params.yaml", project_params))


def test_a_crop_larger_than_the_images_is_rejected(project_params, tmp_path: Path) -> None:
    project_params["ae"]["crop_size"] = project_params["data"]["image_size"] + 16
    with pytest.raises(ConfigError, match=r"ae\.crop_size \d+ is larger than data\.image_size"):
        load_params(write_params(tmp_path / "params.yaml", project_params))
