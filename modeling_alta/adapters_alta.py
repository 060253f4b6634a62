"""ALTA's bottleneck adapters as a PEFT method (config, tuner layer, tuner), registered with peft on import.

A bottleneck adapter is `A(z) = up(GELU(down(z)))` with `down: d -> d / reduction_factor` and `up` back to `d`.
Wrapped around a module `f` it is either

- sequential (after attention): `y = f(*args) + A(f(*args))`, or
- parallel (beside an MLP): `y = f(*args) + scale * A(args[parallel_input_index])`.

`up` starts at zero, so an untrained adapter leaves its module's output unchanged.
"""

import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftConfig
from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils import register_peft_method
from peft.utils.peft_types import PeftType
from torch import nn

__all__ = [
    "ADAPTER_NAME",
    "BottleneckAdapterConfig",
    "BottleneckAdapterLayer",
    "BottleneckAdapterModel",
    "ALTA_BOTTLENECK_PEFT_TYPE",
    "DEFAULT_PLACEMENTS",
    "tower_adapter_config",
]

# Part of every adapter weight key (`...mlp.bottleneck_up.alta.weight`): never rename.
ADAPTER_NAME = "alta"

# ALTA's placement, per base-model type: (all targets, the parallel ones), `re.fullmatch` patterns on module names.
# The optional prefix lets a pattern find the tower inside a larger model (`vit.layers.0.mlp`,
# `bert.encoder.layer.0.output`) but never a decoder's `decoder_layers`.
# ViT / ViTMAE: after the attention output projection (before dropout and residual); parallel to the MLP, whose
# only argument is the output of `layernorm_after`.
_VIT_PLACEMENT = (r"(?:.*\.)?layers\.\d+\.(?:attention\.o_proj|mlp)", r"(?:.*\.)?layers\.\d+\.mlp")
# BERT: after BertSelfOutput (= BertAttention's output, residual and LayerNorm included); parallel to BertOutput,
# whose last positional argument is the attention block's output, added after its LayerNorm.
_BERT_PLACEMENT = (r"(?:.*\.)?encoder\.layer\.\d+\.(?:attention\.output|output)",
                   r"(?:.*\.)?encoder\.layer\.\d+\.output")
DEFAULT_PLACEMENTS = {"vit_mae": _VIT_PLACEMENT, "vit": _VIT_PLACEMENT, "bert": _BERT_PLACEMENT,
                      "cxr-bert": _BERT_PLACEMENT}
_TOWER_MODEL_TYPES = {"vision": "vit_mae", "text": "bert"}


def _ensure_peft_type(value: str) -> PeftType:
    """The `PeftType` member `value`, added to the closed enum if missing (`register_peft_method` requires one)."""
    if value in PeftType.__members__:
        return PeftType[value]
    member = str.__new__(PeftType, value)
    member._name_ = member._value_ = value
    member.__objclass__ = PeftType
    PeftType._member_map_[value] = member
    PeftType._value2member_map_[value] = member
    PeftType._member_names_.append(value)
    type.__setattr__(PeftType, value, member)
    return member


ALTA_BOTTLENECK_PEFT_TYPE = _ensure_peft_type("ALTA_BOTTLENECK")


def _matches(patterns, key: str) -> bool:
    """peft's `target_modules` semantics: a string is a full regex match, a list matches names or name suffixes."""
    if not patterns:
        return False
    if isinstance(patterns, str):
        return re.fullmatch(patterns, key) is not None
    return key in patterns or any(key.endswith(f".{p}") for p in patterns)


