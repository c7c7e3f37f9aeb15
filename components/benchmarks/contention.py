"""SDN training step time alone and beside busy processes, per thread count and OpenMP wait policy.

Why: on a machine shared with another job, torch's default OpenMP threads spin while they wait for
each other; a thread descheduled by the other job then stalls every step (an SDN epoch went from
5 s to 60 s). Each configuration runs in a fresh interpreter, since OpenMP reads `OMP_WAIT_POLICY`
and `OMP_NUM_THREADS` once, when torch loads. A fair result is a slowdown no worse than the share
of the CPUs the run gets (about 2x beside one busy process per CPU).

    oesdn bench contention                     # about a minute and a half on two cores
    oesdn bench contention --steps 20 --busy 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ("default", "PASSIVE")
BUDGET_S = 6.0
"""Stop timing a configuration after this long (once it has three steps), to keep the whole run short."""


def _worker(steps: int) -> None:
    """Time up to `steps` SDN optimiser steps at the project's default SDN size; print the median in ms."""
    sys.path.insert(0, str(ROOT))
    import torch

    from components.models.oesdn.networks import StyleDistillationNet

    torch.manual_seed(0)
    model = StyleDistillationNet(channels=3, base_channels=8, depth=3, residual=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, targets = torch.rand(16, 3, 64, 64), torch.rand(16, 3, 64, 64)
    times: list[float] = []
    deadline = time.perf_counter() + BUDGET_S
    for step in range(steps + 2):  # two warm-up steps
        started = time.perf_counter()
        loss = torch.nn.functional.mse_loss(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 2:
            times.append(time.perf_counter() - started)
        if len(times) >= 3 and started > deadline:  # a spinning configuration can take seconds a step
            break
    print(json.dumps({"threads": torch.get_num_threads(), "median_ms": 1000 * statistics.median(times)}))


def _measure(threads: int, policy: str, steps: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("OMP_WAIT_POLICY", None)
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    output = subprocess.run(
        [sys.executable, "-m", "components.benchmarks.contention", "--steps", str(steps)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    return float(json.loads(output.strip().splitlines()[-1])["median_ms"])


def _busy(count: int) -> list[subprocess.Popen[bytes]]:
    """`count` processes spinning at 100 % of a CPU each: the other job on a shared machine."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def measure_contention(steps: int, busy: int) -> str:
    """The benchmark's table as text: per thread count and wait policy, step time alone and contended."""
    cpus = len(os.sched_getaffinity(0))
    lines = [
        f"{cpus} CPUs; SDN step (batch 16, 64 px, base 8), median of up to {steps} steps; contended = beside {busy} busy process(es)",
        f"{'threads':>7} {'OMP_WAIT_POLICY':>15} {'alone ms':>9} {'contended ms':>13} {'slowdown':>9}",
    ]
    for threads in sorted({1, cpus}):
        for policy in POLICIES:
            alone = _measure(threads, policy, steps)
            competitors = _busy(busy)
            try:
                contended = _measure(threads, policy, steps)
            finally:
                for process in competitors:
                    process.kill()
                    process.wait()
            lines.append(f"{threads:>7} {policy:>15} {alone:>9.1f} {contended:>13.1f} {contended / alone:>8.1f}x")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # the worker: one configuration, in a fresh interpreter (see `_measure`)
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    _worker(parser.parse_args().steps)
