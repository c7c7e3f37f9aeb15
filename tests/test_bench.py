"""The benchmark suite: dataset loaders, settings, reports, and CI-sized smoke runs of both benchmarks."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from components.benchmarks.datasets import (
    FASHION_MNIST_FILES,
    FASHION_MNIST_ROOT,
    DatasetUnavailableError,
    OneClassData,
    load_fashion_mnist,
    load_mnist_subset,
    pad_to,
    read_idx,
)
from components.benchmarks.oneclass import run_one_class, run_variants
from components.benchmarks.report import markdown_report, records_frame
from components.benchmarks.settings import load_bench_settings, smoke_settings
from components.benchmarks.speed import fold_batchnorm, forward_flops, speed_verdicts
from components.config import ConfigError
from components.models.oesdn.networks import ConvAutoencoder, StyleDistillationNet
from pipelines.cli import main
from tests.conftest import PROJECT_ROOT, needs

SETTINGS = PROJECT_ROOT / "benchmarks" / "bench.yaml"


@pytest.fixture(autouse=True)
def one_thread() -> object:
    """One torch thread, as the benchmark runs: on a shared 2-core machine two threads spin against other jobs."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def fashion_mnist_missing() -> str | None:
    missing = [name for name in FASHION_MNIST_FILES.values() if not (FASHION_MNIST_ROOT / name).is_file()]
    if not missing:
        return None
    return f"Fashion-MNIST not installed ({FASHION_MNIST_ROOT} lacks {missing}); run `apt-get install -y dataset-fashion-mnist`"


def require_fashion_mnist() -> None:
    """Reached without the dataset only under CI (see `needs`), where its absence is a failure."""
    message = fashion_mnist_missing()
    if message:
        pytest.fail(message)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def fake_fashion(root: Path, per_class: int = 6) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        labels = np.repeat(np.arange(10), per_class)
        write_idx(root / FASHION_MNIST_FILES[f"{split}_images"], rng.integers(0, 256, (len(labels), 28, 28)))
        write_idx(root / FASHION_MNIST_FILES[f"{split}_labels"], labels)


def test_read_idx_round_trip_and_bad_files(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "ok.gz", array)
    np.testing.assert_array_equal(read_idx(tmp_path / "ok.gz"), array)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="bad"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + np.asarray([10], ">u4").tobytes() + b"\x00" * 3)
    with pytest.raises(ValueError, match="short.*10 bytes"):
        read_idx(tmp_path / "short")


def test_pad_to_centres_the_image() -> None:
    padded = pad_to(np.full((1, 28, 28), 7, np.uint8), 32)
    assert padded.shape == (1, 1, 32, 32)
    assert padded[0, 0, 2:30, 2:30].min() == 7 and padded.sum() == 7 * 28 * 28


