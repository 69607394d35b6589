"""The one place that knows transformers' Perceiver key names.

``to_transformers_key(key, architecture)`` maps one of our state-dict keys to transformers' key through an
explicit, ordered list of rename rules; ``from_transformers(state, model_shapes, architecture)`` inverts that
map over our model's keys and checks shapes, naming every missing, unexpected and wrongly shaped key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

# Inside every attention block (encoder and decoders).
_BLOCK_RULES = [
    (r"\.attn\.query_norm\.", ".attention.self.layernorm1."),
    (r"\.attn\.kv_norm\.", ".attention.self.layernorm2."),
    (r"\.attn\.to_q\.", ".attention.self.query."),
    (r"\.attn\.to_k\.", ".attention.self.key."),
    (r"\.attn\.to_v\.", ".attention.self.value."),
    (r"\.attn\.to_out\.", ".attention.output.dense."),
    (r"\.mlp_norm\.", ".layernorm."),
    (r"\.mlp\.fc1\.", ".mlp.dense1."),
    (r"\.mlp\.fc2\.", ".mlp.dense2."),
]

_ENCODER_RULES = [
    (r"^perceiver\.encoder\.latents$", "perceiver.embeddings.latents"),
    (r"^perceiver\.encoder\.cross_attn\.", "perceiver.encoder.cross_attention."),
    (r"^perceiver\.encoder\.self_attn\.(\d+)\.", r"perceiver.encoder.self_attends.\1."),
]

_PREPROCESSOR_RULES = [
    (r"^perceiver\.input_preprocessor\.token_embedding\.", "perceiver.input_preprocessor.embeddings."),
    (r"^perceiver\.input_preprocessor\.position_embedding\.", "perceiver.input_preprocessor.position_embeddings."),
    (r"^perceiver\.input_preprocessor\.conv\.", "perceiver.input_preprocessor.convnet_1x1."),
    (r"^perceiver\.input_preprocessor\.positions\.position_encoding\.table$",
     "perceiver.input_preprocessor.position_embeddings.position_embeddings"),
    (r"^perceiver\.input_preprocessor\.positions\.position_projection\.",
     "perceiver.input_preprocessor.positions_projection."),
    (r"^perceiver\.input_preprocessor\.stem\.conv\.", "perceiver.input_preprocessor.convnet.conv."),
    (r"^perceiver\.input_preprocessor\.stem\.norm\.", "perceiver.input_preprocessor.convnet.batchnorm."),
    (r"^perceiver\.input_preprocessor\.patch_projection\.", "perceiver.input_preprocessor.conv_after_patches."),
    (r"^perceiver\.input_preprocessor\.paddings\.(\w+)\.padding$", r"perceiver.input_preprocessor.padding.\1"),
    (r"^perceiver\.input_preprocessor\.paddings\.(\w+)\.mask$", r"perceiver.input_preprocessor.mask.\1"),
]

_POSTPROCESSOR_RULES = [
    (r"^perceiver\.output_postprocessor\.modalities\.(\w+)\.proj\.",
     r"perceiver.output_postprocessor.modalities.\1.classifier."),
]

# transformers' MLM decoder is a bare BasicDecoder; the others wrap one as ``decoder.decoder``.
_DECODER_RULES = {
    "bare": [
        (r"^perceiver\.decoder\.queries\.table$", "perceiver.decoder.output_position_encodings.position_embeddings"),
        (r"^perceiver\.decoder\.decoder\.cross_attn\.", "perceiver.decoder.decoding_cross_attention."),
        (r"^perceiver\.decoder\.decoder\.output_proj\.", "perceiver.decoder.final_layer."),
    ],
    "wrapped": [
        (r"^perceiver\.decoder\.queries\.table$",
         "perceiver.decoder.decoder.output_position_encodings.position_embeddings"),
        (r"^perceiver\.decoder\.decoder\.cross_attn\.", "perceiver.decoder.decoder.decoding_cross_attention."),
        (r"^perceiver\.decoder\.decoder\.output_proj\.", "perceiver.decoder.decoder.final_layer."),
    ],
    "multimodal": [
        (r"^perceiver\.decoder\.queries\.(\w+)\.table$",
         r"perceiver.decoder.modalities.\1.decoder.output_position_encodings.position_embeddings"),
        (r"^perceiver\.decoder\.padding\.(\w+)\.padding$", r"perceiver.decoder.padding.\1"),
        (r"^perceiver\.decoder\.decoder\.cross_attn\.", "perceiver.decoder.decoder.decoding_cross_attention."),
        (r"^perceiver\.decoder\.decoder\.output_proj\.", "perceiver.decoder.decoder.final_layer."),
    ],
}

_DECODER_STYLE = {
    "PerceiverModel": "bare",
    "PerceiverForMaskedLM": "bare",
    "PerceiverForMultimodalAutoencoding": "multimodal",
}


def _rules(architecture: str) -> list[tuple[re.Pattern, str]]:
    style = _DECODER_STYLE.get(architecture, "wrapped")
    rules = _ENCODER_RULES + _PREPROCESSOR_RULES + _POSTPROCESSOR_RULES + _DECODER_RULES[style]
    return [(re.compile(p), r) for p, r in rules]


def to_transformers_key(key: str, architecture: str) -> str:
    """Our key -> transformers' key for a model of class ``architecture``."""
    bare = architecture == "PerceiverModel"
    name = "perceiver." + key if bare else key
    for pattern, repl in _BLOCK_RULES:
        name = re.sub(pattern, repl, name)
    for pattern, repl in _rules(architecture):
        name, n = pattern.subn(repl, name)
        if n:
            break
    return name[len("perceiver."):] if bare else name


