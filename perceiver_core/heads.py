"""The seven task heads under transformers' class names, assembled from the builders.

Each head wraps ``self.perceiver = PerceiverModel(...)`` (so checkpoint keys start with ``perceiver.``) and
takes transformers' forward keywords; ``None`` flags fall back to the config's (``output_attentions``,
``output_hidden_states``, ``return_dict``) and ``return_dict=False`` gives transformers' plain tuple. Heads also
return the latents as ``last_hidden_state``, an attribute outside that tuple (see ``outputs.py``).
"""

from __future__ import annotations

from typing import Any

import torch

from . import builders
from .config import PerceiverConfig
from .losses import (
    DEFAULT_AUTOENCODING_WEIGHTS,
    autoencoding_loss,
    classification_loss,
    endpoint_error,
    gather_audio_targets,
    gather_video_targets,
    infer_problem_type,
    masked_lm_loss,
)
from .model import PerceiverModel, PerceiverPreTrainedModel
from .outputs import PerceiverClassifierOutput, PerceiverMaskedLMOutput, PerceiverModelOutput
from .postprocessors import EmbeddingDecoder


def _one_of(inputs: Any, alias: Any, alias_name: str) -> Any:
    if inputs is not None and alias is not None:
        raise ValueError(f"pass either inputs or {alias_name}, not both")
    if inputs is None and alias is None:
        raise ValueError(f"one of inputs or {alias_name} is required")
    return inputs if inputs is not None else alias


class PerceiverForMaskedLM(PerceiverPreTrainedModel):
    """Byte-level masked language model: logits (B, max_position_embeddings, vocab_size), tied embeddings.

    Unlike transformers, ``subsampled_output_points`` (positions to decode) is honoured: only those rows of
    the output are computed, e.g. the masked positions of a fill-mask query.
    """

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__()
        self.config = config
        self.perceiver = PerceiverModel(config, decoder=builders.masked_lm_decoder(config),
                                        input_preprocessor=builders.text_preprocessor(config))
        self.embedding_decoder = EmbeddingDecoder(vocab_size=config.vocab_size)
        self.init_weights()

    def forward(self, inputs: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                labels: torch.Tensor | None = None, return_dict: bool | None = None,
                input_ids: torch.Tensor | None = None,
                subsampled_output_points: torch.Tensor | None = None) -> PerceiverMaskedLMOutput:
        inputs = _one_of(inputs, input_ids, "input_ids")
        output_attentions, output_hidden_states, return_dict = self._flags(output_attentions, output_hidden_states,
                                                                           return_dict)
        out, _ = self.perceiver.run(inputs, attention_mask, subsampled_output_points, output_attentions,
                                    output_hidden_states)
        weight = self.perceiver.input_preprocessor.token_embedding.weight
        logits = self.embedding_decoder(out.logits, weight)
        loss = masked_lm_loss(logits, labels) if labels is not None else None
        result = PerceiverMaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                         attentions=out.attentions, cross_attentions=out.cross_attentions,
                                         last_hidden_state=out.last_hidden_state)
        return result if return_dict else result.to_tuple()


class _ClassifierHead(PerceiverPreTrainedModel):
    """A preprocessor + the shared one-query classification decoder."""

    def __init__(self, config: PerceiverConfig, preprocessor: torch.nn.Module) -> None:
        super().__init__()
        self.config = config
        self.perceiver = PerceiverModel(config, decoder=builders.classification_decoder(config),
                                        input_preprocessor=preprocessor)
        self.init_weights()

    def _classify(self, inputs, attention_mask, labels, output_attentions, output_hidden_states, return_dict,
                  interpolate_pos_encoding=False) -> PerceiverClassifierOutput | tuple:
        output_attentions, output_hidden_states, return_dict = self._flags(output_attentions, output_hidden_states,
                                                                           return_dict)
        out, _ = self.perceiver.run(inputs, attention_mask, None, output_attentions, output_hidden_states,
                                    interpolate_pos_encoding)
        loss = None
        if labels is not None:
            if self.config.problem_type is None:
                self.config.problem_type = infer_problem_type(self.config.num_labels, labels)
            loss = classification_loss(out.logits, labels, self.config.problem_type)
        result = PerceiverClassifierOutput(loss=loss, logits=out.logits, hidden_states=out.hidden_states,
                                           attentions=out.attentions, cross_attentions=out.cross_attentions,
                                           last_hidden_state=out.last_hidden_state)
        return result if return_dict else result.to_tuple()


