"""Video stages: PyAV decode into fixed-shape clips (CPU tasks), then autoencode / classify (model actors).

Data flow::

    manifest row (id, path, label_index)
      -> decode_videos (CPU task, generator)   one row per clip: frames (T, H, W, 3) uint8,
                                               audio (T * S,) float32, or one error row per file
      -> VideoWorker (actor pool)              PSNR per modality, top-k labels, pictures, latents
      -> part file                              schemas.VIDEO (+ latents)

Clip rows are ``<input_id>:<clip_index>``; a file that yields no clip is one row with ``id = input_id``,
``clip_index`` null and ``error`` set. A file whose decoding fails part-way keeps the clips before the
failure; the last of them carries the decoder's message in ``warning``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pipelines.batch import schemas
from pipelines.batch.model_workers import ModelWorker, save_picture, top_k
from pipelines.metrics import psnr
from pipelines.readers.video_decode import Clip, ClipSpec, VideoDecodeError, iter_clips
from pipelines.stages import pictures

VIDEO_FPS = 25.0  # the multimodal autoencoder's frame rate; audio rate = fps * audio_samples_per_frame


def clip_spec_for(config: Any, *, max_clips: int | None, video_stream: int = 0, audio_stream: int | None = 0,
                  decode_threads: int = 1) -> ClipSpec:
    """The clip shape a multimodal checkpoint expects (num_frames x image_size², S samples per frame)."""
    _, t, h, w = config.output_shape
    if (t, h) != (config.num_frames, config.image_size):
        raise ValueError(f"config output_shape {config.output_shape} disagrees with num_frames={config.num_frames}"
                         f" / image_size={config.image_size}")
    return ClipSpec(num_frames=t, height=h, width=w, audio_samples_per_frame=config.audio_samples_per_frame,
                    target_fps=VIDEO_FPS, max_clips=max_clips, video_stream=video_stream,
                    audio_stream=audio_stream, decode_threads=decode_threads)


def clip_schema(spec: ClipSpec) -> pa.Schema:
    """Columns ``decode_videos`` emits: the output's per-clip columns, the clip tensors, bookkeeping."""
    keep = ["id", "input_id", "source", "clip_index", "start_time_s", "num_valid_frames", "partial",
            "has_audio", "label_index", "warning", "error_type", "error"]
    fields = [schemas.VIDEO.field(name) for name in keep]
    fields += [pa.field("frames", pa.fixed_shape_tensor(pa.uint8(), [spec.num_frames, spec.height, spec.width, 3])),
               pa.field("audio", pa.fixed_shape_tensor(pa.float32(), [spec.audio_samples_per_clip]))]
    return pa.schema(fields + list(schemas.BOOKKEEPING))


def _clip_row(schema: pa.Schema, row: dict, clip: Clip, warning: str | None, final: bool) -> pa.Table:
    unit = row["id"]
    return schemas.build_table(schema, {
        "id": [f"{unit}:{clip.clip_index}"], "input_id": [unit], "source": [row["path"]],
        "clip_index": [clip.clip_index], "start_time_s": [clip.start_time_s],
        "num_valid_frames": [clip.num_valid_frames], "partial": [clip.partial], "has_audio": [clip.has_audio],
        "label_index": [row.get("label_index")], "warning": [warning],
        "frames": clip.frames[None], "audio": clip.audio[None],
        schemas.UNIT: [unit], schemas.PART: [clip.clip_index], schemas.FINAL: [final]}, 1)


def decode_videos(batch: pa.Table, spec: ClipSpec) -> Iterator[pa.Table]:
    """Ray ``map_batches`` generator over manifest rows: one table per clip (bounded memory)."""
    schema = clip_schema(spec)
    for row in batch.to_pylist():
        unit, source = row["id"], row["path"]
        try:
            clips = iter_clips(source, spec)
            held = next(clips)
        except VideoDecodeError as e:
            yield schemas.error_rows(schema, [unit], [source], [e.reason], [str(e)], input_id=[unit],
                                     label_index=[row.get("label_index")])
            continue
        except Exception as e:  # noqa: BLE001 - an unexpected decoder failure is still this file's error
            yield schemas.error_rows(schema, [unit], [source], ["decode_error"], [f"{type(e).__name__}: {e}"],
                                     input_id=[unit], label_index=[row.get("label_index")])
            continue
        while True:
            stopped = held.error and f"decoding stopped early: {held.error}"
            warning = "; ".join(w for w in (held.warning, stopped) if w) or None  # gap / clip-limit warnings
            try:
                following = next(clips, None)
            except Exception as e:  # noqa: BLE001 - keep the clips decoded so far, flag the last one
                following, warning = None, f"decoding stopped early: {type(e).__name__}: {e}"
            yield _clip_row(schema, row, held, warning, final=following is None)
            if following is None:
                break
            held = following