@dataclass
class ConversionReport:
    missing: list[str] = field(default_factory=list)  # our keys (transformers names) absent from the checkpoint
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys that map to nothing of ours
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, checkpoint, expected)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self) -> str:
        lines = []
        if self.missing:
            lines.append(f"missing keys ({len(self.missing)}): " + ", ".join(self.missing))
        if self.unexpected:
            lines.append(f"unexpected keys ({len(self.unexpected)}): " + ", ".join(self.unexpected))
        if self.mismatched:
            lines.append(f"wrongly shaped keys ({len(self.mismatched)}): " + ", ".join(
                f"{k} (checkpoint {list(got)}, model {list(want)})" for k, got, want in self.mismatched))
        return "\n".join(lines) or "checkpoint matches the model"


def match_shapes(checkpoint_shapes: Mapping[str, Sequence[int]], model_shapes: Mapping[str, Sequence[int]],
                 architecture: str) -> tuple[dict[str, str], ConversionReport]:
    """Compare shapes only (a safetensors header suffices); returns transformers key -> our key for the fits."""
    ours_by_hf = {to_transformers_key(k, architecture): k for k in model_shapes}
    fits, report = {}, ConversionReport()
    for hf_key, shape in checkpoint_shapes.items():
        ours = ours_by_hf.get(hf_key)
        if ours is None:
            report.unexpected.append(hf_key)
            continue
        if tuple(shape) != tuple(model_shapes[ours]):
            report.mismatched.append((hf_key, tuple(shape), tuple(model_shapes[ours])))
            continue
        fits[hf_key] = ours
    report.missing = [hf for hf in ours_by_hf if hf not in checkpoint_shapes]
    return fits, report


def from_transformers(state: dict[str, torch.Tensor], model_shapes: dict[str, torch.Size],
                      architecture: str) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """transformers-named ``state`` -> our names for a model with ``model_shapes`` (our key -> shape)."""
    fits, report = match_shapes({k: v.shape for k, v in state.items()}, model_shapes, architecture)
    return {ours: state[hf] for hf, ours in fits.items()}, report


def to_transformers(state: dict[str, torch.Tensor], architecture: str) -> dict[str, torch.Tensor]:
    return {to_transformers_key(k, architecture): v for k, v in state.items()}
