"""Mixed precision for searches and retrainings (``amp`` in :class:`~fairdarts_core.presets.SearchConfig` and
:class:`~fairdarts_core.presets.TrainConfig`).

``off``: float32 throughout (the default; the recorded runs use it). ``bf16``: the network's forward pass runs
under ``torch.autocast`` in bfloat16, on a CPU or a GPU; bfloat16 keeps float32's exponent range, so no loss
scaling is needed. ``fp16``: float16 autocast with a gradient scaler (``torch.amp.GradScaler``), on CUDA only.
In every mode the parameters (the weights and the architecture parameters alpha) stay float32, and so do the
losses: the logits are cast to float32 before the cross-entropy, and the relaxation and the zero-one loss
(Fair DARTS Eq. 5) are computed from the float32 alpha outside the autocast region. Only the convolutions and
matrix products of the forward pass (and their gradients) run in the lower precision.

A :class:`Precision` is passed to the steps as a value; ``Precision()`` (``off``) leaves every step exactly as
it is without one, bit for bit.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Optional

import torch

AMP_MODES = ("off", "bf16", "fp16")
"""The ``amp`` settings."""

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """``t`` cast to float32 if autocast made it half or bfloat16; a float32 or float64 tensor unchanged (the
    same object: no copy, no autograd node)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def check_amp_device(amp: str, device: torch.device) -> None:
    """One ``ValueError`` line where ``amp`` cannot run on ``device`` (fp16 needs CUDA)."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp={amp!r} is not valid: choose one of {', '.join(AMP_MODES)}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(f"amp=fp16 needs a CUDA device (float16 autocast with a gradient scaler); this run is on "
                         f"{device.type}: use amp=bf16 there, or amp=off")


class Precision:
    """The precision of one run: an autocast context for the forward pass and, for fp16, a gradient scaler.

    ``scale(loss)`` before differentiating, ``unscale(optimizer)`` before clipping, ``step(optimizer)`` instead
    of ``optimizer.step()`` and ``update()`` once per iteration; all are plain pass-throughs for off and bf16.
    """

    def __init__(self, amp: str = "off", device: torch.device = torch.device("cpu")):
        device = torch.device(device)
        check_amp_device(amp, device)
        self.amp, self.device_type = amp, device.type
        self.scaler: Optional[Any] = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    def autocast(self):
        """The context the forward pass runs in."""
        if self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=_DTYPES[self.amp])

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; with a scaler, skipped when the unscaled gradients hold inf or NaN."""
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def update(self) -> None:
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> Dict[str, Any]:
        return {"amp": self.amp, "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: Optional[Dict[str, Any]]) -> None:
        if state and self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


OFF = Precision()
"""float32 throughout: what a step does when it is given no precision."""
