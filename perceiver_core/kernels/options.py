"""Per-module kernel switches and the ``kernel_options`` context manager that overrides them.

Three switches choose between exact, equivalent routes through the hardware (never between different maths):

- ``reassociate``: single-head cross-attentions may move a side's projections across the kernel
  (``kernels.reassociation``);
- ``onednn_linear``: fp32 CPU inference linears run on oneDNN (``kernels.onednn_linear.Linear``);
- ``onednn_attention``: CPU inference of big single-head attentions runs on oneDNN GEMMs
  (``kernels.attention``, plan ``onednn_chunked``).

Every module that uses a switch has an attribute of the same name (``Attention.reassociate``,
``Attention.onednn_attention``, ``Linear.onednn_linear``), set at construction from ``DEFAULT_OPTIONS`` (all on),
like timm's ``fused_attn``. ``with kernel_options(reassociate=False): model(x)`` overrides the given switches for
every module and kernel call run inside the block, in this thread / asyncio task only (a ``ContextVar``);
switches left as None keep the enclosing value, and nested blocks stack. ``set_kernel_options(model, ...)``
sets the attributes of every module of a model (a lasting, per-model choice).

Precedence: an enclosing ``kernel_options`` block, else the module attribute (for the free kernel functions:
their keyword argument, default on). Under ``torch.compile`` the context is not consulted (dynamo does not trace
``ContextVar`` reads faithfully): set the attributes before compiling. The oneDNN paths are eager-only anyway.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class KernelOptions:
    """A value per switch; None (only in overrides) means "not given: keep the enclosing value"."""

    reassociate: bool | None = None
    onednn_linear: bool | None = None
    onednn_attention: bool | None = None


DEFAULT_OPTIONS = KernelOptions(reassociate=True, onednn_linear=True, onednn_attention=True)
OPTION_NAMES = tuple(f.name for f in dataclasses.fields(KernelOptions))

_NO_OVERRIDES = KernelOptions()
_OVERRIDES: contextvars.ContextVar[KernelOptions | None] = contextvars.ContextVar("perceiver_kernel_options",
                                                                                  default=None)


def _given(reassociate: bool | None, onednn_linear: bool | None, onednn_attention: bool | None) -> dict[str, bool]:
    given = {"reassociate": reassociate, "onednn_linear": onednn_linear, "onednn_attention": onednn_attention}
    return {name: bool(value) for name, value in given.items() if value is not None}


@contextlib.contextmanager
def kernel_options(*, reassociate: bool | None = None, onednn_linear: bool | None = None,
                   onednn_attention: bool | None = None) -> Iterator[KernelOptions]:
    """Override the given switches for everything run inside (this thread / task); yields the active overrides."""
    given = _given(reassociate, onednn_linear, onednn_attention)
    active = dataclasses.replace(_OVERRIDES.get() or _NO_OVERRIDES, **given)
    token = _OVERRIDES.set(active)
    try:
        yield active
    finally:
        _OVERRIDES.reset(token)


def resolve(name: str, value: bool) -> bool:
    """The switch ``name`` as it applies here: an enclosing ``kernel_options`` value, else ``value`` (the module
    attribute or the kernel function's argument). Eager only: while compiling, ``value``."""
    if torch.compiler.is_compiling():
        return value
    override = getattr(_OVERRIDES.get() or _NO_OVERRIDES, name)
    return value if override is None else override


def set_kernel_options(model: nn.Module, *, reassociate: bool | None = None, onednn_linear: bool | None = None,
                       onednn_attention: bool | None = None) -> int:
    """Set the given switch attributes on every submodule of ``model`` that has them; returns how many modules
    were changed. A per-model setting that lasts (unlike ``kernel_options``, which is scoped)."""
    given = _given(reassociate, onednn_linear, onednn_attention)
    changed = 0
    for module in model.modules():
        names = [name for name in given if hasattr(module, name)]
        for name in names:
            setattr(module, name, given[name])
        changed += bool(names)
    return changed
