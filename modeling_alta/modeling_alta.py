"""ALTA (ALign Through Adapting): a ViTMAE image tower and a BERT text tower, adapted with bottleneck adapters.

`AltaModel` is the inference model (CLIP-like features and logits); `AltaForPreTraining` adds what the training
objectives need: the MRM reconstruction decoder, the masked-LM head, the image->text map of image-conditioned MLM
and the missing-view token of the temporal-multiview image input.
"""

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from transformers import BertModel, PreTrainedModel, ViTMAEModel
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.bert.modeling_bert import BertOnlyMLMHead
from transformers.models.vit_mae.modeling_vit_mae import ViTMAEDecoder, build_2d_sinusoidal_position_embedding
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput, can_return_tuple

from .adapters_alta import ADAPTER_NAME, tower_adapter_config
from .configuration_alta import AltaConfig
from .losses_alta import global_contrastive_loss, local_contrastive_loss, masked_lm_loss, reconstruction_loss
from .pipelines_alta import custom_pipelines_config
from .step_work_alta import keep_frozen_weights_uncast, labelled_rows, pad_to_length, used_text_length
from .weight_files import SafetensorError, corrupt_weights_message

__all__ = [
    "AltaForPreTraining",
    "AltaForPreTrainingOutput",
    "AltaModel",
    "AltaOutput",
    "AltaPreTrainedModel",
    "AltaProjectionHead",
]