def test_fashion_loader_subsamples_per_class_and_names_missing_files(tmp_path: Path) -> None:
    fake_fashion(tmp_path)
    data = load_fashion_mnist(tmp_path, 32, train_per_class=4, split_seed=0, test_per_class=2)
    assert np.bincount(data.train_labels).tolist() == [4] * 10
    assert np.bincount(data.test_labels).tolist() == [2] * 10
    assert data.train_images.shape == (40, 1, 32, 32) and data.test_targets(3).sum() == 18
    again = load_fashion_mnist(tmp_path, 32, train_per_class=4, split_seed=0, test_per_class=2)
    np.testing.assert_array_equal(again.train_images, data.train_images)
    assert "SUBSET" in data.description
    full = load_fashion_mnist(tmp_path, 32, train_per_class=None, split_seed=0)
    assert len(full.test_labels) == 60 and "full official test set" in full.description
    (tmp_path / FASHION_MNIST_FILES["test_labels"]).unlink()
    with pytest.raises(DatasetUnavailableError, match="t10k-labels.*apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path, 32, 4, 0)


def test_mnist_subset_split_is_disjoint_fixed_and_documented() -> None:
    data = load_mnist_subset(32, train_per_class=300, split_seed=0)
    assert np.bincount(data.train_labels).tolist() == [300] * 10
    assert np.bincount(data.test_labels).tolist() == [200] * 10
    train = {row.tobytes() for row in data.train_images[:, 0]}
    assert not any(row.tobytes() in train for row in data.test_images[:50, 0])
    assert "SUBSET" in data.description and "not the full MNIST" in data.description
    with pytest.raises(ValueError, match="mnist_subset.train_per_class"):
        load_mnist_subset(32, train_per_class=500, split_seed=0)


def test_settings_parse_and_errors_name_the_key(tmp_path: Path) -> None:
    settings = load_bench_settings(SETTINGS)
    assert settings.oneclass.sdn.lambda_oer > 0 and len(settings.oneclass.seeds) >= 3
    bad = SETTINGS.read_text().replace("image_size: 32", "image_size: 30")
    (tmp_path / "bench.yaml").write_text(bad)
    with pytest.raises(ConfigError, match=r"bench.yaml"):
        load_bench_settings(tmp_path / "bench.yaml")
    (tmp_path / "typo.yaml").write_text(SETTINGS.read_text().replace("split_seed:", "split_sed:"))
    with pytest.raises(ConfigError, match="oneclass.split_sed"):
        load_bench_settings(tmp_path / "typo.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_bench_settings(tmp_path / "absent.yaml")


def test_ablation_reuses_oe_sdn_and_sdn_instead_of_retraining() -> None:
    config = load_bench_settings(SETTINGS).oneclass
    variants, aliases = run_variants(config, seed=config.ablation.seeds[0], ablation=True)
    assert aliases == {"aux_rotation": "oe_sdn", "aux_none": "sdn"}
    assert variants["aux_hflip"].transforms == ("hflip",) and variants["aux_hflip"].lambda_oer == config.sdn.lambda_oer
    other_seed = max(config.seeds) + 1
    assert set(run_variants(config, seed=other_seed, ablation=True)[0]) == {"sdn", "oe_sdn"}


def tiny_data() -> OneClassData:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 1, 32, 32), dtype=np.uint8)
    images[30:] //= 4  # class 1 is darker: a detectable anomaly
    labels = np.repeat([0, 1], 30)
    return OneClassData("tiny", ("bright", "dark"), images[::2], labels[::2], images[1::2], labels[1::2], "tiny")


def test_one_class_run_is_deterministic_given_a_seed() -> None:
    config = smoke_settings(load_bench_settings(SETTINGS)).oneclass
    first = run_one_class(tiny_data(), 0, 0, config, torch.device("cpu"), log=lambda _: None)
    second = run_one_class(tiny_data(), 0, 0, config, torch.device("cpu"), log=lambda _: None)
    assert first["auroc"] == second["auroc"]
    assert set(first["auroc"]) == {"ae_l2", "ae_ssim", "sdn", "oe_sdn"}
    assert all(0.0 <= value <= 1.0 for value in first["auroc"].values())


def test_markdown_puts_paper_numbers_beside_ours_for_mnist() -> None:
    records = [
        {
            "dataset": "mnist_subset",
            "normal_class": c,
            "class_name": str(c),
            "seed": s,
            "train_images": 1,
            "test_images": 1,
            "seconds": {"total": 1.0},
            "auroc": {"ae_l2": 0.5 + 0.01 * s, "ae_ssim": 0.5, "sdn": 0.6, "oe_sdn": 0.7, "aux_hflip": 0.65},
        }
        for c in range(10)
        for s in range(3)
    ]
    text = markdown_report(records_frame(records), "a description")
    assert "paper OE-SDN" in text and "| 0 0 | 0.510 ± 0.010 |" in text
    assert "**0.510 ± 0.010**" in text and "0.975" in text  # our mean with seed spread; the paper's mean
    assert "| hflip | 0.650 | 30 | 0.968 |" in text  # 10 classes x 3 seeds


def test_fold_batchnorm_keeps_outputs_and_flops_are_counted() -> None:
    torch.manual_seed(0)
    ae, sdn = ConvAutoencoder(3, 8, 8, 3), StyleDistillationNet(3, 8, 3)
    for net in (ae, sdn):  # move running stats away from the identity so folding has work to do
        net.train()
        net(torch.rand(8, 3, 32, 32))
        net.eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        for net in (ae, sdn):
            folded = fold_batchnorm(net)
            assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
            torch.testing.assert_close(folded(images), net(images), atol=1e-5, rtol=1e-4)
    assert forward_flops(sdn, images) > forward_flops(ae, images) > 0


def test_speed_verdicts_explain_a_missed_target() -> None:
    report = {
        "oe_sdn_over_ae_residual_time": 3.5,
        "channels": 3,
        "flops": {"sdn_over_ae": 4.0, "fraction_of_matmul_peak": 0.1},
        "profile_oe_sdn_forward": [
            {"op": "aten::mkldnn_convolution", "share": 0.6},
            {"op": "aten::native_batch_norm", "share": 0.2},
        ],
    }
    text = " ".join(speed_verdicts(report))
    assert "NOT met" in text and "4.0x the AE's FLOPs" in text and "aten::native_batch_norm 20%" in text