@dataclass
class BottleneckAdapterConfig(PeftConfig):
    """
    Configuration of the bottleneck adapter PEFT method (`peft_type="ALTA_BOTTLENECK"`).

    Args:
        target_modules (`list[str]` or `str`, *optional*):
            Modules to wrap (a list of names/suffixes, or one regex matched against the full module name). When
            left out, ALTA's placement for the base model's `model_type` is used (`DEFAULT_PLACEMENTS`: `vit_mae`,
            `vit`, `bert`, `cxr-bert`): sequential after the attention output, parallel to the MLP.
        parallel_modules (`list[str]` or `str`, *optional*):
            The subset of `target_modules` that get the parallel form; the others are sequential. Defaults with
            `target_modules`.
        exclude_modules (`list[str]` or `str`, *optional*):
            Modules never wrapped.
        reduction_factor (`int`, defaults to 4):
            Bottleneck width = module output width / `reduction_factor`.
        parallel_scale (`float`, defaults to 0.5):
            Scale of a parallel adapter's output.
        parallel_input_index (`int`, defaults to -1):
            Which positional argument of a parallel module the adapter reads (-1: the last one, which is the MLP
            input for ViTMAE's MLP and the attention output for BERT's `BertOutput`).
        hidden_size (`int`, *optional*):
            Module output width; read from the wrapped module's last `nn.Linear` when not given.
        init_zero_up (`bool`, defaults to True):
            Zero-initialise the up-projection so that a new adapter is the identity.
    """

    target_modules: list[str] | str | None = field(default=None, metadata={"help": "Modules to wrap."})
    parallel_modules: list[str] | str | None = field(default=None, metadata={"help": "Targets in parallel form."})
    exclude_modules: list[str] | str | None = field(default=None, metadata={"help": "Modules never wrapped."})
    reduction_factor: int = field(default=4, metadata={"help": "Width divisor of the bottleneck."})
    parallel_scale: float = field(default=0.5, metadata={"help": "Scale of a parallel adapter's output."})
    parallel_input_index: int = field(default=-1, metadata={"help": "Positional argument a parallel adapter reads."})
    hidden_size: int | None = field(default=None, metadata={"help": "Module output width (inferred if None)."})
    init_zero_up: bool = field(default=True, metadata={"help": "Zero-initialise the up-projection."})
    target_parameters: list[str] | None = field(default=None, metadata={"help": "Unsupported; must stay None."})
    modules_to_save: list[str] | None = field(default=None, metadata={"help": "Extra modules saved with adapters."})

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = ALTA_BOTTLENECK_PEFT_TYPE
        if self.target_parameters:
            raise ValueError("BottleneckAdapterConfig wraps modules, not parameters: leave target_parameters empty")
        if self.reduction_factor < 1:
            raise ValueError(f"reduction_factor must be >= 1, got {self.reduction_factor}")


class BottleneckAdapterLayer(nn.Module, BaseTunerLayer):
    """Wraps one module (`base_layer`) with bottleneck adapters keyed by adapter name."""

    adapter_layer_names = ("bottleneck_down", "bottleneck_up")
    other_param_names = ("bottleneck_parallel", "bottleneck_scale")

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: BottleneckAdapterConfig, parallel: bool):
        super().__init__()
        self.base_layer = base_layer
        self.bottleneck_down = nn.ModuleDict()
        self.bottleneck_up = nn.ModuleDict()
        self.bottleneck_parallel: dict[str, bool] = {}
        self.bottleneck_scale: dict[str, float] = {}
        self.parallel_input_index = config.parallel_input_index
        self._active_adapter = adapter_name
        self.merged_adapters = []
        self.update_layer(adapter_name, config, parallel)

    def _output_width(self) -> int:
        linears = [m for m in self.get_base_layer().modules() if hasattr(m, "out_features")]
        if not linears:
            raise TypeError(
                f"Cannot infer the output width of {type(self.get_base_layer()).__name__}: set hidden_size"
            )
        return linears[-1].out_features

    def update_layer(self, adapter_name: str, config: BottleneckAdapterConfig, parallel: bool) -> None:
        width = config.hidden_size or self._output_width()
        if width % config.reduction_factor:
            raise ValueError(f"Output width {width} is not divisible by reduction_factor {config.reduction_factor}")
        bottleneck = width // config.reduction_factor
        weight = self.get_base_layer().parameters().__next__()
        down = nn.Linear(width, bottleneck, device=weight.device, dtype=weight.dtype)
        up = nn.Linear(bottleneck, width, device=weight.device, dtype=weight.dtype)
        if weight.device.type != "meta":
            with torch.no_grad():
                nn.init.xavier_uniform_(down.weight)
                nn.init.zeros_(down.bias)
                if config.init_zero_up:
                    nn.init.zeros_(up.weight)
                    nn.init.zeros_(up.bias)
        self.bottleneck_down[adapter_name] = down
        self.bottleneck_up[adapter_name] = up
        self.bottleneck_parallel[adapter_name] = parallel
        self.bottleneck_scale[adapter_name] = config.parallel_scale if parallel else 1.0
        self.set_adapter(self.active_adapters)

    def _bottleneck(self, adapter_name: str, x: torch.Tensor) -> torch.Tensor:
        down = self.bottleneck_down[adapter_name]
        out = self.bottleneck_up[adapter_name](F.gelu(down(x.to(down.weight.dtype))))
        return out.to(x.dtype)

    def forward(self, *args, **kwargs):
        result = self.base_layer(*args, **kwargs)
        if self.disable_adapters:
            return result
        for adapter_name in self.active_adapters:
            if adapter_name not in self.bottleneck_down:
                continue
            if self.bottleneck_parallel[adapter_name]:
                adapter_input = args[self.parallel_input_index]
                result = result + self.bottleneck_scale[adapter_name] * self._bottleneck(adapter_name, adapter_input)
            else:
                result = result + self._bottleneck(adapter_name, result)
        return result

    def __repr__(self) -> str:
        return "bottleneck." + super().__repr__()