@dataclass
class AltaOutput(ModelOutput):
    """
    Output of [`AltaModel.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
            Global contrastive (InfoNCE) loss.
        logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
            Scaled cosine similarities (`exp(logit_scale) * image_embeds @ text_embeds.T`).
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`):
            The transpose of `logits_per_image`.
        text_embeds (`torch.FloatTensor` of shape `(text_batch_size, projection_dim)`):
            L2-normalised projected text [CLS] features.
        image_embeds (`torch.FloatTensor` of shape `(image_batch_size, projection_dim)`):
            L2-normalised projected image [CLS] features.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None


@dataclass
class AltaForPreTrainingOutput(ModelOutput):
    """
    Output of [`AltaForPreTraining.forward`] (B studies, S view slots, K kept patches per slot, N patches per
    image, L tokens; a loss whose weight is 0 is not computed and stays `None`).

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            Weighted sum of the four losses below.
        global_loss (`torch.FloatTensor` of shape `()`): global contrastive (InfoNCE) loss.
        local_loss (`torch.FloatTensor` of shape `()`): local (word-region) contrastive loss.
        reconstruction_loss (`torch.FloatTensor` of shape `()`): masked-patch reconstruction loss.
        mlm_loss (`torch.FloatTensor` of shape `()`): image-conditioned masked-LM loss.
        logits_per_image (`torch.FloatTensor` of shape `(B, B)`):
            Global similarities of this process's batch, scaled by `exp(logit_scale)`.
        local_logits_per_image (`torch.FloatTensor` of shape `(B_all, B_all)`):
            Local similarity scores (rows = images, columns = reports) over the batch gathered from all processes.
        image_embeds (`torch.FloatTensor` of shape `(B, projection_dim)`):
            L2-normalised projection of the mean of the S slots' [CLS] outputs.
        text_embeds (`torch.FloatTensor` of shape `(B, projection_dim)`):
            L2-normalised projection of the clean report's [CLS] output.
        image_local_embeds (`torch.FloatTensor` of shape `(B, S * K, projection_dim)`):
            Local projection of the visible patch tokens of all slots, slot-major (not normalised).
        text_local_embeds (`torch.FloatTensor` of shape `(B, L - 1, projection_dim)`):
            Local projection of the clean report's tokens after [CLS] (not normalised).
        mlm_logits (`torch.FloatTensor` of shape `(B, L, vocab_size)`):
            Masked-LM logits of the corrupted report; `(M, vocab_size)`, the M labelled positions only, when the
            forward left out the work no loss reads (`full_work=False`, the training-mode default).
        reconstruction_logits (`torch.FloatTensor` of shape `(B, N, reconstruction_patch_size**2 * num_channels)`):
            Predicted pixels of every patch of the reconstruction target ((row, column, channel) order in a patch).
        mask (`torch.FloatTensor` of shape `(B, N)`):
            Patch mask of the current frontal slot (1 = removed).
        ids_restore (`torch.LongTensor` of shape `(B, N)`):
            Unshuffling indices of the current frontal slot.
        vision_last_hidden_state (`torch.FloatTensor` of shape `(B, S, 1 + K, vision_hidden_size)`):
            Image tower output per slot: [CLS, visible patch tokens in kept order].
        text_last_hidden_state (`torch.FloatTensor` of shape `(B, L, text_hidden_size)`):
            Text tower output of the clean report.
    """

    loss: torch.FloatTensor | None = None
    global_loss: torch.FloatTensor | None = None
    local_loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    local_logits_per_image: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_local_embeds: torch.FloatTensor | None = None
    text_local_embeds: torch.FloatTensor | None = None
    mlm_logits: torch.FloatTensor | None = None
    reconstruction_logits: torch.FloatTensor | None = None
    mask: torch.FloatTensor | None = None
    ids_restore: torch.LongTensor | None = None
    vision_last_hidden_state: torch.FloatTensor | None = None
    text_last_hidden_state: torch.FloatTensor | None = None


class AltaProjectionHead(nn.Module):
    """`Linear(d, p) -> GELU -> LayerNorm(p) -> Linear(p, p)` (CXR-BERT's projection head)."""

    def __init__(self, input_dim: int, projection_dim: int, layer_norm_eps: float):
        super().__init__()
        self.dense_to_hidden = nn.Linear(input_dim, projection_dim)
        self.activation = nn.GELU()
        self.layer_norm = nn.LayerNorm(projection_dim, eps=layer_norm_eps)
        self.dense_to_output = nn.Linear(projection_dim, projection_dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dense_to_output(self.layer_norm(self.activation(self.dense_to_hidden(hidden_states))))


def _check_shape(tensor, name: str, expected: tuple, what: str) -> None:
    """Raise a ValueError naming the input when `tensor`'s shape differs from `expected` (None = any size)."""
    if not torch.is_tensor(tensor):
        raise ValueError(f"{name} must be a tensor of shape {what}, got {type(tensor).__name__}")
    shape = tuple(tensor.shape)
    if len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
        raise ValueError(f"{name} must have shape {what}, got {list(shape)}")


def tower_trainable_parameters(tower: nn.Module):
    """ALTA's trainable set inside one tower: its adapter weights (bottleneck or LoRA) and every LayerNorm."""
    for module in tower.modules():
        if isinstance(module, BaseTunerLayer):
            for layer_name in module.adapter_layer_names:
                container = getattr(module, layer_name)  # ModuleDict or ParameterDict keyed by adapter
                if ADAPTER_NAME in container:
                    adapter = container[ADAPTER_NAME]
                    yield from adapter.parameters() if isinstance(adapter, nn.Module) else [adapter]
        elif isinstance(module, nn.LayerNorm):
            yield from module.parameters()


def _zero_init_adapter_parameters(module: nn.Module):
    """Parameters of the adapter parts that start at zero (bottleneck up-projections, LoRA B), duck-typed."""
    for attribute in ("bottleneck_up", "lora_B"):
        for sub in getattr(module, attribute, {}).values():
            yield from sub.parameters()


def _initialize_mae_embeddings(embeddings: nn.Module, initializer_range: float) -> None:
    """MAE's initialisation of a ViTMAE embedding layer: fixed 2-D sin-cos positions (MAE's half order, [CLS] at 0),
    xavier-uniform patch projection, N(0, initializer_range) [CLS] token.

    The table is MAE's, as MRM and therefore trained ALTA checkpoints carry it. (The official ALTA constructor computes
    its frequencies as `k / d / 2` instead of MAE's `k / (d / 2)`, an operator-precedence slip visible in the golden
    random checkpoint; converted checkpoints keep whichever table they hold.)"""
    grid = int(embeddings.patch_embeddings.num_patches**0.5)
    table = build_2d_sinusoidal_position_embedding(
        height=grid, width=grid, embed_dim=embeddings.position_embeddings.shape[-1], cls_token=True
    )
    half = table.shape[-1] // 2
    table = torch.cat([table[..., half:], table[..., :half]], dim=-1)  # MAE's (pretrained-weight) half order
    embeddings.position_embeddings.copy_(table.unsqueeze(0).to(embeddings.position_embeddings.dtype))
    weight = embeddings.patch_embeddings.projection.weight
    nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
    nn.init.normal_(embeddings.cls_token, std=initializer_range)


class AltaPreTrainedModel(PreTrainedModel):
    config: AltaConfig
    config_class = AltaConfig
    base_model_prefix = "alta"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["ViTMAELayer", "BertLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module):
        super()._init_weights(module)
        config = self.config
        # duck-typed (never isinstance on our own classes: a Hub remote-code copy may define them a second time)
        if hasattr(module, "local_logit_scales"):
            init.constant_(module.logit_scale, config.logit_scale_init_value)
            init.constant_(module.local_logit_scales, config.local_logit_scale_init_value)
            # the official model starts without view/time information
            init.zeros_(module.view_embedding)
            init.zeros_(module.temporal_embedding)
        if hasattr(module, "missing_view_token"):
            init.zeros_(module.missing_view_token)
        if hasattr(module, "decoder_pos_embed") and hasattr(module, "mask_token"):
            module.initialize_weights(config.num_patches)
        if hasattr(module, "transform") and hasattr(module, "decoder") and hasattr(module, "bias"):
            init.zeros_(module.bias)

    @torch.no_grad()
    def initialize_weights(self):
        # The towers are PreTrainedModels: transformers hands their modules (the adapters injected into them
        # included) to the towers' own `_init_weights`, which would draw the zero-initialised adapter parts from
        # N(0, 0.02). Zero those that this call initialises (not those loaded from a checkpoint).
        pending = [
            parameter
            for module in self.modules()
            for parameter in _zero_init_adapter_parameters(module)
            if not getattr(parameter, "_is_hf_initialized", False)
        ]
        # transformers 5.24's ViTMAEEmbeddings.initialize_weights returns early once the patch projection is flagged
        # as initialised, which the generic pass does first: a fresh tower would keep all-zero position embeddings
        # and [CLS] token (absent view slots then become all-zero token rows, whose LayerNorm gradients explode).
        embeddings = [
            module for module in self.modules()
            if hasattr(module, "patch_embeddings") and hasattr(module, "position_embeddings")
            and not getattr(module.position_embeddings, "_is_hf_initialized", False)
        ]
        super().initialize_weights()
        for parameter in pending:
            parameter.zero_()
        for module in embeddings:
            _initialize_mae_embeddings(module, self.config.vision_config.initializer_range)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        try:
            loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as error:  # safetensors names no file
            raise OSError(corrupt_weights_message(pretrained_model_name_or_path, error)) from error
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        # loading leaves every parameter trainable; the ALTA policy must be set again
        model.apply_trainable_policy()
        return loaded

    def save_pretrained(self, save_directory, *args, **kwargs):
        # in-memory key names in the file (transformers 5 would otherwise write ViTMAE keys in the v4 layout)
        kwargs.setdefault("save_original_format", False)
        if self._auto_class is not None:
            # transformers maps only the saved class; both live in this file, and a pre-training folder must also
            # load through AutoModel (an inference folder through AutoModelForPreTraining) with remote code
            module = type(self).__module__.rsplit(".", 1)[-1]
            # and through AutoModelForImageClassification (the image tower + a fresh head); importing it here (it
            # imports this module) also makes save_pretrained copy its file
            from .classification_alta import AltaForImageClassification

            classifier = AltaForImageClassification
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModel": f"{module}.AltaModel",
                "AutoModelForPreTraining": f"{module}.AltaForPreTraining",
                "AutoModelForImageClassification": f"{classifier.__module__.rsplit('.', 1)[-1]}.{classifier.__name__}",
            }
            # `pipeline(task, model=folder, trust_remote_code=True)` then uses ALTA's pipelines (pipelines_alta.py)
            self.config.custom_pipelines = custom_pipelines_config()
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _trainable_parameters(self):
        raise NotImplementedError(f"{type(self).__name__} must list its trainable parameters")

    def apply_trainable_policy(self) -> None:
        """
        Freeze everything except ALTA's trainable set (docs/model.md, "Adapters and the trainable set"): the adapters, every LayerNorm of both towers and of
        the decoder, the projection heads, the logit scales, the image [CLS] token, the view and temporal
        embeddings, the decoder's input embedding, mask token and prediction layer, and the masked-LM head's
        transform and bias (not its decoder matrix, which is the frozen word-embedding matrix).
        Called after construction and after `from_pretrained`; selection is structural, never by name.
        """
        self.requires_grad_(False)
        for parameter in self._trainable_parameters():
            parameter.requires_grad_(True)

    def trainable_parameter_counts(self) -> tuple[int, int]:
        """(trainable, total) parameter counts over `named_parameters()` (tied weights counted once)."""
        trainable = total = 0
        for _, parameter in self.named_parameters():
            total += parameter.numel()
            trainable += parameter.numel() if parameter.requires_grad else 0
        return trainable, total

    def trainable_parameters_report(self) -> str:
        trainable, total = self.trainable_parameter_counts()
        return f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}"

    def print_trainable_parameters(self) -> None:
        print(self.trainable_parameters_report())


class AltaModel(AltaPreTrainedModel):
    """Both towers with their adapters, the four projection heads, the logit scales and the view/time embeddings."""

    main_input_name = "input_ids"
    # a pre-training checkpoint also holds the training-only modules
    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^mlm_head\.", r"^image_to_text\.", r"^missing_view_token"]

    def __init__(self, config: AltaConfig):
        super().__init__(config)
        vision_config, text_config = config.vision_config, config.text_config
        self.vision_model = ViTMAEModel._from_config(vision_config)
        self.text_model = BertModel._from_config(text_config, add_pooling_layer=False)
        inject_adapter_in_model(tower_adapter_config(config, "vision"), self.vision_model, adapter_name=ADAPTER_NAME)
        inject_adapter_in_model(tower_adapter_config(config, "text"), self.text_model, adapter_name=ADAPTER_NAME)

        eps = config.projection_layer_norm_eps
        self.visual_projection = AltaProjectionHead(vision_config.hidden_size, config.projection_dim, eps)
        self.visual_local_projection = AltaProjectionHead(vision_config.hidden_size, config.projection_dim, eps)
        self.text_projection = AltaProjectionHead(text_config.hidden_size, config.projection_dim, eps)
        self.text_local_projection = AltaProjectionHead(text_config.hidden_size, config.projection_dim, eps)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        # logs of the local-loss temperatures t1 (region attention), t2 (word similarity), t3 (final score)
        self.local_logit_scales = nn.Parameter(torch.full((3,), config.local_logit_scale_init_value))
        # slot t has view t % 2 (frontal, lateral) and time point t // 2 (current, prior)
        self.view_embedding = nn.Parameter(torch.zeros(2, vision_config.hidden_size))
        self.temporal_embedding = nn.Parameter(torch.zeros(config.num_view_slots // 2, vision_config.hidden_size))
        self.post_init()
        self.apply_trainable_policy()
        keep_frozen_weights_uncast(self)

    def get_input_embeddings(self) -> nn.Module:
        return self.text_model.embeddings.word_embeddings

    def _trainable_parameters(self):
        for tower in (self.vision_model, self.text_model):
            yield from tower_trainable_parameters(tower)
        for head in (self.visual_projection, self.visual_local_projection, self.text_projection, self.text_local_projection):
            yield from head.parameters()
        yield from (self.logit_scale, self.local_logit_scales, self.view_embedding, self.temporal_embedding)
        yield self.vision_model.embeddings.cls_token

    # ----- adapters ---------------------------------------------------------------------------------------------
    def _towers(self):
        return {"vision_model": self.vision_model, "text_model": self.text_model}

    def _set_adapters_enabled(self, enabled: bool) -> None:
        for tower in self._towers().values():
            for module in tower.modules():
                if isinstance(module, BaseTunerLayer):
                    module.enable_adapters(enabled)

    def enable_adapters(self) -> None:
        """Switch the adapters of both towers on (the default)."""
        self._set_adapters_enabled(True)

    def disable_adapters(self) -> None:
        """Switch the adapters of both towers off: the towers then compute their un-adapted outputs."""
        self._set_adapters_enabled(False)

    def get_adapter_state_dict(self, adapter_name: str | None = None, state_dict: dict | None = None) -> dict:
        """The adapter weights of both towers (peft's `get_peft_model_state_dict`), keys prefixed by the tower; taken
        from `state_dict` (a state dict of this model, e.g. a checkpoint's) instead of the model when given."""
        adapter_name = adapter_name or ADAPTER_NAME
        parts = {prefix: None if state_dict is None else
                 {key[len(prefix) + 1 :]: value for key, value in state_dict.items() if key.startswith(prefix + ".")}
                 for prefix in self._towers()}
        return {
            f"{prefix}.{key}": value
            for prefix, tower in self._towers().items()
            for key, value in get_peft_model_state_dict(tower, parts[prefix], adapter_name=adapter_name).items()
        }

    def set_adapter_state_dict(self, state_dict: dict, adapter_name: str | None = None) -> None:
        """Load what `get_adapter_state_dict` returned (peft's `set_peft_model_state_dict`); raises on any mismatch."""
        adapter_name = adapter_name or ADAPTER_NAME
        towers = self._towers()
        unknown = sorted(key for key in state_dict if key.split(".", 1)[0] not in towers)
        if unknown:
            raise ValueError(f"Adapter state dict keys outside the towers {sorted(towers)}: {unknown}")
        expected = self.get_adapter_state_dict(adapter_name)
        missing, extra = sorted(set(expected) - set(state_dict)), sorted(set(state_dict) - set(expected))
        if missing or extra:
            raise ValueError(f"Adapter state dict does not match the model: missing {missing}, unexpected {extra}")
        for prefix, tower in towers.items():
            part = {k[len(prefix) + 1 :]: v for k, v in state_dict.items() if k.startswith(prefix + ".")}
            set_peft_model_state_dict(tower, part, adapter_name=adapter_name)

    # ----- image tower ------------------------------------------------------------------------------------------
    def _check_images(self, pixel_values, name: str, leading: tuple, leading_what: str) -> None:
        vision = self.config.vision_config
        expected = (*leading, vision.num_channels, vision.image_size, vision.image_size)
        what = f"[{leading_what}, {vision.num_channels}, {vision.image_size}, {vision.image_size}]"
        _check_shape(pixel_values, name, expected, what)

    def slot_embeddings(self, num_slots: int) -> torch.Tensor:
        """View + temporal embedding of view slots `0 .. num_slots - 1` (slot t: view t % 2, time point t // 2),
        shape `(num_slots, vision_hidden_size)`; slot 0 is the current frontal view."""
        slots = torch.arange(num_slots, device=self.view_embedding.device)
        return self.view_embedding[slots % 2] + self.temporal_embedding[slots // 2]

    def vision_encoder(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Run the ViT layers and the final LayerNorm on token embeddings `(batch, tokens, hidden)`."""
        hidden_states = embeddings
        for layer in self.vision_model.layers:
            hidden_states = layer(hidden_states, None)
        return self.vision_model.layernorm(hidden_states)

    def vision_hidden_states(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Unmasked image tower output `(B, 1 + N, hidden)` of current frontal images `(B, C, H, W)`."""
        self._check_images(pixel_values, "pixel_values", (None,), "batch")
        embeddings = self.vision_model.embeddings
        positions = embeddings.position_embeddings
        patches = embeddings.patch_embeddings(pixel_values) + positions[:, 1:]
        cls = (embeddings.cls_token + positions[:, :1]).expand(patches.shape[0], -1, -1)
        tokens = torch.cat([cls, patches], dim=1) + self.slot_embeddings(1)[0]
        return self.vision_encoder(tokens)

    @can_return_tuple
    def get_image_features(self, pixel_values: torch.Tensor) -> BaseModelOutputWithPooling:
        """
        Image features of current frontal images `(B, C, H, W)`, as transformers 5's `CLIPModel` returns them:
        `pooler_output` holds the projected, unnormalised [CLS] features `(B, projection_dim)`, `last_hidden_state`
        the image tower output `(B, 1 + N, hidden)`. `return_dict=False` gives the tuple.
        """
        hidden = self.vision_hidden_states(pixel_values)
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=self.visual_projection(hidden[:, 0]))

    def get_image_local_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Local (region) features `(B, N, projection_dim)` of all patches of unmasked images `(B, C, H, W)`."""
        return self.visual_local_projection(self.vision_hidden_states(pixel_values)[:, 1:])

    # ----- text tower -------------------------------------------------------------------------------------------
    def text_hidden_states(self, input_ids, attention_mask=None, embedding_offset=None) -> torch.Tensor:
        """
        Text tower output `(B, L, hidden)`. `embedding_offset` `(B, hidden)` is added to every position after the
        embedding layer (LayerNorm and dropout included) and before the first layer: image-conditioned MLM.
        """
        _check_shape(input_ids, "input_ids", (None, None), "[batch, length]")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        _check_shape(attention_mask, "attention_mask", tuple(input_ids.shape), f"{list(input_ids.shape)} (as input_ids)")
        hidden_states = self.text_model.embeddings(input_ids=input_ids)
        if embedding_offset is not None:
            hidden_states = hidden_states + embedding_offset[:, None, :]
        mask = create_bidirectional_mask(
            config=self.text_model.config, inputs_embeds=hidden_states, attention_mask=attention_mask
        )
        return self.text_model.encoder(hidden_states, attention_mask=mask).last_hidden_state

    @can_return_tuple
    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> BaseModelOutputWithPooling:
        """
        Text features of token ids `(B, L)`, as transformers 5's `CLIPModel` returns them: `pooler_output` holds the
        projected, unnormalised [CLS] features `(B, projection_dim)`, `last_hidden_state` the text tower output
        `(B, L, hidden)`. `return_dict=False` gives the tuple.
        """
        hidden = self.text_hidden_states(input_ids, attention_mask)
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=self.text_projection(hidden[:, 0]))

    def get_text_local_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """Local (word) features `(B, L - 1, projection_dim)` of the tokens after [CLS] (padding included)."""
        return self.text_local_projection(self.text_hidden_states(input_ids, attention_mask)[:, 1:])

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        return_loss: bool = False,
    ) -> AltaOutput:
        if input_ids is None or pixel_values is None:
            raise ValueError("AltaModel.forward needs both input_ids and pixel_values")
        image_embeds = F.normalize(self.get_image_features(pixel_values).pooler_output, dim=-1)
        text_embeds = F.normalize(self.get_text_features(input_ids, attention_mask).pooler_output, dim=-1)
        logit_scale = self.logit_scale.exp()
        logits_per_text = logit_scale * text_embeds @ image_embeds.t()
        loss = None
        if return_loss:
            if image_embeds.shape[0] != text_embeds.shape[0]:
                raise ValueError(
                    f"return_loss needs one report per image: {image_embeds.shape[0]} images, "
                    f"{text_embeds.shape[0]} reports"
                )
            loss = global_contrastive_loss(image_embeds, text_embeds, logit_scale)
        return AltaOutput(
            loss=loss,
            logits_per_image=logits_per_text.t(),
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
        )


def _reconstruction_decoder_config(config: AltaConfig):
    """ViTMAE decoder settings for the super-resolution target: same patch grid, larger patches and image."""
    decoder_config = copy.deepcopy(config.vision_config)
    decoder_config.image_size = config.reconstruction_image_size
    decoder_config.patch_size = config.reconstruction_patch_size
    return decoder_config


class AltaForPreTraining(AltaPreTrainedModel):
    """`AltaModel` (under `alta`) plus the reconstruction decoder, the masked-LM head, the image->text map and the
    missing-view token, with the four ALTA losses."""

    main_input_name = "pixel_values"
    _tied_weights_keys = {
        "mlm_head.predictions.decoder.weight": "alta.text_model.embeddings.word_embeddings.weight",
        "mlm_head.predictions.decoder.bias": "mlm_head.predictions.bias",
    }

    def __init__(self, config: AltaConfig):
        super().__init__(config)
        vision_config, text_config = config.vision_config, config.text_config
        self.alta = AltaModel(config)
        self.decoder = ViTMAEDecoder(_reconstruction_decoder_config(config), num_patches=config.num_patches)
        self.mlm_head = BertOnlyMLMHead(text_config)
        # Official: a frozen, never pre-trained matrix whose values live only in the checkpoint (it requires equal
        # widths; a general Linear holds that case).
        self.image_to_text = nn.Linear(vision_config.hidden_size, text_config.hidden_size)
        # Replaces the patch embeddings of an absent view slot (frozen; the official checkpoint stores fp16 zeros).
        self.missing_view_token = nn.Parameter(torch.zeros(config.num_patches, vision_config.hidden_size))
        self.post_init()
        self.apply_trainable_policy()
        keep_frozen_weights_uncast(self)

    def get_input_embeddings(self) -> nn.Module:
        return self.alta.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.mlm_head.predictions.decoder

    def _trainable_parameters(self):
        yield from self.alta._trainable_parameters()
        decoder = self.decoder
        for module in decoder.modules():
            if isinstance(module, nn.LayerNorm):
                yield from module.parameters()
        yield from decoder.decoder_embed.parameters()
        yield decoder.mask_token
        yield from decoder.decoder_pred.parameters()
        yield from self.mlm_head.predictions.transform.parameters()
        yield self.mlm_head.predictions.bias

    # adapters live in the towers of `self.alta`
    def enable_adapters(self) -> None:
        self.alta.enable_adapters()

    def disable_adapters(self) -> None:
        self.alta.disable_adapters()

    def get_adapter_state_dict(self, adapter_name: str | None = None, state_dict: dict | None = None) -> dict:
        if state_dict is not None:  # this model's keys start with "alta."
            state_dict = {key.removeprefix("alta."): value for key, value in state_dict.items()}
        return self.alta.get_adapter_state_dict(adapter_name, state_dict)

    def set_adapter_state_dict(self, state_dict: dict, adapter_name: str | None = None) -> None:
        self.alta.set_adapter_state_dict(state_dict, adapter_name)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """Reconstruction patches `(B, N, p * p * C)` ((row, column, channel) order inside a patch, e.g.
        `reconstruction_logits`) -> images `(B, C, reconstruction_image_size, reconstruction_image_size)`. With
        `norm_pix_loss` the predictions are per-patch normalised pixels."""
        config = self.config
        patch, channels = config.reconstruction_patch_size, config.vision_config.num_channels
        grid = config.reconstruction_image_size // patch
        _check_shape(patches, "patches", (None, grid * grid, patch * patch * channels),
                     f"[batch, {grid * grid}, {patch * patch * channels}]")
        images = patches.reshape(-1, grid, grid, patch, patch, channels).permute(0, 5, 1, 3, 2, 4)
        return images.reshape(-1, channels, grid * patch, grid * patch)

    def _check_inputs(self, pixel_values, view_mask, target_pixel_values, input_ids, attention_mask,
                      mlm_input_ids, mlm_labels, noise) -> None:
        config = self.config
        slots, size = config.num_view_slots, config.reconstruction_image_size
        _check_shape(pixel_values, "pixel_values", (None, None, None, None, None), f"[batch, {slots}, C, H, W]")
        batch = pixel_values.shape[0]
        self.alta._check_images(pixel_values, "pixel_values", (batch, slots), f"batch, {slots} view slots")
        _check_shape(view_mask, "view_mask", (batch, slots), f"[{batch}, {slots}] (as pixel_values)")
        if view_mask.dtype.is_floating_point or not ((view_mask == 0) | (view_mask == 1)).all():
            raise ValueError("view_mask must hold 0/1 (long or bool) values marking the present view slots")
        if not view_mask[:, 0].bool().all():
            rows = torch.nonzero(~view_mask[:, 0].bool()).flatten().tolist()
            raise ValueError(f"view_mask: slot 0 (the current frontal view) must be present; absent in rows {rows}")
        channels = config.vision_config.num_channels
        _check_shape(
            target_pixel_values, "target_pixel_values", (batch, channels, size, size),
            f"[{batch}, {channels}, {size}, {size}]",
        )
        _check_shape(input_ids, "input_ids", (batch, None), f"[{batch}, length]")
        text_shape = tuple(input_ids.shape)
        for name, tensor in (("attention_mask", attention_mask), ("mlm_input_ids", mlm_input_ids), ("mlm_labels", mlm_labels)):
            _check_shape(tensor, name, text_shape, f"{list(text_shape)} (as input_ids)")
        if noise is not None:
            _check_shape(noise, "noise", (batch, slots, config.num_patches), f"[{batch}, {slots}, {config.num_patches}]")

    def encode_views(self, pixel_values: torch.Tensor, view_mask: torch.Tensor, noise: torch.Tensor | None = None):
        """
        The training image path. Every slot is patch-embedded (absent slots replaced by the missing-view token),
        position-embedded, masked independently (MAE argsort-of-noise; `noise` `(B, S, N)` replays it), given its
        [CLS] token and its view + temporal embedding on every token, and encoded on its own (no cross-slot
        attention).

        Returns:
            `(hidden_states (B, S, 1 + K, D), mask (B, S, N), ids_restore (B, S, N))`.
        """
        batch, slots = pixel_values.shape[:2]
        embeddings = self.alta.vision_model.embeddings
        positions = embeddings.position_embeddings
        patches = embeddings.patch_embeddings(pixel_values.flatten(0, 1))
        present = view_mask.reshape(-1).bool()[:, None, None]
        patches = torch.where(present, patches, self.missing_view_token.to(patches.dtype))
        patches = patches + positions[:, 1:]
        kept, mask, ids_restore = embeddings.random_masking(
            patches, noise.flatten(0, 1) if noise is not None else None
        )
        cls = (embeddings.cls_token + positions[:, :1]).expand(kept.shape[0], -1, -1)
        tokens = torch.cat([cls, kept], dim=1).unflatten(0, (batch, slots))
        tokens = tokens + self.alta.slot_embeddings(slots)[None, :, None, :]
        hidden_states = self.alta.vision_encoder(tokens.flatten(0, 1)).unflatten(0, (batch, slots))
        return hidden_states, mask.unflatten(0, (batch, slots)), ids_restore.unflatten(0, (batch, slots))

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        view_mask: torch.Tensor,
        target_pixel_values: torch.FloatTensor,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        mlm_input_ids: torch.LongTensor,
        mlm_labels: torch.LongTensor,
        noise: torch.FloatTensor | None = None,
        compute_contrastive_losses: bool = True,
        full_work: bool | None = None,
    ) -> AltaForPreTrainingOutput:
        r"""
        pixel_values (`(B, S, C, H, W)`): view slots [current frontal, current lateral, prior frontal, prior lateral];
            slot 0 is the resized reconstruction target (the processor makes it).
        view_mask (`(B, S)`, 0/1 long or bool): present slots; slot 0 must be present.
        target_pixel_values (`(B, C, H2, W2)`): the current frontal at `reconstruction_image_size`.
        input_ids, attention_mask (`(B, L)`): the clean report.
        mlm_input_ids, mlm_labels (`(B, L)`): the corrupted report and its labels (-100 where not corrupted).
        noise (`(B, S, N)`, *optional*): masking noise to replay (lowest `K` values per slot are kept).
        compute_contrastive_losses (`bool`, *optional*, defaults to `True`): `False` leaves the global and local
            contrastive losses to the caller, which computes them over several micro-batches from the returned
            embeddings (cached contrastive accumulation): `global_loss`, `local_loss` and `local_logits_per_image`
            stay `None` and `loss` is the weighted reconstruction + MLM part only.
        full_work (`bool`, *optional*): compute every output at every position, as the official code. Defaults to
            `not self.training`: a training step computes only what its losses read (step_work_alta.py), with the
            same losses and gradients; `mlm_logits` then holds the labelled positions only, `(M, vocab_size)` in
            row-major order of `mlm_labels != -100`, and the text outputs are 0 after the batch's longest report.
        """
        self._check_inputs(
            pixel_values, view_mask, target_pixel_values, input_ids, attention_mask, mlm_input_ids, mlm_labels, noise
        )
        config, alta = self.config, self.alta
        batch = pixel_values.shape[0]
        vision_hidden, mask, ids_restore = self.encode_views(pixel_values, view_mask, noise)

        # global image feature: the mean of the slots' [CLS] outputs, absent slots included (as the official code)
        pooled_image = vision_hidden[:, :, 0].mean(dim=1)
        image_embeds = F.normalize(alta.visual_projection(pooled_image), dim=-1)
        image_local_embeds = alta.visual_local_projection(vision_hidden[:, :, 1:].flatten(1, 2))

        # One text-tower call on [clean; corrupted] (2B rows), the image feature added to the corrupted half only.
        with_mlm = config.mlm_loss_weight != 0
        full_work = not self.training if full_work is None else full_work
        text_length = input_ids.shape[1]
        if not full_work:  # no row reads the trailing all-padding columns
            used = used_text_length(attention_mask, mlm_labels if with_mlm else None)
            input_ids, mlm_input_ids, mlm_labels = input_ids[:, :used], mlm_input_ids[:, :used], mlm_labels[:, :used]
            attention_mask = attention_mask[:, :used]
        if with_mlm:
            image_offset = self.image_to_text(pooled_image)
            offset = torch.cat([torch.zeros_like(image_offset), image_offset])
            text_hidden = alta.text_hidden_states(
                torch.cat([input_ids, mlm_input_ids]), torch.cat([attention_mask, attention_mask]), offset
            )
            text_hidden, mlm_hidden = text_hidden[:batch], text_hidden[batch:]
            if not full_work:  # the loss reads the labelled positions only
                mlm_hidden, mlm_labels = labelled_rows(mlm_hidden, mlm_labels)
            mlm_logits = self.mlm_head(mlm_hidden)
        else:
            text_hidden, mlm_logits = alta.text_hidden_states(input_ids, attention_mask), None
        text_embeds = F.normalize(alta.text_projection(text_hidden[:, 0]), dim=-1)
        # back to the input length: equal shapes on every process for the gathered local loss
        text_local_embeds = pad_to_length(alta.text_local_projection(text_hidden[:, 1:]), text_length - 1)
        text_hidden, attention_mask = pad_to_length(text_hidden, text_length), pad_to_length(attention_mask, text_length)

        logit_scale = alta.logit_scale.exp()
        losses = {}
        if compute_contrastive_losses and config.global_loss_weight != 0:
            losses["global_loss"] = global_contrastive_loss(image_embeds, text_embeds, logit_scale)
        local_logits = None
        if compute_contrastive_losses and config.local_loss_weight != 0:
            # the words of a report: every non-padding token after [CLS] ([SEP] included), as the official cap_lens
            losses["local_loss"], local_logits = local_contrastive_loss(
                image_local_embeds, text_local_embeds, attention_mask[:, 1:], alta.local_logit_scales.exp(),
                return_similarities=True,
            )
        reconstruction_logits = None
        if config.reconstruction_loss_weight != 0:
            reconstruction_logits = self.decoder(vision_hidden[:, 0], ids_restore[:, 0]).logits
            losses["reconstruction_loss"] = reconstruction_loss(
                reconstruction_logits, target_pixel_values, mask[:, 0], config.reconstruction_patch_size,
                norm_pix_loss=config.vision_config.norm_pix_loss,
            )
        if with_mlm:
            losses["mlm_loss"] = masked_lm_loss(mlm_logits, mlm_labels)
        weights = config.loss_weights
        loss = sum(weights[name] * value for name, value in losses.items()) if losses else None

        return AltaForPreTrainingOutput(
            loss=loss,
            **losses,
            logits_per_image=logit_scale * image_embeds @ text_embeds.t(),
            local_logits_per_image=local_logits,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            image_local_embeds=image_local_embeds,
            text_local_embeds=text_local_embeds,
            mlm_logits=mlm_logits,
            reconstruction_logits=reconstruction_logits,
            mask=mask[:, 0],
            ids_restore=ids_restore[:, 0],
            vision_last_hidden_state=vision_hidden,
            text_last_hidden_state=text_hidden,
        )
