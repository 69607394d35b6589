"""The keywords of ``from_pretrained``, sorted out before anything is read: transformers' loading keywords
(with their transformers meaning), config overrides, and clear errors for the rest.

transformers passes every keyword it does not know to the config, and what the config does not know to the
model's ``__init__`` (a ``TypeError`` from deep inside). We keep the sorting but fail up front, naming the
keyword: loading machinery we do not have (sharding over devices, quantisation, adapters, tensor parallel) is
refused unless it is given its "off" value; keywords that only tune transformers' own loader are accepted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from .config_compat import as_dtype

# transformers keywords with no effect on what gets loaded (transformers itself drops most of them)
NO_EFFECT = frozenset({"low_cpu_mem_usage", "_fast_init", "mirror", "offload_state_dict", "trust_remote_code",
                       "tqdm_class", "_from_auto", "_from_pipeline", "_commit_hash"})

# transformers machinery we do not have: only its "off" value (or None) is accepted
UNSUPPORTED_UNLESS = {
    "max_memory": None, "offload_folder": None, "offload_buffers": False, "quantization_config": None,
    "variant": None, "adapter_kwargs": None, "adapter_name": "default", "generation_config": None,
    "gguf_file": None, "distributed_config": None, "device_mesh": None, "tp_plan": None, "tp_size": None,
    "use_kernels": False, "kernel_config": None, "key_mapping": None, "state_dict": None, "from_tf": False,
    "from_flax": False, "proxies": None, "experts_implementation": None,
}

ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")  # both run our fused attention (see kernels/attention.py)

# device_map values that ask for accelerate's placement over several devices
_PLACEMENT_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass
class LoadOptions:
    """What ``from_pretrained`` was asked to do, in transformers' terms."""

    revision: str | None = None
    cache_dir: str | os.PathLike | None = None
    local_files_only: bool = False
    token: str | bool | None = None
    force_download: bool = False
    subfolder: str = ""
    config: Any = None  # a PerceiverConfig, a folder / hub id to read one from, or None (the checkpoint's)
    config_overrides: dict[str, Any] = field(default_factory=dict)
    strict: bool | None = None
    output_loading_info: bool = False
    ignore_mismatched_sizes: bool = False
    dtype: torch.dtype | str = "auto"  # transformers 5's default: the config's dtype, else the weights'
    device: torch.device | None = None
    device_map: Any = None
    attn_implementation: str | None = None
    use_safetensors: bool | None = None

    def hub_kwargs(self) -> dict[str, Any]:
        return {"revision": self.revision, "cache_dir": self.cache_dir, "local_files_only": self.local_files_only,
                "token": self.token, "force_download": self.force_download, "subfolder": self.subfolder}


def parse(owner: str, kwargs: dict[str, Any]) -> LoadOptions:
    """Sort ``from_pretrained`` keywords; whatever is left in ``config_overrides`` must be a config attribute
    (checked once the config is read). ``owner`` names the class in error messages."""
    kwargs = dict(kwargs)
    opts = LoadOptions()
    for name in ("revision", "cache_dir", "token", "config", "strict", "use_safetensors"):
        if name in kwargs:
            setattr(opts, name, kwargs.pop(name))
    for name in ("local_files_only", "force_download", "output_loading_info", "ignore_mismatched_sizes"):
        if name in kwargs:
            setattr(opts, name, bool(kwargs.pop(name)))
    opts.subfolder = kwargs.pop("subfolder", "") or ""
    if not kwargs.pop("weights_only", True):
        raise ValueError(f"{owner}.from_pretrained: weights_only=False is not supported; checkpoints are always "
                         "read without unpickling objects")
    for name in NO_EFFECT:
        kwargs.pop(name, None)
    for name, off in UNSUPPORTED_UNLESS.items():
        if name in kwargs:
            value = kwargs.pop(name)
            if value is not None and value != off:
                raise ValueError(f"{owner}.from_pretrained: {name}={value!r} is not supported by perceiver_core "
                                 f"(it belongs to transformers' loading machinery); leave it unset")
    dtype = kwargs.pop("dtype", None)
    torch_dtype = kwargs.pop("torch_dtype", None)
    opts.dtype = _parse_dtype(owner, dtype if dtype is not None else torch_dtype)
    if "device_map" in kwargs:
        opts.device_map = kwargs.pop("device_map")
        opts.device = parse_device_map(owner, opts.device_map)
    if "attn_implementation" in kwargs:
        opts.attn_implementation = kwargs.pop("attn_implementation")
        if opts.attn_implementation not in (None, *ATTENTION_IMPLEMENTATIONS):
            raise ValueError(f"{owner}.from_pretrained: attn_implementation={opts.attn_implementation!r} is not "
                             f"supported; use one of {ATTENTION_IMPLEMENTATIONS} (both run perceiver_core's fused "
                             "attention)")
    opts.config_overrides = kwargs
    return opts


def _parse_dtype(owner: str, value: Any) -> torch.dtype | str:
    if value is None or value == "auto":
        return "auto"
    try:
        return as_dtype(value)
    except ValueError as err:
        raise ValueError(f"{owner}.from_pretrained: dtype={value!r}: {err}") from err


def parse_device_map(owner: str, value: Any) -> torch.device | None:
    """One device for the whole model: ``"cpu"``, ``"cuda:0"``, ``0``, a ``torch.device`` or ``{"": device}``.

    Placing parts of the model on different devices (``"auto"``, several keys) is accelerate's job, not ours.
    """
    if value is None:
        return None
    if isinstance(value, dict):
        if set(value) != {""}:
            raise ValueError(f"{owner}.from_pretrained: device_map={value!r} places modules on several devices; "
                             "only one device for the whole model is supported, e.g. {'': 'cuda:0'}")
        value = value[""]
    if isinstance(value, str) and value in _PLACEMENT_STRATEGIES:
        raise ValueError(f"{owner}.from_pretrained: device_map={value!r} needs accelerate's model placement, "
                         "which perceiver_core does not do; pass one device (device_map='cpu' or 'cuda:0')")
    try:
        return torch.device(value) if not isinstance(value, int) else torch.device("cuda", value)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{owner}.from_pretrained: device_map={value!r} is not a device: {err}") from err
