"""`AltaForImageClassification`: ALTA's image tower (with its adapters) and a linear head on the [CLS] output, for
fine-tuning and linear probing on labelled radiographs (MRM's CheXpert / RSNA / NIH ChestX-ray14 protocol).

    model = AltaForImageClassification.from_pretrained(ALTA_DIR, num_labels=5, id2label=..., label2id=...,
                                                       problem_type="multi_label_classification",
                                                       classification_mode="linear_probe")

`from_pretrained` of an `AltaModel` or `AltaForPreTraining` folder keeps the image tower, its adapters, the image
[CLS] token and the view/time embeddings, drops the text tower and the training-only modules, and adds a fresh head.
`config.classification_mode` picks what trains: `"linear_probe"` (the head only), `"adapters"` (ALTA's trainable set
of the image tower plus the head) or `"full"` (everything). A saved classifier folder works with
`pipeline("image-classification", model=DIR, trust_remote_code=True)` (paths of JPEG/PNG/DICOM files, PIL images).
"""

import torch
from peft import inject_adapter_in_model
from torch import nn
from transformers import PreTrainedModel, ViTMAEModel
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.pipelines.image_classification import ImageClassificationPipeline

from .adapters_alta import ADAPTER_NAME, tower_adapter_config
from .modeling_alta import AltaModel, AltaPreTrainedModel, tower_trainable_parameters

__all__ = ["CLASSIFICATION_MODES", "AltaForImageClassification", "AltaImageClassificationPipeline"]

CLASSIFICATION_MODES = ("linear_probe", "adapters", "full")
DEFAULT_CLASSIFICATION_MODE = "adapters"


class AltaForImageClassification(AltaPreTrainedModel):
    """The image tower of `AltaModel` (same module names, so its weights load as they are) + `classifier`."""

    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # an ALTA folder also holds the text tower, the other heads and (pre-training folders) the training modules
    _keys_to_ignore_on_load_unexpected = [
        r"^(alta\.)?(text_model|text_projection|text_local_projection|visual_projection|visual_local_projection)\.",
        r"^(alta\.)?(logit_scale|local_logit_scales)$",
        r"^(decoder|mlm_head|image_to_text)\.", r"^missing_view_token$",
    ]

    def __init__(self, config, classification_mode: str | None = None, classifier_dropout: float | None = None):
        # both are config entries (saved with the model); as arguments they reach `from_pretrained(DIR, ...)` of an
        # ALTA folder, whose config class does not declare them
        if classification_mode is not None:
            config.classification_mode = classification_mode
        if classifier_dropout is not None:
            config.classifier_dropout = classifier_dropout
        super().__init__(config)
        mode = self.classification_mode
        if mode not in CLASSIFICATION_MODES:
            raise ValueError(f"classification_mode must be one of {CLASSIFICATION_MODES}, got {mode!r}")
        vision_config = config.vision_config
        self.vision_model = ViTMAEModel._from_config(vision_config)
        inject_adapter_in_model(tower_adapter_config(config, "vision"), self.vision_model, adapter_name=ADAPTER_NAME)
        self.view_embedding = nn.Parameter(torch.zeros(2, vision_config.hidden_size))
        self.temporal_embedding = nn.Parameter(torch.zeros(config.num_view_slots // 2, vision_config.hidden_size))
        self.dropout = nn.Dropout(getattr(config, "classifier_dropout", None) or 0.0)
        self.classifier = nn.Linear(vision_config.hidden_size, config.num_labels)
        self.post_init()
        self.apply_trainable_policy()

    # The image path is AltaModel's, on the same attributes (one implementation of the unmasked tower).
    _check_images = AltaModel._check_images
    slot_embeddings = AltaModel.slot_embeddings
    vision_encoder = AltaModel.vision_encoder
    vision_hidden_states = AltaModel.vision_hidden_states

    @property
    def classification_mode(self) -> str:
        return getattr(self.config, "classification_mode", None) or DEFAULT_CLASSIFICATION_MODE

    def set_classification_mode(self, mode: str) -> None:
        """Switch what trains (`CLASSIFICATION_MODES`); the mode is saved in the config."""
        if mode not in CLASSIFICATION_MODES:
            raise ValueError(f"classification_mode must be one of {CLASSIFICATION_MODES}, got {mode!r}")
        self.config.classification_mode = mode
        self.apply_trainable_policy()

    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self:  # a fresh tower starts without view/time information, as AltaModel
            init.zeros_(module.view_embedding)
            init.zeros_(module.temporal_embedding)

    def _trainable_parameters(self):
        yield from self.classifier.parameters()
        if self.classification_mode == "linear_probe":
            return
        if self.classification_mode == "full":
            yield from (p for name, p in self.named_parameters() if not name.startswith("classifier."))
            return
        # ALTA's trainable set restricted to the image tower (as AltaModel._trainable_parameters)
        yield from tower_trainable_parameters(self.vision_model)
        yield from (self.view_embedding, self.temporal_embedding, self.vision_model.embeddings.cls_token)

    def apply_trainable_policy(self) -> None:
        super().apply_trainable_policy()
        if self.classification_mode == "full":  # the fixed sin-cos position table never trains
            self.vision_model.embeddings.position_embeddings.requires_grad_(False)

    def save_pretrained(self, save_directory, *args, **kwargs):
        kwargs.setdefault("save_original_format", False)
        if self._auto_class is not None:
            # an ALTA folder's config maps AutoModel & co. to classes this folder cannot load (no text tower)
            config_map = (getattr(self.config, "auto_map", None) or {}).get("AutoConfig")
            self.config.auto_map = {"AutoConfig": config_map} if config_map else {}
            module = type(self).__module__.rsplit(".", 1)[-1]
            self.config.custom_pipelines = {
                "image-classification": {
                    "impl": f"{module}.{AltaImageClassificationPipeline.__name__}",
                    "pt": ["AutoModelForImageClassification"], "tf": [], "type": "image",
                }
            }
        return PreTrainedModel.save_pretrained(self, save_directory, *args, **kwargs)

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        **kwargs,
    ) -> ImageClassifierOutput:
        r"""
        pixel_values (`(B, C, H, W)`): current frontal images (the processor's `pixel_values`).
        labels (*optional*): `(B,)` class ids (single-label) or `(B, num_labels)` 0/1 floats (multi-label); the
            loss follows `config.problem_type` (inferred from the labels when unset, as in transformers).
        """
        hidden = self.vision_hidden_states(pixel_values)
        logits = self.classifier(self.dropout(hidden[:, 0]))
        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=(hidden,) if output_hidden_states else None)


class AltaImageClassificationPipeline(ImageClassificationPipeline):
    """The stock image-classification pipeline, with images handed to the folder's image processor as given (it reads
    JPEG/PNG/DICOM paths, PIL images and arrays; the stock one opens paths with PIL and fails on DICOM)."""

    def check_model_type(self, supported_models) -> None:
        if not (hasattr(self.model, "vision_hidden_states") and hasattr(self.model, "classifier")):
            raise TypeError(f"{type(self.model).__name__} is not an ALTA classifier (AltaForImageClassification)")

    def preprocess(self, image, timeout=None):
        return self.image_processor(images=[image], return_tensors="pt").to(self.dtype)
