"""PerceiverModel: preprocessor -> latent encoder -> decoder -> postprocessor.

The generic model never names a modality: the preprocessor turns task input into (B, M, C), the decoder turns
latents into (B, O, F) and the postprocessor into task output. ``encode`` and ``decode`` are public so that a
caller can encode once and decode many chunks of output queries against the same latents. Any decoder with
``decode(latents, pre, points, chunk_size, *, need_weights, postprocessor)`` works (see ``decoders``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import PerceiverConfig
from .encoder import EncoderOutput, LatentEncoder
from .outputs import PerceiverModelOutput
from .preprocessors import Preprocessed


class PerceiverPreTrainedModel(nn.Module):
    """Weight init (transformers' scheme), transformers-format ``from_pretrained`` / ``save_pretrained`` and the
    ``PreTrainedModel`` methods users call (``num_parameters``, ``get_input_embeddings``, ...)."""

    config: PerceiverConfig
    config_class = PerceiverConfig
    base_model_prefix = "perceiver"
    main_input_name = "inputs"
    supports_gradient_checkpointing = True

    def init_weights(self) -> None:
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=std)
            elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for name, param in self.named_parameters():
            # latents, position tables, learned queries and modality padding/mask vectors
            if name.endswith(("latents", "table", "padding", "mask")):
                nn.init.normal_(param, std=std)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any):
        """Load a transformers-format checkpoint: a folder (config.json + model.safetensors/pytorch_model.bin) or
        a hub id (huggingface_hub's cache; ``HF_HUB_OFFLINE=1`` / ``local_files_only`` honoured).

        transformers' keywords: ``revision``, ``cache_dir``, ``local_files_only``, ``token``, ``force_download``,
        ``subfolder``, ``config``, ``output_loading_info`` (returns ``(model, info)``), ``dtype`` /
        ``torch_dtype`` (default ``"auto"``: config.json's dtype, else the weights'), ``device_map`` (one device),
        ``ignore_mismatched_sizes`` (wrongly shaped weights, e.g. a new ``num_labels``, start afresh and are
        reported), ``attn_implementation`` (``"eager"``/``"sdpa"``), ``use_safetensors``; any other keyword
        must be a config attribute (it overrides config.json).

        ``strict`` (ours; default: True when the checkpoint was saved from this class) fails on missing or
        unexpected keys; wrongly shaped keys fail unless ``ignore_mismatched_sizes``. Non-strict loading (e.g.
        a sequence classifier from an MLM checkpoint) keeps fresh weights for the missing keys and reports them
        in ``model.loading_info``.
        """
        from . import load_options
        from .checkpoint import load_pretrained

        options = load_options.parse(cls.__name__, kwargs)
        return load_pretrained(cls, pretrained_model_name_or_path, options)

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True) -> Path:
        from .checkpoint import save_pretrained

        return save_pretrained(self, Path(save_directory), safe_serialization=safe_serialization)

    # -------------------------------------------------------------- transformers' PreTrainedModel methods
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict[str, Any] | None = None) -> None:
        """Recompute encoder layers in the backward pass. ``gradient_checkpointing_kwargs`` as transformers;
        only ``use_reentrant`` is known, and the non-reentrant variant always runs (same gradients)."""
        unknown = set(gradient_checkpointing_kwargs or {}) - {"use_reentrant"}
        if unknown:
            raise ValueError(f"gradient_checkpointing_kwargs: unsupported keys {sorted(unknown)}")
        self._set_gradient_checkpointing(True)

    def gradient_checkpointing_disable(self) -> None:
        self._set_gradient_checkpointing(False)

    def _set_gradient_checkpointing(self, enabled: bool) -> None:
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = enabled

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in self.modules())

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def base_model(self) -> nn.Module:
        return getattr(self, self.base_model_prefix, self)

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameter count, as transformers: shared tensors once; ``exclude_embeddings`` leaves out the weights
        of ``nn.Embedding`` modules."""
        skip = ({f"{name}.weight" for name, m in self.named_modules() if isinstance(m, nn.Embedding)}
                if exclude_embeddings else set())
        return sum(p.numel() for name, p in self.named_parameters()
                   if name not in skip and (p.requires_grad or not only_trainable))

    def get_input_embeddings(self) -> nn.Parameter:
        """The learned latents (N, D), as transformers' Perceiver (the inputs go through a preprocessor)."""
        return self.base_model.encoder.latents

    def set_input_embeddings(self, value: nn.Parameter) -> None:
        self.base_model.encoder.latents = value if isinstance(value, nn.Parameter) else nn.Parameter(value)

    def get_output_embeddings(self) -> None:
        return None  # as transformers: no head here has a separate output embedding to tie or resize

    def _flags(self, output_attentions: bool | None, output_hidden_states: bool | None,
               return_dict: bool | None) -> tuple[bool, bool, bool]:
        """Call keywords, or the config's values where a keyword is None (transformers' rule)."""
        config = self.config
        return (bool(config.output_attentions if output_attentions is None else output_attentions),
                bool(config.output_hidden_states if output_hidden_states is None else output_hidden_states),
                bool(config.return_dict if return_dict is None else return_dict))


class PerceiverModel(PerceiverPreTrainedModel):
    """Without a preprocessor the inputs must already be (B, M, d_model)."""

    def __init__(self, config: PerceiverConfig, decoder: nn.Module | None = None,
                 input_preprocessor: nn.Module | None = None,
                 output_postprocessor: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.input_preprocessor = input_preprocessor
        self.output_postprocessor = output_postprocessor
        input_channels = input_preprocessor.num_channels if input_preprocessor is not None else config.d_model
        self.encoder = LatentEncoder(
            num_latents=config.num_latents, latent_channels=config.d_latents, input_channels=input_channels,
            num_blocks=config.num_blocks, num_self_attends_per_block=config.num_self_attends_per_block,
            num_cross_attention_heads=config.num_cross_attention_heads,
            num_self_attention_heads=config.num_self_attention_heads, qk_channels=config.qk_channels,
            v_channels=config.v_channels, cross_attention_widening_factor=config.cross_attention_widening_factor,
            self_attention_widening_factor=config.self_attention_widening_factor,
            use_query_residual=config.use_query_residual,
            shape_for_attention=config.cross_attention_shape_for_attention, activation=config.hidden_act,
            dropout=config.attention_probs_dropout_prob)
        self.decoder = decoder

    # -------------------------------------------------------------- stages
    def preprocess(self, inputs: Any, interpolate_pos_encoding: bool = False) -> Preprocessed:
        if self.input_preprocessor is not None:
            return self.input_preprocessor(inputs, interpolate_pos_encoding)
        if inputs.shape[-1] != self.config.d_model:
            raise ValueError(f"inputs have {inputs.shape[-1]} channels; without a preprocessor they must have "
                             f"d_model={self.config.d_model}")
        return Preprocessed(inputs, None)

    def encode(self, pre: Preprocessed, attention_mask: torch.Tensor | None = None,
               output_hidden_states: bool = False, output_attentions: bool = False) -> EncoderOutput:
        mask = attention_mask
        if mask is not None:
            if mask.ndim != 2 or tuple(mask.shape) != tuple(pre.inputs.shape[:2]):
                raise ValueError(f"attention_mask must be (B, M) = {tuple(pre.inputs.shape[:2])}, "
                                 f"got {tuple(mask.shape)}")
            mask = mask.to(device=pre.inputs.device)
        return self.encoder(pre.inputs, mask, output_hidden_states, output_attentions)

    def decode(self, latents: torch.Tensor, pre: Preprocessed, subsampled_output_points: Any = None,
               chunk_size: int | None = None,
               need_weights: bool = False) -> tuple[Any, torch.Tensor | None]:
        """Decoder (+ postprocessor) output for the given latents; queries decoded ``chunk_size`` at a time.

        Returns (output, decoder attention probabilities or None). Chunked output equals unchunked output.
        """
        if self.decoder is None:
            raise ValueError("this model has no decoder")
        return self.decoder.decode(latents, pre, subsampled_output_points, chunk_size, need_weights=need_weights,
                                   postprocessor=self.output_postprocessor)

    # -------------------------------------------------------------- forward
    def run(self, inputs: Any, attention_mask: torch.Tensor | None = None, subsampled_output_points: Any = None,
            output_attentions: bool = False, output_hidden_states: bool = False,
            interpolate_pos_encoding: bool = False,
            decode_chunk_size: int | None = None) -> tuple[PerceiverModelOutput, Preprocessed]:
        """Forward pass that also returns the preprocessed inputs (heads need their index grid)."""
        pre = self.preprocess(inputs, interpolate_pos_encoding)
        enc = self.encode(pre, attention_mask, output_hidden_states, output_attentions)
        logits, dec_probs = None, None
        if self.decoder is not None:
            logits, dec_probs = self.decode(enc.latents, pre, subsampled_output_points, decode_chunk_size,
                                            output_attentions)
        cross = enc.cross_attentions
        if output_attentions and dec_probs is not None:
            cross = cross + (dec_probs,)
        out = PerceiverModelOutput(logits=logits, last_hidden_state=enc.latents, hidden_states=enc.hidden_states,
                                   attentions=enc.attentions, cross_attentions=cross)
        return out, pre

    def forward(self, inputs: Any, attention_mask: torch.Tensor | None = None,
                subsampled_output_points: Any = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None, interpolate_pos_encoding: bool = False,
                return_dict: bool | None = None) -> PerceiverModelOutput | tuple:
        output_attentions, output_hidden_states, return_dict = self._flags(output_attentions, output_hidden_states,
                                                                           return_dict)
        out, _ = self.run(inputs, attention_mask, subsampled_output_points, output_attentions,
                          output_hidden_states, interpolate_pos_encoding)
        return out if return_dict else out.to_tuple()