@needs(fashion_mnist_missing())
def test_smoke_oneclass_fashion_mnist_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_fashion_mnist()
    assert main(["--no-progress", "bench", "oneclass", "--dataset", "fashion_mnist", "--smoke", "--out", str(tmp_path)]) == 0
    frame = pd.read_csv(tmp_path / "oneclass_fashion_mnist.csv")
    assert set(frame["method"]) == {"ae_l2", "ae_ssim", "sdn", "oe_sdn"} and frame["auroc"].between(0, 1).all()
    assert frame["test_images"].iloc[0] == 200 and frame["train_images"].iloc[0] == 36  # smoke: 20 test per class
    assert "GEOM 0.935" in (tmp_path / "oneclass_fashion_mnist.md").read_text()


def test_smoke_oneclass_mnist_subset_with_ablation_cli(tmp_path: Path) -> None:
    argv = ["--no-progress", "bench", "oneclass", "--dataset", "mnist_subset", "--smoke", "--ablation", "--out", str(tmp_path)]
    assert main(argv) == 0
    frame = pd.read_csv(tmp_path / "oneclass_mnist_subset.csv")
    assert {"aux_hflip", "aux_vflip", "aux_gaussian_noise", "aux_rotation", "aux_none"} <= set(frame["method"])
    auroc = frame.set_index("method")["auroc"]
    assert auroc["aux_rotation"] == auroc["oe_sdn"] and auroc["aux_none"] == auroc["sdn"]
    assert "paper OE-SDN" in (tmp_path / "oneclass_mnist_subset.md").read_text()


def test_smoke_speed_cli(tmp_path: Path) -> None:
    assert main(["--no-progress", "bench", "speed", "--smoke", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "speed.json").read_text())
    assert report["flops"]["fraction_of_matmul_peak"] > 0 and report["peak_rss_mib"] > 0
    for method in ("ae_residual", "oe_sdn"):
        figures = report["inference"][method]
        assert figures["latency_ms_batch_1_end_to_end"] > 0 and figures["latency_ms_batch_1_model"] > 0
        assert figures["images_per_s_batch_n_model"] > 0 and figures["images_per_s_batch_n_end_to_end"] > 0
    assert report["training"]["ae_images_per_s"] > 0 and report["training"]["sdn_images_per_s"] > 0
    assert "matmul peak" in (tmp_path / "speed.md").read_text()


def test_devsuite_cli_runs_the_pipeline_stages_and_reuses_training_for_a_scoring_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from components.runtime import cpu_capability
    from tests.conftest import tiny_params, write_params

    params = tiny_params(yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text()))
    params["bundled"]["image_size"] = 32
    params_file = write_params(tmp_path / "params.yaml", params)
    monkeypatch.chdir(tmp_path)
    assert main(["--params", str(params_file), "--no-progress", "generate"]) == 0
    data = tmp_path / "data" / "bundled"
    cache, out = tmp_path / "cache", tmp_path / "out"
    common = [
        "--params",
        str(params_file),
        "--no-progress",
        "bench",
        "devsuite",
        "--root",
        str(data),
        "--categories",
        "brick",
        "--seeds",
        "0",
        "--cache",
        str(cache),
        "--out",
        str(out),
    ]
    assert main([*common, "--name", "first"]) == 0
    (workspace,) = cache.glob("train-*/brick-*/seed0")
    from pipelines.devsuite import defaults_workspace  # what the scripts re-reading trained runs call

    assert defaults_workspace(data, "brick", 0, cache) == workspace
    with pytest.raises(FileNotFoundError, match=r"seed1: no evaluated run of the defaults; run `oesdn bench devsuite`"):
        defaults_workspace(data, "brick", 1, cache)
    (record,) = (json.loads(path.read_text()) for path in cache.glob("*/brick-*_seed0.json"))
    assert record["cpu_capability"] == cpu_capability(), "a result says which kernels made it"
    networks = {name: (workspace / "models" / "brick" / name).stat().st_mtime_ns for name in ("ae.pt", "sdn.pt")}
    assert main([*common, "--name", "ssim", "--set", "score.distance=ssim"]) == 0
    assert [workspace] == list(cache.glob("train-*/brick-*/seed0"))
    assert networks == {name: (workspace / "models" / "brick" / name).stat().st_mtime_ns for name in networks}, (
        "a scoring change re-evaluates, never retrains"
    )
    first, ssim = pd.read_csv(out / "first.csv"), pd.read_csv(out / "ssim.csv")
    assert set(first["method"]) == set(ssim["method"]) == {"oe_sdn", "ae_l2", "ae_ssim"}
    by_method = {name: frame.set_index("method")["pixel_auroc"] for name, frame in (("first", first), ("ssim", ssim))}
    assert (
        by_method["first"]["ae_l2"] == by_method["ssim"]["ae_l2"] and by_method["first"]["oe_sdn"] != by_method["ssim"]["oe_sdn"]
    )
    with pytest.raises(SystemExit, match="no folder for categories"):
        main([*common, "--categories", "no_such_category"])
    other = tmp_path / "other"  # another suite with a `brick` of its own: never the first one's results
    shutil.copytree(data / "brick", other / "brick")
    (other / "brick" / "train" / "good" / "000.png").unlink()
    assert main([*common[:6], str(other), *common[7:], "--name", "other"]) == 0
    assert len(list(cache.glob("train-*/brick-*/seed0"))) == 2
    with pytest.raises(SystemExit, match=r"no folder for categories \['no_such_category'\] under data/devsuite256"):
        main(["--no-progress", "bench", "devsuite", "--hires", "--categories", "no_such_category"])  # --hires: its own folder