class VideoWorker(ModelWorker):
    """Multimodal autoencoder over clips: reconstruction PSNR (video, audio) and top-k label predictions.

    task "autoencode" decodes every output point (encode once, decode in chunks); "classify" decodes only
    the label query; "both" does the full decode and reads the label logits from it.
    """

    schema = schemas.VIDEO

    def setup(self, task: str = "both", k: int = 5, chunk_size: int = 65536, output_dir: str | None = None,
              pictures: bool = False, picture_frames: int = 4, save_latents: bool = False) -> None:
        if task not in ("autoencode", "classify", "both"):
            raise ValueError(f"task must be autoencode, classify or both, got {task!r}")
        self.task, self.k, self.chunk_size = task, k, chunk_size
        self.output_dir, self.pictures, self.picture_frames = output_dir, pictures, picture_frames
        self.save_latents = save_latents
        config = self.model.config
        self.labels = config.labels
        if save_latents:
            self.schema = schemas.with_latents(schemas.VIDEO, (config.num_latents, config.d_latents))

    def dummy_batch(self) -> pa.Table:
        c = self.model.config
        spec = clip_spec_for(c, max_clips=1)
        clip = Clip(0, 0.0, np.zeros((c.num_frames, c.image_size, c.image_size, 3), np.uint8),
                    np.zeros(spec.audio_samples_per_clip, np.float32), has_audio=True)
        return _clip_row(clip_schema(spec), {"id": "warm-up", "path": ""}, clip, None, True)

    def warm_up(self) -> None:
        # Encoder + the label query only: the kernels and allocations all run, but not the full decode, which
        # for the published model costs as much as a real clip (minutes on a CPU).
        saved = self.pictures, self.task, self.save_latents
        self.pictures, self.task, self.save_latents = False, "classify", False
        try:
            super().warm_up()
        finally:
            self.pictures, self.task, self.save_latents = saved

    def predict(self, batch: pa.Table) -> dict[str, Any]:
        frames = batch.column("frames").combine_chunks().to_numpy_ndarray()  # (B, T, H, W, 3) uint8
        audio = batch.column("audio").combine_chunks().to_numpy_ndarray()  # (B, T*S) float32
        b = frames.shape[0]
        video = self.to_device(frames).float().div_(255)  # (B, T, H, W, 3) in [0, 1]
        sound = self.to_device(audio)  # (B, T*S)
        inputs = {"image": video.permute(0, 1, 4, 2, 3),  # (B, T, 3, H, W)
                  "audio": sound.unsqueeze(-1),  # (B, T*S, 1)
                  "label": torch.zeros(b, self.model.config.num_labels, device=self.device)}
        points = None
        if self.task == "classify":
            empty = torch.zeros(0, dtype=torch.long, device=self.device)
            points = {"image": empty, "audio": empty, "label": None}
        with self.autocast():
            out = self.model(inputs, subsampled_output_points=points, decode_chunk_size=self.chunk_size)
        logits = {name: value.float() for name, value in out.logits.items()}
        columns: dict[str, Any] = {}
        if self.task != "autoencode":
            columns.update(top_k(logits["label"], self.k, self.labels))
        if self.task != "classify":
            rec_video = logits["image"].reshape(video.shape).clamp(0, 1)  # (B, T, H, W, 3)
            rec_audio = logits["audio"].reshape(sound.shape).clamp(-1, 1)  # (B, T*S)
            has_audio = batch.column("has_audio").to_pylist()
            columns["psnr_video"] = psnr(rec_video, video, 1.0).float().cpu().numpy()
            audio_psnr = psnr(rec_audio, sound, 2.0).float().cpu().tolist()
            columns["psnr_audio"] = [p if a else None for p, a in zip(audio_psnr, has_audio)]
            if self.pictures:
                columns["picture"] = self._pictures(batch, frames, rec_video)
        if self.save_latents:
            columns["latents"] = out.last_hidden_state.to(torch.float16).cpu().numpy()
        return columns

    def _pictures(self, batch: pa.Table, frames: np.ndarray, rec_video: torch.Tensor) -> list[str]:
        rec = (rec_video * 255).round().to(torch.uint8).cpu().numpy()
        names = []
        for i, clip_id in enumerate(batch.column("id").to_pylist()):
            names.append(save_picture(self.output_dir, clip_id, lambda i=i: pictures.png_bytes(pictures.clip_strip(
                frames[i], rec[i], max_frames=self.picture_frames))))
        return names
