"""fp32 CPU inference linears on oneDNN: ``Linear``, a drop-in ``nn.Linear`` used by every attention and MLP layer.

``F.linear`` in fp32 on CPU calls MKL's sgemm, which on AMD CPUs runs a code path at about half the rate oneDNN's
fp32 kernels reach on the same cores (measured on the benchmark machine: ~90 vs ~210 GFLOP/s per core); both are
IEEE fp32 (no reduced-precision internals). bf16/fp16 linears already go to oneDNN. Training (autograd), autocast
and torch.compile keep ``F.linear``. Switch: ``Linear.onednn_linear`` (per module, default on), overridden by an
enclosing ``kernel_options(onednn_linear=...)`` (``kernels.options``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .options import DEFAULT_OPTIONS, resolve

HAS_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def onednn_linear_ok(x: torch.Tensor, weight: torch.Tensor, enabled: bool = True) -> bool:
    """Whether ``x @ weight.T`` may run on oneDNN: fp32 CPU inference, eager, switch ``enabled`` on."""
    return (resolve("onednn_linear", enabled) and HAS_ONEDNN_LINEAR and x.device.type == "cpu"
            and x.dtype == torch.float32 and weight.dtype == torch.float32 and torch.backends.mkldnn.enabled
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling())


class Linear(nn.Linear):
    """``nn.Linear`` (same constructor, parameters and state-dict keys) whose fp32 CPU inference runs on oneDNN.

    ``forward(x, gelu=...)`` also applies a GELU ("none": exact erf, "tanh": the tanh approximation), fused
    into the GEMM's epilogue on the oneDNN path. ``onednn_linear = False`` keeps this layer on ``F.linear``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self.onednn_linear: bool = bool(DEFAULT_OPTIONS.onednn_linear)

    def forward(self, x: torch.Tensor, gelu: str | None = None) -> torch.Tensor:
        if onednn_linear_ok(x, self.weight, self.onednn_linear):
            if gelu is None:
                return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "gelu", [], gelu)
        out = F.linear(x, self.weight, self.bias)
        return out if gelu is None else F.gelu(out, approximate=gelu)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.onednn_linear else ", onednn_linear=False")
