"""Everything between a user's files and ALTA's tensors: radiograph decoding, image/text processing, MLM corruption."""

from .augmentation_alta import AugmentationDraw, AugmentationSettings, apply_augmentation, draw_augmentation
from .image_processing_alta import ALTA_IMAGE_MEAN, ALTA_IMAGE_STD, STUDY_VIEWS, AltaImageProcessor
from .processing_alta import MLM_STRATEGIES, PRETRAINING_KEYS, AltaPreTrainingCollator, AltaProcessor, load_processor
from .radiograph_io import RadiographLoadError, load_radiograph
from .report_text import clean_report_gloria, shuffle_sentences, split_sentences

AltaImageProcessor.register_for_auto_class("AutoImageProcessor")
AltaProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "ALTA_IMAGE_MEAN",
    "ALTA_IMAGE_STD",
    "MLM_STRATEGIES",
    "PRETRAINING_KEYS",
    "STUDY_VIEWS",
    "AltaImageProcessor",
    "AltaPreTrainingCollator",
    "AltaProcessor",
    "AugmentationDraw",
    "AugmentationSettings",
    "RadiographLoadError",
    "apply_augmentation",
    "clean_report_gloria",
    "draw_augmentation",
    "load_processor",
    "load_radiograph",
    "shuffle_sentences",
    "split_sentences",
]
