"""The two training objectives of OE-SDN, in the form `components.training.fit` expects."""

from __future__ import annotations

import torch
from torch import nn

from components.models.oesdn.losses import ReconstructionLoss
from components.models.oesdn.outlier_exposure import AuxSettings, make_aux_batch, oer_pair
from components.training import Batch


class AutoencoderObjective:
    """Stage 1: reconstruct normal images, d(f_AE(x), x). The batch is (images,).

    With `denoise` and a `denoise_share` above 0, that share of the images (drawn per image) enters
    with a local corruption while the target stays the clean image: the AE learns to paint normal
    content over what is not normal, instead of rebuilding a dark hole it has the capacity to code
    (its mean tone). The SDN, which copies what it is shown, then differs from it inside the hole,
    not only at its rim.
    """

    def __init__(self, distance: ReconstructionLoss, denoise: AuxSettings | None = None, denoise_share: float = 0.0) -> None:
        self.distance = distance
        self.denoise = denoise if denoise_share > 0 else None
        self.denoise_share = denoise_share

    def __call__(
        self, model: nn.Module, batch: Batch, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        (images,) = batch
        inputs = images
        if self.denoise is not None:
            corrupted, _ = make_aux_batch(images, generator, self.denoise)
            draw = torch.rand(len(images), generator=generator, device=generator.device).to(images.device)
            inputs = torch.where((draw < self.denoise_share)[:, None, None, None], corrupted, images)
        return self.distance(model(inputs), images), {}


class StyleDistillationObjective:
    """Stage 2: J = (1 - lambda) * d(f_OS(x), f_AE(x)) + lambda * d(t~, f_OS(x~)).

    t~ is the auxiliary image x~ itself for whole-image outliers; for local corruptions it is x~
    inside the corrupted blob and f_AE(x) outside (see `outlier_exposure.oer_pair`).

    The batch is (images, frozen AE outputs for those images): the AE is fixed, so its outputs are
    computed once up front rather than on every step.
    """

    def __init__(self, distance: ReconstructionLoss, lambda_oer: float, aux: AuxSettings) -> None:
        self.distance = distance
        self.lambda_oer = lambda_oer
        self.aux = aux

    def __call__(
        self, model: nn.Module, batch: Batch, generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        images, ae_outputs = batch
        if self.lambda_oer == 0:
            kd = self.distance(model(images), ae_outputs)
            return kd, {"kd": kd.detach()}
        aux_inputs, aux_targets = oer_pair(images, ae_outputs, generator, self.aux)
        # One forward pass over normal and auxiliary images together. Two separate passes would
        # normalise each with its own batch statistics in training while the running statistics
        # used at test time mix both: on Fashion-MNIST that mismatch cost OE-SDN 0.1 AUROC
        # (Sandal 0.80 -> 0.90) and left it below the plain SDN.
        outputs = model(torch.cat([images, aux_inputs]))
        kd = self.distance(outputs[: len(images)], ae_outputs)
        oer = self.distance(outputs[len(images) :], aux_targets)
        total = (1.0 - self.lambda_oer) * kd + self.lambda_oer * oer
        return total, {"kd": kd.detach(), "oer": oer.detach()}
