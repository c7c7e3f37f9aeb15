"""The run-cache bookkeeping that tells a stage that ran from one restored, with other dvc processes beside it."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipelines.dvc_runner import _is_run_of, run_cache_entries


def _project_with_run_cache(root: Path) -> Path:
    from dvc.repo import Repo

    Repo.init(str(root), no_scm=True).close()
    runs = root / ".dvc" / "cache" / "runs" / "ab" / "abcdef"
    runs.mkdir(parents=True)
    (runs / "entry").write_text(
        yaml.safe_dump({"cmd": "oesdn train-ae --category brick", "outs": [{"path": "models/brick/ae.pt"}]})
    )
    (runs / ".Kx3f9.tmp").write_text("half written by a dvc beside this one")
    return runs


def test_entries_leave_out_the_temporary_files_another_dvc_is_writing(tmp_path: Path) -> None:
    _project_with_run_cache(tmp_path)
    assert run_cache_entries(tmp_path) == {"ab/abcdef/entry"}


def test_an_entry_gone_before_it_is_read_is_not_this_stages_run(tmp_path: Path) -> None:
    runs = _project_with_run_cache(tmp_path)
    lock_entry = {"cmd": "oesdn train-ae --category brick", "outs": [{"path": "models/brick/ae.pt"}]}
    assert _is_run_of(tmp_path, {"ab/abcdef/entry"}, lock_entry)
    (runs / "entry").unlink()  # renamed or removed by the other dvc after the listing
    assert not _is_run_of(tmp_path, {"ab/abcdef/entry"}, lock_entry)
