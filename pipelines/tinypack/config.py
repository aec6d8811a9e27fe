"""Configuration of the tiny pack: component shapes and training schedules.

The component builders return standard diffusers/transformers modules, so the
pack loads with the same ``from_pretrained`` classes as real checkpoints.
Sizes were chosen on a 2-core CPU (see DESIGN.md "ShapesWorld"): 64x64 images,
an autoencoder with a 4x downsample (16x16x4 latents), a UNet with
cross-attention at 16x16 and 8x8 only, and a bidirectional text encoder so that
"red" in "a red circle left of a blue square" sees "left".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import BertConfig, BertModel, CLIPConfig, CLIPModel

from ..training import TrainSchedule

@dataclass
class ComponentSizes:
    """Widths of the tiny components."""

    # Image side in pixels; latents are image_size // 4.
    image_size: int = 64
    # Autoencoder channels per level: three levels, two 2x downsamples.
    vae_channels: tuple[int, ...] = (32, 64, 64)
    # UNet channels per level at 16x16, 8x8 and 4x4 latent resolution.
    unet_channels: tuple[int, ...] = (48, 96, 128)
    # Channels per attention head in the UNet (None: diffusers' 16 heads per layer, pack v1). Fewer, wider heads
    # give each head a map worth reading and run faster on a CPU (docs/notes/tiny_pack.md, "Speed").
    head_width: int | None = 48
    # Width of the text encoder, which is also the cross-attention dimension.
    text_width: int = 64
    # Transformer layers in the text encoder.
    text_layers: int = 2
    # Tokens per caption including BOS and EOS; ShapesWorld captions use at most 16.
    max_tokens: int = 24
    # Vision transformer of the tiny CLIP: patch side and depth.
    clip_patch: int = 8
    clip_vision_layers: int = 3


@dataclass
class TinyPackConfig:
    """Everything `make tiny-models` needs; defaults fit a 2-core CPU in about an hour."""

    sizes: ComponentSizes = field(default_factory=ComponentSizes)
    # Autoencoder: reconstruction (MSE) with a small KL term.
    vae: TrainSchedule = field(default_factory=lambda: TrainSchedule(steps=2400, batch_size=16, learning_rate=2e-3))
    vae_kl_weight: float = 1e-6
    # Loss weight of saturated (object) pixels against grey background pixels.
    vae_object_weight: float = 5.0
    # Text-to-image UNet and text encoder trained jointly on cached latents.
    text_to_image: TrainSchedule = field(
        default_factory=lambda: TrainSchedule(steps=4000, batch_size=32, learning_rate=1e-3)
    )
    # Relative frequency of scenes with 1, 2 and 3 objects (None: uniform, pack v1). Two-object scenes always
    # state a relation, so their share sets how often the model sees "left of / above".
    object_count_weights: tuple[float, float, float] | None = (1.0, 2.0, 1.0)
    # Weight of the cross-attention supervision (eq. 9.4, each object's words toward its mask) in pretraining;
    # 0 turns it off. Applied only to samples noised to a timestep in [supervision_min_timestep,
    # supervision_max_timestep]: at high noise the image does not yet show where an object is, so the target teaches
    # where the caption puts it (its relation), at low noise where the image already drew it.
    attention_supervision: float = 0.3
    supervision_min_timestep: int = 500
    supervision_max_timestep: int = 999
    # Weight of the text grounding term (train.grounding_loss: each object's words' features, projected on two fixed
    # directions, say where the object is); 0 turns it off.
    text_grounding: float = 1.0
    # bfloat16 autocast in the autoencoder and text-to-image forward passes (float32 weights and optimiser).
    bf16: bool = True
    # Captions replaced by the empty caption, for classifier-free guidance.
    caption_dropout: float = 0.1
    # Min-SNR loss weighting gamma (Hang et al. 2023); None for plain MSE.
    snr_gamma: float | None = 5.0
    # What the UNet predicts ("epsilon" or "v_prediction") and whether t = 999 is pure noise
    # (pipelines.training.build_train_scheduler); the saved pipeline's scheduler says the same.
    prediction_type: str = "epsilon"
    zero_terminal_snr: bool = False
    ema_decay: float = 0.999
    # Tiny CLIP, contrastive.
    clip: TrainSchedule = field(default_factory=lambda: TrainSchedule(steps=1200, batch_size=128, learning_rate=2e-3))
    # Distinct ShapesWorld training scenes (seeds 0..n-1 of the "train" split).
    num_scenes: int = 40_000
    seed: int = 0

    @classmethod
    def smoke(cls) -> "TinyPackConfig":
        """Two steps of everything on a handful of scenes: proves the script runs."""
        return cls(
            vae=TrainSchedule(2, 4, 1e-3), text_to_image=TrainSchedule(2, 4, 1e-3), clip=TrainSchedule(2, 8, 1e-3),
            num_scenes=16,
        )


def build_vae(sizes: ComponentSizes) -> AutoencoderKL:
    levels = len(sizes.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=sizes.vae_channels, layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        norm_num_groups=16, mid_block_add_attention=False, sample_size=sizes.image_size,
    )


def build_unet(sizes: ComponentSizes) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=sizes.image_size // 4, in_channels=4, out_channels=4, block_out_channels=sizes.unet_channels,
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=sizes.text_width, attention_head_dim=unet_heads(sizes), norm_num_groups=16,
    )


def unet_heads(sizes: ComponentSizes) -> int | tuple[int, ...]:
    """Heads per UNet level; diffusers' 2D UNet reads its ``attention_head_dim`` argument as this head count."""
    if sizes.head_width is None:
        return 16
    return tuple(max(1, channels // sizes.head_width) for channels in sizes.unet_channels)


def build_text_encoder(sizes: ComponentSizes, vocab_size: int, pad_token_id: int) -> BertModel:
    """A bidirectional transformer in the pipeline's ``text_encoder`` slot.

    CLIP's text model is causal (hard-coded in transformers 5), so "red" never
    sees "left"; a BERT encoder reads the whole caption.
    """
    return BertModel(
        BertConfig(
            vocab_size=vocab_size, hidden_size=sizes.text_width, num_hidden_layers=sizes.text_layers,
            num_attention_heads=4, intermediate_size=sizes.text_width * 2, max_position_embeddings=sizes.max_tokens,
            type_vocab_size=1, pad_token_id=pad_token_id, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )
    )


def build_clip(sizes: ComponentSizes, vocab_size: int, bos_token_id: int, eos_token_id: int) -> CLIPModel:
    width = sizes.text_width
    return CLIPModel(
        CLIPConfig(
            text_config=dict(
                vocab_size=vocab_size, hidden_size=width, intermediate_size=width * 2, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=sizes.max_tokens, bos_token_id=bos_token_id,
                eos_token_id=eos_token_id, pad_token_id=eos_token_id,
            ),
            vision_config=dict(
                image_size=sizes.image_size, patch_size=sizes.clip_patch, hidden_size=width,
                intermediate_size=width * 2, num_hidden_layers=sizes.clip_vision_layers, num_attention_heads=4,
            ),
            projection_dim=width,
        )
    )
