"""A freshly built model is initialised as MAE/ALTA intend (transformers 5.24 leaves ViTMAE's tables at zero)."""

import numpy as np
import torch

from alta_hf.modeling_alta import AltaForPreTraining
from tests.factories import tiny_alta_config, tiny_pretraining_batch


def _mae_sincos_table(dim: int, grid: int) -> np.ndarray:
    """MAE's fixed 2-D table written out: the first half encodes the column, the second the row; [CLS] row zero."""

    def one_axis(positions, width):
        omega = 1.0 / 10000 ** (np.arange(width // 2) / (width / 2.0))
        angles = np.outer(positions, omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    rows, columns = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    table = np.concatenate([one_axis(columns.ravel(), dim // 2), one_axis(rows.ravel(), dim // 2)], axis=1)
    return np.concatenate([np.zeros((1, dim)), table])


def test_fresh_vision_embeddings_are_initialised():
    model = AltaForPreTraining(tiny_alta_config())
    embeddings = model.alta.vision_model.embeddings
    np.testing.assert_allclose(embeddings.position_embeddings[0].detach().numpy(), _mae_sincos_table(64, 14), atol=1e-6)
    assert not embeddings.position_embeddings.requires_grad
    assert 0.015 < embeddings.cls_token.std().item() < 0.025
    weight = embeddings.patch_embeddings.projection.weight
    bound = (6 / (weight[0].numel() + weight.shape[0])) ** 0.5  # xavier-uniform over the flattened kernel
    assert weight.abs().max().item() <= bound and weight.std().item() > bound / 3


def test_fresh_model_with_absent_views_has_sane_gradients():
    """All-zero token rows (absent slots of a model whose tables are zero) made LayerNorm gradients explode (1e21)."""
    config = tiny_alta_config()
    model = AltaForPreTraining(config).train()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    batch = tiny_pretraining_batch(config, batch_size=3, seed=1)
    batch["view_mask"][:, 2:] = 0
    model(**batch).loss.backward()
    largest = max(parameter.grad.abs().max().item() for parameter in model.parameters() if parameter.grad is not None)
    assert np.isfinite(largest) and largest < 1e3


def test_loaded_weights_are_not_reinitialised(tmp_path):
    model = AltaForPreTraining(tiny_alta_config())
    with torch.no_grad():
        model.alta.vision_model.embeddings.position_embeddings.mul_(2.0)
        model.alta.vision_model.embeddings.cls_token.fill_(0.5)
    model.save_pretrained(tmp_path)
    loaded = AltaForPreTraining.from_pretrained(tmp_path)
    for name in ("position_embeddings", "cls_token"):
        assert torch.equal(getattr(loaded.alta.vision_model.embeddings, name), getattr(model.alta.vision_model.embeddings, name))
