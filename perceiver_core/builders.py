"""Builders that assemble each head's preprocessor, decoder and postprocessor from a ``PerceiverConfig``.

The head classes in ``heads.py`` are thin faces over these functions. Widths follow transformers' Perceiver
(see the README's component table); every constant below is a transformers hard-coded value.
"""

from __future__ import annotations

from torch import nn

from .config import PerceiverConfig
from .decoders import (
    ClassificationDecoder,
    CrossAttentionDecoder,
    FourierQueries,
    MultimodalDecoder,
    OpticalFlowDecoder,
    QueryDecoder,
    TrainableQueries,
)
from .position_encoding import FourierPositionEncoding, TrainablePositionEncoding
from .postprocessors import (
    AudioPostprocessor,
    ClassificationPostprocessor,
    MultimodalPostprocessor,
    ProjectionPostprocessor,
)
from .preprocessors import (
    AudioPreprocessor,
    Conv1x1ImagePreprocessor,
    ConvStemImagePreprocessor,
    MultimodalPreprocessor,
    OneHotPreprocessor,
    PatchPreprocessor,
    PixelImagePreprocessor,
    PositionAttacher,
    TextPreprocessor,
)


def _cross_decoder(config: PerceiverConfig, query_channels: int, output_channels: int | None, *,
                   qk_channels: int | None = None, v_channels: int | None = None, num_heads: int = 1,
                   query_residual: bool = False) -> CrossAttentionDecoder:
    return CrossAttentionDecoder(
        query_channels=query_channels, latent_channels=config.d_latents, output_channels=output_channels,
        qk_channels=qk_channels, v_channels=v_channels, num_heads=num_heads, query_residual=query_residual,
        shape_for_attention=config.cross_attention_shape_for_attention, activation=config.hidden_act,
        dropout=config.attention_probs_dropout_prob)


# ------------------------------------------------------------------ text
def text_preprocessor(config: PerceiverConfig) -> TextPreprocessor:
    return TextPreprocessor(vocab_size=config.vocab_size, d_model=config.d_model,
                            max_positions=config.max_position_embeddings)


def masked_lm_decoder(config: PerceiverConfig) -> QueryDecoder:
    """One learned query per text position (max_position_embeddings x d_model), 8 heads, qk 256, no residual."""
    queries = TrainableQueries(num_queries=config.max_position_embeddings, channels=config.d_model)
    return QueryDecoder(queries=queries, decoder=_cross_decoder(config, config.d_model, None, qk_channels=8 * 32,
                                                                v_channels=config.d_model, num_heads=8))


def classification_decoder(config: PerceiverConfig) -> ClassificationDecoder:
    """One learned query (1 x d_latents) with query residual -> (B, num_labels)."""
    queries = TrainableQueries(num_queries=1, channels=config.d_latents)
    return ClassificationDecoder(queries=queries, decoder=_cross_decoder(config, config.d_latents, config.num_labels,
                                                                         query_residual=True))


# ------------------------------------------------------------------ images
def learned_image_preprocessor(config: PerceiverConfig) -> Conv1x1ImagePreprocessor:
    """1x1 conv to 256 channels, concat a learned 256-channel position table projected by a Linear(256, 256)."""
    table = TrainablePositionEncoding(config.image_size ** 2, 256)
    positions = PositionAttacher(in_channels=256, position_encoding=table, projection_channels=256)
    return Conv1x1ImagePreprocessor(in_channels=3, out_channels=256, positions=positions)


def fourier_image_preprocessor(config: PerceiverConfig) -> PixelImagePreprocessor:
    """Raw pixels (3 channels) concat 2-D Fourier features (64 bands, max resolution 224): 261 channels."""
    positions = PositionAttacher(in_channels=3, position_encoding=FourierPositionEncoding(64, (224, 224)))
    return PixelImagePreprocessor(positions=positions)


def conv_image_preprocessor(config: PerceiverConfig) -> ConvStemImagePreprocessor:
    """Conv stem to 64 channels at 1/4 resolution concat Fourier features (64 bands, 56 x 56): 322 channels."""
    positions = PositionAttacher(in_channels=64, position_encoding=FourierPositionEncoding(64, (56, 56)))
    return ConvStemImagePreprocessor(in_channels=3, out_channels=64, positions=positions)


# ------------------------------------------------------------------ optical flow
def flow_preprocessor(config: PerceiverConfig) -> PatchPreprocessor:
    """Two frames of 3x3x3 patches (B, 2, 27, H, W) -> (B, H W, 64 + 258) with a Linear(54, 64)."""
    positions = PositionAttacher(in_channels=64, position_encoding=FourierPositionEncoding(64, config.train_size))
    return PatchPreprocessor(positions=positions, spatial=1, temporal=2, projection=(54, 64))


def flow_decoder(config: PerceiverConfig, query_channels: int) -> OpticalFlowDecoder:
    return OpticalFlowDecoder(decoder=_cross_decoder(config, query_channels, 2), rescale_factor=100.0)


# ------------------------------------------------------------------ multimodal autoencoding
def _audio_length(config: PerceiverConfig) -> int:
    return config.num_frames * config.audio_samples_per_frame


def multimodal_preprocessor(config: PerceiverConfig) -> MultimodalPreprocessor:
    n_audio = _audio_length(config)
    audio_positions = PositionAttacher(in_channels=config.samples_per_patch,
                                       position_encoding=FourierPositionEncoding(192, (n_audio,)))
    audio = AudioPreprocessor(samples_per_patch=config.samples_per_patch, positions=audio_positions)
    video_res = (config.num_frames, config.image_size, config.image_size)
    image_positions = PositionAttacher(in_channels=4 * 4 * 3, position_encoding=FourierPositionEncoding(32, video_res))
    image = PatchPreprocessor(positions=image_positions, spatial=4)
    label = OneHotPreprocessor(num_labels=config.num_labels)
    return MultimodalPreprocessor(modalities={"audio": audio, "image": image, "label": label},
                                  mask_probabilities={"image": 0.0, "audio": 0.0, "label": 1.0},
                                  min_padding_size=4)


def multimodal_decoder(config: PerceiverConfig) -> MultimodalDecoder:
    n_audio = _audio_length(config)
    video_res = (config.num_frames, config.image_size, config.image_size)
    queries = {
        "audio": FourierQueries(index_dims=(n_audio // config.samples_per_patch,),
                                encoding=FourierPositionEncoding(192, (n_audio,))),
        "image": FourierQueries(index_dims=tuple(config.output_shape[1:4]),
                                encoding=FourierPositionEncoding(32, video_res)),
        "label": TrainableQueries(num_queries=1, channels=config.label_trainable_num_channels),
    }
    common = max(q.num_channels for q in queries.values()) + 2
    return MultimodalDecoder(queries=queries, decoder=_cross_decoder(config, common, config.output_num_channels))


def multimodal_postprocessor(config: PerceiverConfig) -> MultimodalPostprocessor:
    c = config.output_num_channels
    return MultimodalPostprocessor(modalities={
        "audio": AudioPostprocessor(in_channels=c, out_channels=config.samples_per_patch),
        "image": ProjectionPostprocessor(in_channels=c, out_channels=3),
        "label": ClassificationPostprocessor(in_channels=c, out_channels=config.num_labels),
    })


def image_preprocessor_for(kind: str, config: PerceiverConfig) -> nn.Module:
    return {"learned": learned_image_preprocessor, "fourier": fourier_image_preprocessor,
            "conv": conv_image_preprocessor}[kind](config)