class PerceiverForSequenceClassification(_ClassifierHead):
    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__(config, builders.text_preprocessor(config))

    def forward(self, inputs: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                labels: torch.Tensor | None = None, return_dict: bool | None = None,
                input_ids: torch.Tensor | None = None) -> PerceiverClassifierOutput:
        return self._classify(_one_of(inputs, input_ids, "input_ids"), attention_mask, labels,
                              output_attentions, output_hidden_states, return_dict)


class _ImageClassifierHead(_ClassifierHead):
    kind = ""

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__(config, builders.image_preprocessor_for(self.kind, config))

    def forward(self, inputs: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                labels: torch.Tensor | None = None, interpolate_pos_encoding: bool = False,
                return_dict: bool | None = None,
                pixel_values: torch.Tensor | None = None) -> PerceiverClassifierOutput:
        return self._classify(_one_of(inputs, pixel_values, "pixel_values"), attention_mask, labels,
                              output_attentions, output_hidden_states, return_dict, interpolate_pos_encoding)


class PerceiverForImageClassificationLearned(_ImageClassifierHead):
    """1x1 conv + learned positions (image_size² table; ``interpolate_pos_encoding`` for other sizes)."""

    kind = "learned"


class PerceiverForImageClassificationFourier(_ImageClassifierHead):
    """Raw pixels + 2-D Fourier positions; any image size works (positions follow the input grid)."""

    kind = "fourier"


class PerceiverForImageClassificationConvProcessing(_ImageClassifierHead):
    """Conv stem (4x downsampling, 224 -> 55x55) + 2-D Fourier positions."""

    kind = "conv"


class PerceiverForOpticalFlow(PerceiverPreTrainedModel):
    """Inputs (B, 2, 27, H, W) (two frames of 3x3 patches, see ``flow_processing``) -> flow (B, H, W, 2) px.

    Unlike transformers, any H, W works (positions follow the input grid) and ``labels`` (B, H, W, 2) give the
    endpoint-error loss, optionally over ``valid_mask`` (B, H, W).
    """

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__()
        self.config = config
        preprocessor = builders.flow_preprocessor(config)
        self.perceiver = PerceiverModel(config, decoder=builders.flow_decoder(config, preprocessor.num_channels),
                                        input_preprocessor=preprocessor)
        self.init_weights()

    def forward(self, inputs: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                labels: torch.Tensor | None = None, return_dict: bool | None = None,
                valid_mask: torch.Tensor | None = None,
                decode_chunk_size: int | None = None) -> PerceiverClassifierOutput:
        if inputs is None:
            raise ValueError("inputs (B, 2, 27, H, W) are required")
        output_attentions, output_hidden_states, return_dict = self._flags(output_attentions, output_hidden_states,
                                                                           return_dict)
        out, pre = self.perceiver.run(inputs, attention_mask, None, output_attentions, output_hidden_states,
                                      decode_chunk_size=decode_chunk_size)
        h, w = pre.index_dims
        flow = out.logits.reshape(out.logits.shape[0], h, w, out.logits.shape[-1])
        loss = endpoint_error(flow, labels, valid_mask) if labels is not None else None
        result = PerceiverClassifierOutput(loss=loss, logits=flow, hidden_states=out.hidden_states,
                                           attentions=out.attentions, cross_attentions=out.cross_attentions,
                                           last_hidden_state=out.last_hidden_state)
        return result if return_dict else result.to_tuple()