class BottleneckAdapterModel(BaseTuner):
    """Injects `BottleneckAdapterLayer`s (use `peft.inject_adapter_in_model` or `peft.get_peft_model`)."""

    prefix: str = "bottleneck_"
    tuner_layer_cls = BottleneckAdapterLayer
    target_module_mapping: dict = {}

    def _prepare_adapter_config(self, peft_config: BottleneckAdapterConfig, model_config: dict):
        # As peft's own methods do: default targets per `model_type` when the user gives none.
        if peft_config.target_modules is None:
            model_type = model_config.get("model_type")
            if model_type not in DEFAULT_PLACEMENTS:
                raise ValueError(
                    f"BottleneckAdapterConfig has no default placement for model_type {model_type!r} (it has one for "
                    f"{', '.join(sorted(DEFAULT_PLACEMENTS))}): set target_modules and parallel_modules"
                )
            peft_config.target_modules, parallel = DEFAULT_PLACEMENTS[model_type]
            if peft_config.parallel_modules is None:
                peft_config.parallel_modules = parallel
        return peft_config

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        parallel = _matches(peft_config.parallel_modules, current_key)
        # duck-typed: a second copy of this module (Hub remote code) may have created the layer
        if hasattr(target, "bottleneck_down") and hasattr(target, "update_layer"):
            target.update_layer(adapter_name, peft_config, parallel)
            return
        new_module = BottleneckAdapterLayer(target, adapter_name, peft_config, parallel)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)


# Idempotent: the installed package and a Hub remote-code copy may both import this file in one process.
if ALTA_BOTTLENECK_PEFT_TYPE not in PEFT_TYPE_TO_TUNER_MAPPING:
    register_peft_method(
        name="alta_bottleneck",
        config_cls=BottleneckAdapterConfig,
        model_cls=BottleneckAdapterModel,
        prefix=BottleneckAdapterModel.prefix,
    )


def tower_adapter_config(config, tower: str) -> PeftConfig:
    """The PEFT config of one tower (`"vision"` or `"text"`) for `config.adapter_type` (an `AltaConfig`)."""
    if tower not in _TOWER_MODEL_TYPES:
        raise ValueError(f"tower must be 'vision' or 'text', got {tower!r}")
    if config.adapter_type == "bottleneck":
        targets, parallel = DEFAULT_PLACEMENTS[_TOWER_MODEL_TYPES[tower]]
        return BottleneckAdapterConfig(
            target_modules=targets,
            parallel_modules=parallel,
            reduction_factor=config.adapter_reduction_factor,
            parallel_scale=config.adapter_parallel_scale,
        )
    if config.adapter_type == "lora":
        targets = config.lora_vision_target_modules if tower == "vision" else config.lora_text_target_modules
        return LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(targets),
        )
    raise ValueError(f"adapter_type must be 'bottleneck' or 'lora', got {config.adapter_type!r}")
