"""ALTA as a Hugging Face model: configuration, models, the bottleneck-adapter PEFT method, losses, converters.

Importing the package registers the classes with the Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForPreTraining`, `AutoModelForImageClassification`) and marks them for `auto_map`, so that saved folders load with `trust_remote_code=True`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, AutoModelForPreTraining

from .adapters_alta import ADAPTER_NAME, BottleneckAdapterConfig, BottleneckAdapterLayer, BottleneckAdapterModel
from .classification_alta import CLASSIFICATION_MODES, AltaForImageClassification, AltaImageClassificationPipeline
from .configuration_alta import AltaConfig
from .modeling_alta import (
    AltaForPreTraining,
    AltaForPreTrainingOutput,
    AltaModel,
    AltaOutput,
    AltaPreTrainedModel,
    AltaProjectionHead,
)

__all__ = [
    "ADAPTER_NAME",
    "CLASSIFICATION_MODES",
    "AltaConfig",
    "AltaForImageClassification",
    "AltaImageClassificationPipeline",
    "AltaForPreTraining",
    "AltaForPreTrainingOutput",
    "AltaModel",
    "AltaOutput",
    "AltaPreTrainedModel",
    "AltaProjectionHead",
    "BottleneckAdapterConfig",
    "BottleneckAdapterLayer",
    "BottleneckAdapterModel",
]

AutoConfig.register(AltaConfig.model_type, AltaConfig, exist_ok=True)
AutoModel.register(AltaConfig, AltaModel, exist_ok=True)
AutoModelForPreTraining.register(AltaConfig, AltaForPreTraining, exist_ok=True)
AutoModelForImageClassification.register(AltaConfig, AltaForImageClassification, exist_ok=True)
AltaConfig.register_for_auto_class()
AltaModel.register_for_auto_class("AutoModel")
AltaForPreTraining.register_for_auto_class("AutoModelForPreTraining")
AltaForImageClassification.register_for_auto_class("AutoModelForImageClassification")
