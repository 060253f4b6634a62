"""ALTA processor: the image processor and a BERT WordPiece tokenizer, for inference (CLIP-like) and training studies."""

import os
from dataclasses import dataclass

import torch
from transformers import BatchEncoding, BertTokenizer, DataCollatorForLanguageModeling
from transformers.processing_utils import ProcessorMixin

from .image_processing_alta import AltaImageProcessor
from .report_text import shuffle_sentences

__all__ = ["MLM_STRATEGIES", "PRETRAINING_KEYS", "AltaPreTrainingCollator", "AltaProcessor", "load_processor"]

# What `AltaForPreTraining.forward` takes, and therefore what a training sample holds.
PRETRAINING_KEYS = (
    "pixel_values", "view_mask", "target_pixel_values", "input_ids", "attention_mask", "mlm_input_ids", "mlm_labels",
)
# "mask_all": the official corruption (every chosen token becomes [MASK]); "bert": BERT's 80 % [MASK] / 10 % random /
# 10 % unchanged.
MLM_STRATEGIES = {"mask_all": (1.0, 0.0), "bert": (0.8, 0.1)}


class AltaProcessor(ProcessorMixin):
    r"""
    Pairs an [`AltaImageProcessor`] with a BERT WordPiece tokenizer (CXR-BERT's vocabulary for the official model).

    Args:
        image_processor ([`AltaImageProcessor`]): the image processor.
        tokenizer ([`BertTokenizer`]): the tokenizer.
        max_length (`int`, *optional*, defaults to 128): report length (padding and truncation).
        mlm_probability (`float`, *optional*, defaults to 0.5): fraction of non-special tokens chosen for MLM.
        mlm_strategy (`str`, *optional*, defaults to `"mask_all"`): `"mask_all"` (official) or `"bert"` (80/10/10).
        shuffle_sentences (`bool`, *optional*, defaults to `True`): shuffle report sentences on every training draw.
    """

    def __init__(self, image_processor=None, tokenizer=None, max_length: int = 128, mlm_probability: float = 0.5,
                 mlm_strategy: str = "mask_all", shuffle_sentences: bool = True, **kwargs):
        if mlm_strategy not in MLM_STRATEGIES:
            raise ValueError(f"mlm_strategy must be one of {sorted(MLM_STRATEGIES)}, got {mlm_strategy!r}")
        if not 0.0 <= mlm_probability <= 1.0:
            raise ValueError(f"mlm_probability must lie in [0, 1], got {mlm_probability}")
        self.max_length = max_length
        self.mlm_probability = mlm_probability
        self.mlm_strategy = mlm_strategy
        self.shuffle_sentences = shuffle_sentences
        super().__init__(image_processor, tokenizer, **kwargs)
        self._mlm_collator = None

    # ----- inference ---------------------------------------------------------------------------------------------
    def __call__(self, images=None, text=None, return_tensors="pt", padding="max_length", max_length: int | None = None,
                 truncation: bool = True, **kwargs) -> BatchEncoding:
        """
        CLIP-like: `images` -> `pixel_values` `(N, 3, H, W)` (evaluation transform); `text` (a string or a list) ->
        `input_ids`, `attention_mask` (padded to `max_length`, default `self.max_length`, or to the longest with
        `padding="longest"`).
        """
        if images is None and text is None:
            raise ValueError("AltaProcessor needs `images`, `text` or both")
        encoding = BatchEncoding()
        if text is not None:
            # the towers use token type 0 only; leaving the ids out lets `model(**inputs)` work
            kwargs.setdefault("return_token_type_ids", False)
            encoding.update(self.tokenizer(
                text, padding=padding, max_length=max_length or self.max_length, truncation=truncation,
                return_tensors=return_tensors, **kwargs,
            ))
        if images is not None:
            encoding["pixel_values"] = self.image_processor(images, return_tensors=return_tensors)["pixel_values"]
        return encoding

    # ----- training ----------------------------------------------------------------------------------------------
    def preprocess_study(self, frontal, lateral=None, prior_frontal=None, prior_lateral=None, report: str = None,
                         generator: torch.Generator | None = None, augment: bool = True,
                         dropped_views: list | None = None) -> dict[str, torch.Tensor]:
        """
        One training sample (unbatched tensors with exactly the keys of `AltaForPreTraining.forward`).

        All randomness (two augmentation draws, the sentence order, the MLM corruption) comes from `generator`, in
        that order, so a sample is a pure function of its inputs and the generator's seed. `augment=False` gives the
        evaluation geometry and the sentences in order (the MLM corruption still draws from `generator`).
        See [`AltaImageProcessor.preprocess_study`] for the views and `dropped_views`.
        """
        if not isinstance(report, str) or not report.strip():
            raise ValueError(f"a training study needs a non-empty report string, got {report!r}")
        sample = self.image_processor.preprocess_study(
            frontal, lateral, prior_frontal, prior_lateral, generator=generator, augment=augment,
            dropped_views=dropped_views,
        )
        if augment and self.shuffle_sentences:
            report = shuffle_sentences(report, generator)
        encoded = self.tokenizer(
            report, padding="max_length", max_length=self.max_length, truncation=True,
            return_special_tokens_mask=True, return_tensors="pt",
        )
        input_ids = encoded["input_ids"][0]
        mlm_input_ids, mlm_labels = self.corrupt_for_mlm(input_ids, encoded["special_tokens_mask"][0], generator)
        sample.update(input_ids=input_ids, attention_mask=encoded["attention_mask"][0],
                      mlm_input_ids=mlm_input_ids, mlm_labels=mlm_labels)
        return sample

    def corrupt_for_mlm(self, input_ids: torch.Tensor, special_tokens_mask: torch.Tensor,
                        generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """
        MLM corruption with transformers' collator logic, drawing from `generator`: each non-special token is chosen
        with `mlm_probability`; chosen tokens are replaced per `mlm_strategy`; labels are -100 elsewhere.
        """
        collator = self._mlm_collator
        if collator is None:
            mask_prob, random_prob = MLM_STRATEGIES[self.mlm_strategy]
            collator = DataCollatorForLanguageModeling(
                self.tokenizer, mlm_probability=self.mlm_probability, mask_replace_prob=mask_prob,
                random_replace_prob=random_prob,
            )
            self._mlm_collator = collator
        collator.generator = generator  # the collator's own seeding is per process; ours is per sample
        try:
            return collator.torch_mask_tokens(input_ids.clone(), special_tokens_mask.bool())
        finally:
            collator.generator = None

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # Build the two parts from this module's own classes: going through the Auto classes would ask for
        # `trust_remote_code` even when this package is installed and already imported.
        subfolder = kwargs.pop("subfolder", "")
        saved = dict((processor_dict or {}).get("image_processor") or {})
        if saved:
            valid = AltaImageProcessor.valid_kwargs.__annotations__
            image_processor = AltaImageProcessor(**{key: value for key, value in saved.items() if key in valid})
        else:
            image_processor = AltaImageProcessor.from_pretrained(pretrained_model_name_or_path, subfolder=subfolder)
        tokenizer = BertTokenizer.from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
        return [image_processor, tokenizer]


def load_processor(model_dir: str | os.PathLike, **kwargs) -> AltaProcessor:
    """
    The processor of a model folder: the saved processor if the folder has one, otherwise (a converted checkpoint
    holds only tokenizer files) the default image processor with the folder's tokenizer.
    """
    model_dir = os.fspath(model_dir)
    if os.path.isfile(os.path.join(model_dir, "processor_config.json")):
        return AltaProcessor.from_pretrained(model_dir, **kwargs)
    tokenizer_files = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")
    if not any(os.path.isfile(os.path.join(model_dir, name)) for name in tokenizer_files):
        raise FileNotFoundError(f"{model_dir}: no processor_config.json and no tokenizer files (vocab.txt/tokenizer.json)")
    return AltaProcessor(AltaImageProcessor(), BertTokenizer.from_pretrained(model_dir), **kwargs)


@dataclass
class AltaPreTrainingCollator:
    """Stacks training samples (dicts of `PRETRAINING_KEYS`) into a batch; works for a batch of one."""

    keys: tuple[str, ...] = PRETRAINING_KEYS

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        if not samples:
            raise ValueError("cannot collate an empty list of samples")
        for index, sample in enumerate(samples):
            missing = [key for key in self.keys if key not in sample]
            if missing:
                raise ValueError(f"sample {index} lacks {missing}; it has {sorted(sample)}")
        batch = {}
        for key in self.keys:
            shapes = {tuple(sample[key].shape) for sample in samples}
            if len(shapes) > 1:
                raise ValueError(f"samples disagree on the shape of {key!r}: {sorted(shapes)}")
            batch[key] = torch.stack([sample[key] for sample in samples])
        return batch
