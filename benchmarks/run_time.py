"""How long the quick start's `oesdn run` takes on this machine: wall time, CPU time, each stage.

Clones this checkout's HEAD into a temporary folder (a fresh DVC cache, no MLflow store, no Prefect
state), runs `oesdn run` there on the bundled data with this interpreter's environment, and prints
the figures. The clone's own code runs (it goes first on PYTHONPATH), so uncommitted edits are not
measured. Kept out of CI: it trains every bundled category (about 8 minutes on two idle cores).

    python benchmarks/run_time.py                        # the defaults
    python benchmarks/run_time.py --set orchestration.parallel_stages=1   # categories one after another
    python benchmarks/run_time.py --set ae.min_steps=600                  # a candidate default, before committing it
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

STAGE_LINE = re.compile(
    r"Task run '(?P<stage>[^']+)' - (?P=stage): (?P<outcome>ran|restored from the run cache|up to date) in (?P<seconds>[0-9.]+) s"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting in the clone's params.yaml, e.g. ae.min_steps=600 (repeatable)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the clone (its path is printed) instead of deleting it")
    args = parser.parse_args()
    source = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(source))
    from components.config import ConfigError, deep_merge, validate_params
    from pipelines.devsuite import parse_overrides

    # HEAD's params.yaml is the clone's; checked here so a bad override stops before anything is cloned.
    head_params = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=source, capture_output=True, text=True, check=True)
    try:
        params = deep_merge(yaml.safe_load(head_params.stdout), parse_overrides(args.set))
        validate_params(params, origin=f"params.yaml with {' '.join(args.set)}")
    except ConfigError as error:
        parser.error(str(error))
    scratch = tempfile.mkdtemp(prefix="oesdn-run-time-")
    clone = Path(scratch) / "project"
    subprocess.run(["git", "clone", "--quiet", str(source), str(clone)], check=True)
    if args.set:
        (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        print(f"params.yaml overrides: {' '.join(args.set)}")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout.strip()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_API", "MLFLOW_"))}
    env["PYTHONPATH"] = f"{clone}{os.pathsep}{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(clone)
    oesdn = Path(sys.executable).parent / "oesdn"
    log_path = clone / "oesdn-run.log"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with log_path.open("w") as log:
        completed = subprocess.run([str(oesdn), "run"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    log = log_path.read_text()

    print(f"oesdn run on the bundled data, clone of {commit}, {os.cpu_count()} CPUs, exit status {completed.returncode}")
    print(
        f"wall {wall:.0f} s ({wall / 60:.1f} min); CPU {user:.0f} s user + {system:.0f} s system = {(user + system) / wall:.0%} of one core"
    )
    stages = [match.groupdict() for match in STAGE_LINE.finditer(log)]
    if stages:
        print(f"{'stage':<22} {'outcome':<28} seconds")
        for stage in stages:
            print(f"{stage['stage']:<22} {stage['outcome']:<28} {float(stage['seconds']):7.1f}")
        total = sum(float(stage["seconds"]) for stage in stages)
        print(
            f"{'all stages':<22} {'':<28} {total:7.1f}  (stage commands side by side overlap: their sum can exceed the wall time)"
        )
    side_by_side = re.search(r"categories side by side: .*", log)
    print(side_by_side.group(0) if side_by_side else "categories one after another")
    ending = [
        line for line in log.splitlines() if re.match(r"^\w+: v\d+ ", line) or line.startswith(("difference blur", "warning:"))
    ]
    print("\n".join(ending))
    if completed.returncode != 0:
        print(f"the run failed; its log: {log_path}", file=sys.stderr)
    if args.keep or completed.returncode != 0:
        print(f"clone kept at {clone}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return completed.returncode


if __name__ == "__main__":
    raise SystemExit(main())
