"""The distance d of the paper: a weighted sum of MSE and DSSIM."""

from __future__ import annotations

import kornia
import torch
from torch import nn
from torch.nn import functional as F


class ReconstructionLoss(nn.Module):
    """d(a, b) = mse_weight * MSE + dssim_weight * DSSIM, with DSSIM = (1 - SSIM) / 2.

    MSE keeps intensities right; DSSIM keeps local structure, which MSE alone lets blur away.
    Computed in fp32 even under mixed precision, since SSIM's variance terms underflow in bf16.
    """

    def __init__(self, mse_weight: float, dssim_weight: float, ssim_window: int) -> None:
        super().__init__()
        self.mse_weight = mse_weight
        self.dssim_weight = dssim_weight
        self.ssim_window = ssim_window

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(output.dtype, torch.float32)  # at least fp32
        output, target = output.to(dtype), target.to(dtype)
        loss = output.new_zeros(())
        if self.mse_weight:
            loss = loss + self.mse_weight * F.mse_loss(output, target)
        if self.dssim_weight:
            dssim = kornia.losses.ssim_loss(output, target, window_size=self.ssim_window, max_val=1.0)
            loss = loss + self.dssim_weight * dssim
        return loss