def test_contention_cli_times_each_thread_count_and_wait_policy(tmp_path: Path) -> None:
    assert main(["--no-progress", "bench", "contention", "--steps", "3", "--busy", "0", "--out", str(tmp_path)]) == 0
    rows = [line.split() for line in (tmp_path / "contention.md").read_text().splitlines()[2:]]
    assert {(row[0], row[1]) for row in rows} >= {("1", "default"), ("1", "PASSIVE")}
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows)


def test_two_suite_processes_take_turns_on_a_shared_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two score screens of one seed share a workspace: evaluate writes `metrics.json` there and the
    record reads it back, so without turns each could report the other's figures."""
    import fcntl
    import os
    import threading

    from components.processes import waiting_for_lock
    from pipelines import devsuite

    lock = tmp_path / ".brick.lock"
    seen: list[str] = []

    def inside(*_: object) -> dict[str, str]:
        descriptor = os.open(lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # the run holds the category's lock while it works
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(descriptor)
        seen.append("ran")
        return {"category": "brick"}

    monkeypatch.setattr(devsuite, "_run_category", inside)
    with waiting_for_lock(lock):  # another process's run of the same workspace
        worker = threading.Thread(target=devsuite.run_category, args=(None, "brick", tmp_path, "cpu", False))
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive() and seen == [], "the second run waits for the first"
    worker.join(timeout=10)
    assert seen == ["ran"]


def test_run_keys_leave_out_a_setting_at_its_former_behaviour_so_earlier_runs_are_reused(tmp_path: Path) -> None:
    from pipelines import devsuite

    def params(validations: int, denoise_share: float = 0.5) -> object:
        overrides = {"ae": {"validations": validations, "denoise_share": denoise_share}, "sdn": {"validations": validations}}
        return devsuite.suite_params(PROJECT_ROOT / "params.yaml", tmp_path, "brick", 0, overrides)

    every, spaced = params(0), params(8)
    assert all("validations" not in devsuite._dumped(every)[section] for section in ("ae", "sdn"))
    assert devsuite._dumped(spaced)["ae"]["validations"] == 8
    assert devsuite.training_key(spaced) != devsuite.training_key(every)
    assert devsuite.run_key(spaced) != devsuite.run_key(every)

    plain = params(8, denoise_share=0.0)  # the AE before it could denoise: its runs keep their keys
    assert not {"denoise_share", "denoise_transforms"} & set(devsuite._dumped(plain)["ae"])
    assert devsuite._dumped(spaced)["ae"]["denoise_share"] == 0.5
    assert devsuite.training_key(plain) != devsuite.training_key(spaced)


@pytest.mark.parametrize("pair", ["ae.min_steps", "=600", "ae..min_steps=600", "ae.min_steps.=600"])
def test_devsuite_refuses_a_malformed_set_naming_it_before_building_anything(
    pair: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "suite"
    argv = ["--no-progress", "bench", "devsuite", "--root", str(root), "--categories", "moon", "--out", str(tmp_path)]
    assert main([*argv, "--set", pair]) == 2
    assert f"--set wants section.key=value, got {pair!r}" in capsys.readouterr().err
    assert not root.exists(), "the suite is not built for a run that cannot start"
