"""`get_image_features` / `get_text_features` follow the installed transformers' CLIPModel convention, and
`evaluation.feature_tensor` gives the bare features on either convention."""

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from alta_hf.evaluation import feature_tensor
from alta_hf.modeling_alta import AltaModel
from tests.factories import perturb_parameters_, tiny_alta_config


@pytest.fixture(scope="module")
def alta():
    torch.manual_seed(0)
    return perturb_parameters_(AltaModel(tiny_alta_config())).eval()


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 16},
        projection_dim=16,
    )
    return CLIPModel(config).eval()


def _inputs(image_size: int):
    generator = torch.Generator().manual_seed(1)
    return (torch.randn(2, 3, image_size, image_size, generator=generator),
            torch.randint(5, 99, (2, 7), generator=generator), torch.ones(2, 7, dtype=torch.long))


@pytest.mark.parametrize("return_dict", [True, False])
def test_feature_methods_return_what_clip_returns(alta, clip, return_dict):
    pixels, ids, mask = _inputs(224)
    clip_pixels, clip_ids, _ = _inputs(32)
    with torch.no_grad():
        ours = (alta.get_image_features(pixels, return_dict=return_dict),
                alta.get_text_features(ids, mask, return_dict=return_dict))
        theirs = (clip.get_image_features(clip_pixels, return_dict=return_dict),
                  clip.get_text_features(clip_ids, return_dict=return_dict))
    assert [type(output) for output in ours] == [type(output) for output in theirs]
    if return_dict:
        assert type(ours[0]).__name__ == "BaseModelOutputWithPooling"


def test_pooler_output_is_the_projected_cls_and_forward_uses_it(alta):
    pixels, ids, mask = _inputs(224)
    with torch.no_grad():
        image, text = alta.get_image_features(pixels), alta.get_text_features(ids, mask)
        hidden_image, hidden_text = alta.vision_hidden_states(pixels), alta.text_hidden_states(ids, mask)
        output = alta(input_ids=ids, attention_mask=mask, pixel_values=pixels)
    assert torch.equal(image.last_hidden_state, hidden_image)
    assert torch.equal(image.pooler_output, alta.visual_projection(hidden_image[:, 0]))
    assert torch.equal(text.last_hidden_state, hidden_text)
    assert torch.equal(text.pooler_output, alta.text_projection(hidden_text[:, 0]))
    torch.testing.assert_close(output.image_embeds, torch.nn.functional.normalize(image.pooler_output, dim=-1))


def test_feature_tensor_on_every_convention(alta, clip):
    pixels, _, _ = _inputs(224)
    with torch.no_grad():
        pooled = alta.get_image_features(pixels).pooler_output
        as_tuple = alta.get_image_features(pixels, return_dict=False)
        clip_output = clip.get_image_features(_inputs(32)[0])
    assert torch.equal(feature_tensor(alta.get_image_features(pixels)), pooled)
    assert torch.equal(feature_tensor(as_tuple), pooled)
    assert feature_tensor(pooled) is pooled  # a model that returns the bare tensor (older transformers)
    assert torch.equal(feature_tensor(clip_output), clip_output.pooler_output)
    with pytest.raises(TypeError, match="dict"):
        feature_tensor({"features": pooled})
