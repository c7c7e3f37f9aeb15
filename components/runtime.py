"""Device choice, mixed precision and seeding: the same code runs on a laptop CPU or a CUDA box."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch


def select_device(requested: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else the CPU; a CUDA request without CUDA is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no CUDA GPU; use --device cpu")
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bf16 mixed precision on CUDA (no loss scaling needed); full fp32 on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cpu_capability() -> str:
    """The vector instruction set torch's CPU kernels dispatch to here (e.g. AVX2, AVX512).

    Why it is recorded: kernels for another instruction set sum floats in another order, so the
    same seed, code and data train to other last bits, and a run reproduces bit for bit only on a
    CPU of the same capability (and thread count).
    """
    return str(torch.backends.cpu.get_cpu_capability())


def seed_everything(seed: int) -> None:
    """Seed every RNG and ask torch for deterministic kernels, so a seed fixes the result."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # `use_deterministic_algorithms(True, warn_only=True)` without its import of torch's compiler
    # (about 3 s per process on the CPU), which nothing here uses.
    torch.set_deterministic_debug_mode("warn")
    torch.backends.cudnn.benchmark = False


@contextlib.contextmanager
def evaluation_mode(*modules: torch.nn.Module) -> Iterator[None]:
    """Put modules in eval mode for inference and restore their previous mode afterwards."""
    previous = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for module, was_training in zip(modules, previous, strict=True):
            module.train(was_training)


def to_float(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) to float32 in [0, 1], the networks' input range."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a tensor to `device`; image batches go channels-last, which conv kernels run faster on."""
    if tensor.dim() == 4:
        return tensor.to(device, memory_format=torch.channels_last)
    return tensor.to(device)


def prepare_module(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move a network to `device` in the channels-last layout its inputs will have."""
    return module.to(device, memory_format=torch.channels_last)


def batched_inference(module: torch.nn.Module, inputs: torch.Tensor, batch_size: int, device: torch.device) -> torch.Tensor:
    """Run `module` over `inputs` in eval mode, batch by batch; returns fp32 outputs on the CPU."""
    prepare_module(module, device)
    outputs = []
    with evaluation_mode(module), autocast(device):
        for start in range(0, len(inputs), batch_size):
            outputs.append(module(to_device(inputs[start : start + batch_size], device)).float().cpu().contiguous())
    return torch.cat(outputs)
