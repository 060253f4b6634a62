"""Configuration of ALTA (ALign Through Adapting): a ViTMAE image tower and a BERT text tower with adapters."""

import math
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import BertConfig, PretrainedConfig, ViTMAEConfig

__all__ = ["AltaConfig", "ALTA_VISION_DEFAULTS", "ALTA_TEXT_DEFAULTS"]

# The official ALTA image tower is ViT-B/16 with LayerNorm eps 1e-6 (ViTMAEConfig defaults to 1e-12) and the MRM
# decoder (768 wide, 4 layers, 6 heads); the reconstruction target is normalised per patch (the official run.sh).
ALTA_VISION_DEFAULTS = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-6,
    "image_size": 224,
    "patch_size": 16,
    "num_channels": 3,
    "qkv_bias": True,
    "decoder_hidden_size": 768,
    "decoder_num_hidden_layers": 4,
    "decoder_num_attention_heads": 6,
    "decoder_intermediate_size": 3072,
    "mask_ratio": 0.75,
    "norm_pix_loss": True,
}
# CXR-BERT geometry (BERT-base, 30522 WordPiece tokens); the model builds it without a pooler.
ALTA_TEXT_DEFAULTS = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}

_LOG_1_OVER_007 = math.log(1 / 0.07)


@strict
class AltaConfig(PretrainedConfig):
    r"""
    Configuration of [`AltaModel`] and [`AltaForPreTraining`]. `AltaConfig()` is the official ALTA base geometry.

    The image tower's own settings, including those of the MRM reconstruction decoder and of the patch masking
    (`decoder_hidden_size`, `decoder_num_hidden_layers`, `decoder_num_attention_heads`, `decoder_intermediate_size`,
    `mask_ratio`, `norm_pix_loss`), live in `vision_config`, exactly as in a `ViTMAEConfig` of an MAE/MRM
    checkpoint; keys missing from a `vision_config`/`text_config` dict take the ALTA defaults, not the library ones.

    vision_config (`dict` or `ViTMAEConfig`, *optional*):
        The ViTMAE image tower and its reconstruction decoder (`ALTA_VISION_DEFAULTS` for missing keys).
    text_config (`dict` or `BertConfig`, *optional*):
        The BERT text tower and its masked-LM head (`ALTA_TEXT_DEFAULTS` for missing keys).
    projection_dim (`int`, *optional*, defaults to 128):
        Size of the four projection heads' outputs (global and local, image and text).
    projection_layer_norm_eps (`float`, *optional*, defaults to 1e-12):
        Epsilon of the LayerNorm inside each projection head.
    num_view_slots (`int`, *optional*, defaults to 4):
        Image slots per study, in the order current frontal, current lateral, prior frontal, prior lateral
        (frontal/lateral alternate, so slot `t` has view `t % 2` and time point `t // 2`).
    reconstruction_image_size (`int`, *optional*, defaults to 448):
        Side of the current frontal image the decoder reconstructs ("super-resolution" target). Its patches are
        `patch_size * reconstruction_image_size / image_size` pixels wide (32 at the defaults), so that the
        target has as many patches as the encoder input.
    logit_scale_init_value (`float`, *optional*, defaults to log(1/0.07)):
        Initial log of the global contrastive logit scale.
    local_logit_scale_init_value (`float`, *optional*, defaults to log(1/0.07)):
        Initial log of each of the three local-loss temperatures.
    logit_scale_max (`float`, *optional*, defaults to log(100)):
        Upper bound of every log logit scale, applied after each optimizer step by the training loop.
    global_loss_weight, local_loss_weight, reconstruction_loss_weight, mlm_loss_weight (`float`, *optional*, defaults to 1.0):
        Weights of the four loss terms in the total loss (a zero weight skips the term).
    adapter_type (`str`, *optional*, defaults to `"bottleneck"`):
        `"bottleneck"`: ALTA's adapters (sequential after attention, parallel to the MLP);
        `"lora"`: peft's LoRA on the attention projections instead (ablations).
    adapter_reduction_factor (`int`, *optional*, defaults to 4):
        Bottleneck width = hidden size / this factor.
    adapter_parallel_scale (`float`, *optional*, defaults to 0.5):
        Scale of the parallel (MLP) bottleneck adapter.
    lora_rank, lora_alpha, lora_dropout (*optional*, defaults to 8, 16, 0.0):
        LoRA settings when `adapter_type="lora"`.
    lora_vision_target_modules, lora_text_target_modules (`list[str]`, *optional*):
        Module names LoRA wraps in the image tower (default `["q_proj", "v_proj"]`) and in the text tower
        (default `["query", "value"]`).

    Example:

    ```python
    >>> from modeling_alta import AltaConfig, AltaForPreTraining
    >>> config = AltaConfig()  # official base geometry
    >>> model = AltaForPreTraining(config)
    ```"""

    model_type = "alta"
    sub_configs_defaults = {"vision_config": ViTMAEConfig, "text_config": BertConfig}

    vision_config: dict | ViTMAEConfig | None = None
    text_config: dict | BertConfig | None = None
    projection_dim: int = 128
    projection_layer_norm_eps: float | int = 1e-12
    num_view_slots: int = 4
    reconstruction_image_size: int = 448
    logit_scale_init_value: float | int = _LOG_1_OVER_007
    local_logit_scale_init_value: float | int = _LOG_1_OVER_007
    logit_scale_max: float | int = math.log(100.0)
    global_loss_weight: float | int = 1.0
    local_loss_weight: float | int = 1.0
    reconstruction_loss_weight: float | int = 1.0
    mlm_loss_weight: float | int = 1.0
    adapter_type: Literal["bottleneck", "lora"] = "bottleneck"
    adapter_reduction_factor: int = 4
    adapter_parallel_scale: float | int = 0.5
    lora_rank: int = 8
    lora_alpha: float | int = 16.0
    lora_dropout: float | int = 0.0
    lora_vision_target_modules: list[str] | None = None
    lora_text_target_modules: list[str] | None = None
    initializer_range: float | int = 0.02
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        self.vision_config = _with_defaults(self.vision_config, ALTA_VISION_DEFAULTS)
        self.text_config = _with_defaults(self.text_config, ALTA_TEXT_DEFAULTS)
        if self.lora_vision_target_modules is None:
            self.lora_vision_target_modules = ["q_proj", "v_proj"]
        if self.lora_text_target_modules is None:
            self.lora_text_target_modules = ["query", "value"]
        super().__post_init__(**kwargs)

    @property
    def num_patches(self) -> int:
        """Patches per image slot (196 at the defaults)."""
        return (self.vision_config.image_size // self.vision_config.patch_size) ** 2

    @property
    def loss_weights(self) -> dict[str, float]:
        """Weight of each loss in the total, by the name of its output field (the one mapping every loss sum uses)."""
        return {"global_loss": self.global_loss_weight, "local_loss": self.local_loss_weight,
                "reconstruction_loss": self.reconstruction_loss_weight, "mlm_loss": self.mlm_loss_weight}

    @property
    def reconstruction_patch_size(self) -> int:
        """Pixel width of a reconstruction-target patch (32 at the defaults)."""
        return self.vision_config.patch_size * self.reconstruction_image_size // self.vision_config.image_size

    def validate_architecture(self):
        """Cross-field checks (raise `ValueError` quoting the values)."""
        super().validate_architecture()
        vision, text = self.vision_config, self.text_config
        if vision.image_size % vision.patch_size:
            raise ValueError(
                f"vision_config.image_size ({vision.image_size}) must be divisible by patch_size ({vision.patch_size})"
            )
        if (self.reconstruction_image_size * vision.patch_size) % vision.image_size:
            raise ValueError(
                f"reconstruction_image_size ({self.reconstruction_image_size}) must give an integer patch size: "
                f"patch_size ({vision.patch_size}) * reconstruction_image_size / image_size ({vision.image_size})"
            )
        if self.num_view_slots < 1 or self.num_view_slots % 2:
            raise ValueError(
                f"num_view_slots ({self.num_view_slots}) must be a positive even number: frontal/lateral pairs"
            )
        if self.adapter_type not in ("bottleneck", "lora"):
            raise ValueError(f"adapter_type must be 'bottleneck' or 'lora', got {self.adapter_type!r}")
        for name, width in (("vision_config.hidden_size", vision.hidden_size), ("text_config.hidden_size", text.hidden_size)):
            if width % self.adapter_reduction_factor:
                raise ValueError(
                    f"{name} ({width}) must be divisible by adapter_reduction_factor ({self.adapter_reduction_factor})"
                )


def _with_defaults(sub_config, defaults: dict):
    """A dict (or None) sub-config completed with the ALTA defaults; config objects are kept as they are."""
    if sub_config is None:
        return dict(defaults)
    if isinstance(sub_config, dict):
        return {**defaults, **sub_config}
    return sub_config
