"""The tiny text-to-video backbone: a UNet3D whose spatial layers come from the tiny text-to-image UNet.

Thesis 10.3.4 / 10.5.1: like LVDM, ModelScope and Align-your-Latents, the
video UNet keeps the image UNet's spatial convolutions and spatial transformers
(cross-attention to the text, where Directional Motion Control acts) and adds
temporal layers (temporal convolutions and temporal self-attention) between
them. :func:`inflate_unet` copies every 2D weight to its 3D twin and makes the
temporal layers start as the identity, so before any training the video model
denoises each frame exactly as the image model does.
"""

from __future__ import annotations

import math

import torch
from diffusers import UNet2DConditionModel, UNet3DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import SinusoidalPositionalEmbedding

from ..tinypack.config import ComponentSizes


def build_unet3d(sizes: ComponentSizes, attention_head_dim: int = 16, norm_num_groups: int = 16) -> UNet3DConditionModel:
    """The tiny pack's UNet layout (cross-attention at 16x16, 8x8 and the 4x4 mid block) in 3D."""
    return UNet3DConditionModel(
        sample_size=sizes.image_size // 4, in_channels=4, out_channels=4, block_out_channels=sizes.unet_channels,
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=sizes.text_width, attention_head_dim=attention_head_dim,
        norm_num_groups=norm_num_groups,
    )


def sinusoidal_positions(times: torch.Tensor, dim: int) -> torch.Tensor:
    """diffusers' ``SinusoidalPositionalEmbedding`` table evaluated at real-valued ``times`` [..., F] -> [..., F, dim]
    (sin at even channels, cos at odd ones; at integer times these are that table's rows)."""
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=times.device) * (-math.log(10000.0) / dim))
    angles = times.to(torch.float32)[..., None] * div
    return torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(-2)[..., :dim]


class FramePositions(SinusoidalPositionalEmbedding):
    """Sinusoidal frame-index embedding added to a temporal attention's input, as in AnimateDiff's motion modules.

    diffusers' UNet3D temporal transformers attend over frames without any
    position, so they cannot tell the first frame from the last; "from left to
    right" then has to be inferred from the zero padding of the temporal
    convolutions. A ``BasicTransformerBlock`` adds its ``pos_embed`` to the
    normalised frames before each attention; this is diffusers' sinusoidal one,
    with the table kept out of the state dict (a function of the sizes, not a
    weight) and a clear error past the last position. A pack with a frame clock (.frame_clock) sets ``clock``:
    the positions are then evaluated at each video's clock time instead of its frame index.
    """

    def __init__(self, dim: int, max_frames: int) -> None:
        super().__init__(dim, max_seq_length=max_frames)
        table = self.pe
        del self.pe
        self.register_buffer("pe", table, persistent=False)
        # Callable giving the running call's per-video clock rates [videos] (or None), see .frame_clock.
        self.clock = None

    @property
    def table(self) -> torch.Tensor:
        """[1, max_frames, dim] sin/cos of each frame index."""
        return self.pe

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[batch * h * w, frames, dim] -> the same plus each frame's position."""
        if hidden_states.shape[1] > self.pe.shape[1]:
            raise ValueError(f"{hidden_states.shape[1]} frames exceed the {self.pe.shape[1]} frame positions of this model")
        rates = self.clock() if self.clock is not None else None
        if rates is None:
            return super().forward(hidden_states)
        videos, frames = rates.shape[0], hidden_states.shape[1]
        times = torch.arange(frames, dtype=torch.float32, device=hidden_states.device)[None] * rates.to(
            hidden_states.device)[:, None]
        table = sinusoidal_positions(times, hidden_states.shape[-1]).to(hidden_states.dtype)  # [videos, F, dim]
        # rows are video-major (each video's h * w pixels together): broadcast, no per-pixel copy of the table
        by_video = hidden_states.unflatten(0, (videos, -1))
        return (by_video + table[:, None]).flatten(0, 1)


def temporal_blocks(unet: UNet3DConditionModel) -> list[BasicTransformerBlock]:
    """The transformer blocks of every temporal transformer (``transformer_in`` and each ``temp_attentions``)."""
    return [module for name, module in unet.named_modules()
            if isinstance(module, BasicTransformerBlock)
            and (name.startswith("transformer_in.") or ".temp_attentions." in name)]


def add_frame_positions(unet: UNet3DConditionModel, max_frames: int) -> int:
    """Give every temporal transformer block of ``unet`` :class:`FramePositions` for up to ``max_frames`` frames.

    Idempotent (blocks that already have positions keep them); returns how many blocks got them.
    A pack records ``max_frames`` in its motion encoder's config (``frame_positions``), and
    :class:`~.pipeline.MojitoPipeline` applies it on load.
    """
    added = 0
    for block in temporal_blocks(unet):
        if block.pos_embed is None:
            block.pos_embed = FramePositions(block.norm1.normalized_shape[0], max_frames).to(block.norm1.weight.device)
            block.positional_embeddings = "sinusoidal"
            added += 1
    return added


