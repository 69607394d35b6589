"""The compute kernels under the Perceiver modules: exact, faster routes to the same maths.

- ``attention``: the attention planner and call. ``plan_attention`` picks kernel, zero-padding and query chunks
  from the shapes; ``scaled_dot_product_attention`` runs the plan (torch's fused kernels, or the CPU
  ``onednn_chunked`` online-softmax path); ``attention_backend`` / ``record_attention_calls`` report what runs;
  ``reference_attention`` is the plain maths the tests compare against.
- ``onednn_linear``: ``Linear``, a drop-in ``nn.Linear`` whose fp32 CPU inference runs on oneDNN's GEMMs (GELU
  fused into the epilogue), used by every attention and MLP layer.
- ``reassociation``: single-head cross-attention with the projections moved across the kernel
  (``projection_order``, ``attend_keys_are_inputs``, ``attend_queries_are_inputs``).
- ``image``: the image preprocessing kernels of ``PerceiverImageProcessor`` (crop, resize, normalise).
- ``options``: the switches.

Switches (design as timm's ``fused_attn``): each module that can take a faster path has an attribute of the
switch's name, set at construction from ``DEFAULT_OPTIONS`` (all on): ``Attention.reassociate``,
``Attention.onednn_attention`` and ``Linear.onednn_linear``. ``set_kernel_options(model, reassociate=False)``
sets them on every module of one model. ``with kernel_options(onednn_linear=False, ...):`` overrides the given
switches for every module and kernel function called inside the block, in this thread / task only
(``contextvars``); nested blocks stack, switches left as None keep the enclosing value. An enclosing block wins
over a module attribute; while ``torch.compile`` traces, only the attributes count (set them before compiling).
"""

from .options import DEFAULT_OPTIONS, KernelOptions, kernel_options, set_kernel_options

__all__ = ["DEFAULT_OPTIONS", "KernelOptions", "kernel_options", "set_kernel_options"]
