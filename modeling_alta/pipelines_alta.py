"""ALTA's `transformers.pipeline` tasks, saved as custom pipelines beside the model (`config.custom_pipelines`).

    pipeline("zero-shot-image-classification", model=DIR, trust_remote_code=True)
    pipeline("image-feature-extraction", model=DIR, trust_remote_code=True)
    pipeline("feature-extraction", model=DIR, trust_remote_code=True)        # reports

They are the stock pipelines with two changes: images go to the folder's image processor as they are given (the
ALTA image processor reads paths of JPEG/PNG/DICOM files, PIL images and arrays, where the stock pipelines would
open paths with PIL and fail on DICOM), and the features are ALTA's (its projected embeddings as the pooled output).
The folder needs the processor files next to the model (the converters, `train.py` and the demo write them).
"""

from transformers.pipelines.feature_extraction import FeatureExtractionPipeline
from transformers.pipelines.image_feature_extraction import ImageFeatureExtractionPipeline
from transformers.pipelines.zero_shot_image_classification import ZeroShotImageClassificationPipeline

__all__ = [
    "AltaImageFeatureExtractionPipeline",
    "AltaTextFeatureExtractionPipeline",
    "AltaZeroShotImageClassificationPipeline",
    "custom_pipelines_config",
]


class _AltaPipelineMixin:
    def check_model_type(self, supported_models) -> None:
        # The stock check logs an error for every model outside transformers' own mappings; ALTA is checked by
        # what the pipelines call instead (duck-typed: the model may be a Hub remote-code copy).
        if not (hasattr(self.model, "get_image_features") and hasattr(self.model, "get_text_features")):
            raise TypeError(f"{type(self.model).__name__} is not an ALTA model (AltaModel)")


class AltaZeroShotImageClassificationPipeline(_AltaPipelineMixin, ZeroShotImageClassificationPipeline):
    """
    Zero-shot classification of radiographs: `pipe(image, candidate_labels=[...], hypothesis_template="{}")`, scores
    = softmax over labels of ALTA's `logits_per_image`. `image` is a path (JPEG/PNG/DICOM), a PIL image or an array
    (or a list of them). Radiology prompts are usually whole sentences, so the default template is `"{}"` (the label
    as it is), not CLIP's "This is a photo of {}.".
    """

    def preprocess(self, image, candidate_labels=None, hypothesis_template="{}", timeout=None, tokenizer_kwargs=None):
        inputs = self.image_processor(images=[image], return_tensors="pt").to(self.dtype)
        inputs["candidate_labels"] = candidate_labels
        sequences = [hypothesis_template.format(label) for label in candidate_labels]
        text_kwargs = {"padding": True, "truncation": True, **(tokenizer_kwargs or {}), "return_token_type_ids": False}
        inputs["text_inputs"] = [self.tokenizer(sequences, return_tensors="pt", **text_kwargs)]
        return inputs


class AltaImageFeatureExtractionPipeline(_AltaPipelineMixin, ImageFeatureExtractionPipeline):
    """
    Image features: `pipe(image)` gives the image tower's last hidden state `[1, 1 + N, hidden]` (as the stock
    pipeline); `pipe(image, pool=True)` gives ALTA's projected image embedding `[1, projection_dim]` (the
    `pooler_output` of the model's `get_image_features`, not normalised). `return_tensors=True` returns tensors
    instead of lists.
    """

    def preprocess(self, image, timeout=None, **image_processor_kwargs):
        return self.image_processor(images=[image], return_tensors="pt", **image_processor_kwargs).to(self.dtype)

    def _forward(self, model_inputs):
        return self.model.get_image_features(model_inputs["pixel_values"], return_dict=True)


class AltaTextFeatureExtractionPipeline(_AltaPipelineMixin, FeatureExtractionPipeline):
    """
    Report features: `pipe(text)` gives the text tower's last hidden state `[1, L, hidden]` (as the stock pipeline);
    `pipe(text, pool=True)` gives ALTA's projected text embedding `[1, projection_dim]` (the `pooler_output` of
    `get_text_features`).
    """

    def _sanitize_parameters(self, truncation=None, tokenize_kwargs=None, return_tensors=None, pool=None, **kwargs):
        preprocess, forward, postprocess = super()._sanitize_parameters(truncation, tokenize_kwargs, return_tensors)
        if pool is not None:
            postprocess["pool"] = pool
        return preprocess, forward, postprocess

    def preprocess(self, inputs, **tokenize_kwargs):
        tokenize_kwargs = {"truncation": True, **tokenize_kwargs, "return_token_type_ids": False}
        return self.tokenizer(inputs, return_tensors="pt", **tokenize_kwargs)

    def _forward(self, model_inputs):
        return self.model.get_text_features(
            model_inputs["input_ids"], model_inputs.get("attention_mask"), return_dict=True
        )

    def postprocess(self, model_outputs, return_tensors=False, pool=False):
        outputs = model_outputs["pooler_output" if pool else "last_hidden_state"]
        return outputs if return_tensors else outputs.tolist()


_TASKS = {
    "zero-shot-image-classification": (AltaZeroShotImageClassificationPipeline, "multimodal"),
    "image-feature-extraction": (AltaImageFeatureExtractionPipeline, "image"),
    "feature-extraction": (AltaTextFeatureExtractionPipeline, "text"),
}


def custom_pipelines_config() -> dict:
    """The `config.custom_pipelines` entry that makes `pipeline(task, model=DIR, trust_remote_code=True)` use these
    classes from the folder's copy of this file (the inference model, `AutoModel`, is loaded for every task)."""
    module = __name__.rsplit(".", 1)[-1]
    return {
        task: {"impl": f"{module}.{cls.__name__}", "pt": ["AutoModel"], "tf": [], "type": kind}
        for task, (cls, kind) in _TASKS.items()
    }