def zero_temporal_attention(unet: UNet3DConditionModel) -> None:
    """Zero the output projection of every temporal transformer, so each is the identity (residual only).

    diffusers already zeroes the last layer of each temporal convolution; its
    temporal transformers add ``proj_out(...)`` to the input, which is the input
    when ``proj_out`` is zero.
    """
    for name, module in unet.named_modules():
        if name == "transformer_in" or name.split(".")[-2:-1] == ["temp_attentions"]:
            torch.nn.init.zeros_(module.proj_out.weight)
            torch.nn.init.zeros_(module.proj_out.bias)


def spatial_head_counts(unet2d: UNet2DConditionModel) -> tuple[int, ...]:
    """The per-level head counts of an image UNet whose ``attention_head_dim`` is a tuple (pack v2: (1, 2, 2)),
    as diffusers' 2D blocks read it; () for one integer, which the UNet3D cannot take over (see :func:`inflate_unet`)."""
    heads = unet2d.config.attention_head_dim
    return () if isinstance(heads, int) else tuple(int(h) for h in heads)


def set_spatial_heads(unet: UNet3DConditionModel, heads_per_level: tuple[int, ...]) -> int:
    """Split every spatial attention of level i into ``heads_per_level[i]`` heads, as diffusers' 2D UNet does
    (down block i: ``heads_per_level[i]``, the mid block: the last, up block i: the reversed list's i-th).

    Only the split changes (``heads`` and the 1/sqrt(width) ``scale``); the projections are the same matrices.
    Temporal attentions keep theirs. A pack records the counts in its motion encoder's config
    (``spatial_heads``) and :class:`~.pipeline.MojitoPipeline` applies them on load. Returns how many
    attentions were set.
    """
    if len(heads_per_level) != len(unet.down_blocks):
        raise ValueError(f"{len(heads_per_level)} head counts for {len(unet.down_blocks)} levels")
    blocks = [(block, heads_per_level[i]) for i, block in enumerate(unet.down_blocks)]
    blocks += [(unet.mid_block, heads_per_level[-1])]
    blocks += [(block, heads) for block, heads in zip(unet.up_blocks, reversed(heads_per_level))]
    count = 0
    for block, heads in blocks:
        for transformer in getattr(block, "attentions", ()):
            for module in transformer.modules():
                if isinstance(module, Attention):
                    if module.inner_dim % heads:
                        raise ValueError(f"{module.inner_dim} channels do not split into {heads} heads")
                    module.heads, module.scale = heads, (module.inner_dim // heads) ** -0.5
                    count += 1
    return count


def inflate_unet(unet2d: UNet2DConditionModel, sizes: ComponentSizes | None = None) -> UNet3DConditionModel:
    """A UNet3D carrying every weight of ``unet2d``; its temporal layers start as the identity.

    The 3D blocks name their spatial parts as the 2D ones do (``resnets``,
    ``attentions``, samplers, ``conv_in``/``conv_out``, time embedding); the only
    layout change is the spatial transformers' 1x1-conv ``proj_in``/``proj_out``,
    which the 3D model holds as linear layers (same matrix, trailing 1x1 dropped).
    Raises ``ValueError`` if any 2D weight has no 3D twin.

    Head split: diffusers' 2D blocks read ``attention_head_dim`` as a head
    count (a per level), its 3D blocks as a head width (C/a heads of a
    channels). A per-level count (pack v2: 1, 2, 2 heads) is built with heads
    of gcd(C) channels (the UNet3D's ``transformer_in`` takes one integer) and
    then given the image UNet's heads with :func:`set_spatial_heads`, so the
    video model is the image model frame by frame (the tests check both this
    and the C = a^2 case). With one integer a (tiny pack v1: C = 48, 96, 128,
    a = 16) the copied projections stay regrouped into C/a heads, and training
    re-adapts them.
    """
    config = unet2d.config
    sizes = sizes or ComponentSizes(
        image_size=config.sample_size * 4, unet_channels=tuple(config.block_out_channels),
        text_width=config.cross_attention_dim,
    )
    head_dim = config.attention_head_dim
    if not isinstance(head_dim, int):
        head_dim = math.gcd(*config.block_out_channels)
    unet3d = build_unet3d(sizes, head_dim, config.norm_num_groups)
    heads_per_level = spatial_head_counts(unet2d)
    if heads_per_level:
        set_spatial_heads(unet3d, heads_per_level)
    zero_temporal_attention(unet3d)
    target = unet3d.state_dict()
    mapped = {}
    for key, value in unet2d.state_dict().items():
        if key not in target:
            raise ValueError(f"2D weight {key!r} has no counterpart in the UNet3D")
        if value.shape != target[key].shape:
            value = value.reshape(target[key].shape)
        mapped[key] = value.to(target[key].dtype)
    missing = unet3d.load_state_dict(mapped, strict=False).missing_keys
    spatial_missing = [k for k in missing if "temp_" not in k and not k.startswith("transformer_in.")]
    if spatial_missing:
        raise ValueError(f"UNet3D spatial weights left uninitialised: {spatial_missing[:5]}")
    return unet3d