class PerceiverForMultimodalAutoencoding(PerceiverPreTrainedModel):
    """Video + audio + label autoencoding (Kinetics). Inputs: dict image (B, T, 3, H, W), audio (B, S, 1),
    label (B, num_labels). Logits: dict image (B, n, 3), audio (B, n * samples_per_patch), label (B, labels).

    Unlike transformers, decoding without ``subsampled_output_points`` decodes every output point, and
    ``decode_chunk_size`` bounds memory by decoding chunks against latents computed once. ``labels`` (dict with
    any of image (B, T, 3, H, W) target video, audio (B, S[, 1]), label (B,) ids) give the weighted loss.
    """

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__()
        self.config = config
        self.perceiver = PerceiverModel(config, decoder=builders.multimodal_decoder(config),
                                        input_preprocessor=builders.multimodal_preprocessor(config),
                                        output_postprocessor=builders.multimodal_postprocessor(config))
        self.loss_weights = dict(DEFAULT_AUTOENCODING_WEIGHTS)
        self.init_weights()

    def forward(self, inputs: dict[str, torch.Tensor] | None = None, attention_mask: torch.Tensor | None = None,
                subsampled_output_points: dict[str, torch.Tensor | None] | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                labels: dict[str, torch.Tensor] | None = None, return_dict: bool | None = None,
                loss_weights: dict[str, float] | None = None,
                decode_chunk_size: int | None = None) -> PerceiverClassifierOutput:
        if inputs is None:
            raise ValueError("inputs {'image', 'audio', 'label'} are required")
        output_attentions, output_hidden_states, return_dict = self._flags(output_attentions, output_hidden_states,
                                                                           return_dict)
        out, _ = self.perceiver.run(inputs, attention_mask, subsampled_output_points, output_attentions,
                                    output_hidden_states, decode_chunk_size=decode_chunk_size)
        loss = losses = None
        if labels is not None:
            result = autoencoding_loss(out.logits, self._targets(labels, subsampled_output_points),
                                       {**self.loss_weights, **(loss_weights or {})})
            loss, losses = result.total, result.per_modality
        record = PerceiverClassifierOutput(loss=loss, logits=out.logits, hidden_states=out.hidden_states,
                                           attentions=out.attentions, cross_attentions=out.cross_attentions,
                                           last_hidden_state=out.last_hidden_state, losses=losses)
        return record if return_dict else record.to_tuple()

    def _targets(self, labels: dict[str, torch.Tensor], points: dict | None) -> dict[str, torch.Tensor]:
        points = points or {}
        targets = {}
        if labels.get("image") is not None:
            targets["image"] = gather_video_targets(labels["image"], points.get("image"))
        if labels.get("audio") is not None:
            targets["audio"] = gather_audio_targets(labels["audio"], points.get("audio"),
                                                    self.config.samples_per_patch)
        if labels.get("label") is not None:
            targets["label"] = labels["label"]
        return targets

    @torch.no_grad()
    def autoencode(self, inputs: dict[str, torch.Tensor], chunk_size: int | None = 16384) -> dict[str, torch.Tensor]:
        """Reconstruct every output point, encoding once: image (B, T, H, W, 3), audio (B, S), label logits."""
        out = self.forward(inputs, decode_chunk_size=chunk_size, return_dict=True).logits
        _, t, h, w = self.config.output_shape
        b = out["image"].shape[0]
        return {"image": out["image"].reshape(b, t, h, w, 3), "audio": out["audio"], "label": out["label"]}


HEADS: dict[str, type[PerceiverPreTrainedModel]] = {cls.__name__: cls for cls in (
    PerceiverModel, PerceiverForMaskedLM, PerceiverForSequenceClassification,
    PerceiverForImageClassificationLearned, PerceiverForImageClassificationFourier,
    PerceiverForImageClassificationConvProcessing, PerceiverForOpticalFlow, PerceiverForMultimodalAutoencoding)}

__all__ = ["HEADS", "PerceiverModelOutput", *HEADS]
