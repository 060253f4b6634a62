"""AltaForImageClassification: built from saved ALTA folders (tower weights kept), the three training modes, the loss
of both problem types, `pipeline("image-classification")` on real PNG/DICOM files, and the transformers Trainer."""

import json

import pytest
import torch
from transformers import AutoModelForImageClassification, Trainer, TrainingArguments, pipeline

from alta_hf.modeling_alta import AltaForImageClassification, AltaForPreTraining
from alta_hf.processing import load_processor, load_radiograph
from tests.factories import perturb_parameters_, save_tiny_alta_folder, tiny_alta_config

LABELS = ["atelectasis", "effusion", "normal"]
PNG = "images/nih_cxr14/00000001_000.png"
DICOM = "dicom/nema_wg04_RG1_UNCR_cr_chest_pa.dcm"


@pytest.fixture(scope="module")
def alta_folder(tmp_path_factory, golden_dir):
    return save_tiny_alta_folder(tmp_path_factory.mktemp("alta") / "alta-tiny", golden_dir / "BiomedVLP-CXR-BERT-specialized")


@pytest.fixture(scope="module")
def source(alta_folder):
    return AltaForPreTraining.from_pretrained(alta_folder).alta.eval()


def _label_maps():
    return {"id2label": dict(enumerate(LABELS)), "label2id": {label: i for i, label in enumerate(LABELS)}}


def _check_tower_equals_source(model, source):
    source_state, state = source.state_dict(), model.state_dict()
    assert sorted(k for k in state if k not in source_state) == ["classifier.bias", "classifier.weight"]
    for key, value in state.items():
        if not key.startswith("classifier."):
            assert torch.equal(value, source_state[key]), key
    pixel_values = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.eval().vision_hidden_states(pixel_values), source.vision_hidden_states(pixel_values))


def test_head_loads_from_pretraining_and_inference_folders(alta_folder, source, tmp_path):
    from_pretraining = AltaForImageClassification.from_pretrained(alta_folder, num_labels=3, **_label_maps())
    _check_tower_equals_source(from_pretraining, source)
    assert from_pretraining.config.id2label[1] == "effusion" and from_pretraining.classifier.out_features == 3
    # the trained ALTA adapters are really there (perturbed: non-zero up-projections)
    assert any("bottleneck_up" in k and v.abs().sum() > 0 for k, v in from_pretraining.state_dict().items())

    source.save_pretrained(tmp_path / "inference")
    from_inference = AutoModelForImageClassification.from_pretrained(tmp_path / "inference", num_labels=3)
    assert type(from_inference).__name__ == "AltaForImageClassification"
    _check_tower_equals_source(from_inference, source)

    # a saved classifier reloads identically, through the Auto class with remote code, without the ALTA auto_map
    from_pretraining.save_pretrained(tmp_path / "classifier")
    config = json.loads((tmp_path / "classifier" / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModelForImageClassification"}
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "classifier", trust_remote_code=True)
    assert reloaded.state_dict().keys() == from_pretraining.state_dict().keys()
    assert all(torch.equal(v, reloaded.state_dict()[k]) for k, v in from_pretraining.state_dict().items())


def _expected_trainable(model, mode):
    names = {name for name, _ in model.named_parameters()}
    head = {"classifier.weight", "classifier.bias"}
    if mode == "linear_probe":
        return head
    if mode == "full":
        return names - {"vision_model.embeddings.position_embeddings"}
    alta_set = {n for n in names if ".bottleneck_" in n or "layernorm" in n}
    return head | alta_set | {"view_embedding", "temporal_embedding", "vision_model.embeddings.cls_token"}


@pytest.mark.parametrize("mode", ["linear_probe", "adapters", "full"])
def test_each_mode_trains_exactly_its_parameter_set(mode):
    torch.manual_seed(0)
    model = perturb_parameters_(AltaForImageClassification(tiny_alta_config(num_labels=3), classification_mode=mode))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == _expected_trainable(model, mode)
    if mode == "adapters":  # no frozen base weight of the tower slipped in
        assert not any("base_layer" in n or "patch_embeddings" in n for n in trainable)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    loss = model(torch.randn(2, 3, 224, 224), labels=torch.tensor([0, 2])).loss
    loss.backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    # a key bias adds one constant to all scores of a query, which softmax ignores: its gradient is zero up to
    # rounding (exactly zero on some CPUs' kernels, about 1e-9 on others)
    key_biases = {n for n in trainable if n.endswith("k_proj.bias")}
    assert changed - key_biases == trainable - key_biases
    for name, p in model.named_parameters():
        if name in key_biases:
            assert (p - before[name]).abs().max() < 1e-6, name
    # the mode is part of the config; switching it re-applies the policy
    model.set_classification_mode("linear_probe")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}
    with pytest.raises(ValueError, match="classification_mode"):
        model.set_classification_mode("head")


def test_loss_follows_the_problem_type():
    torch.manual_seed(0)
    pixel_values = torch.randn(2, 3, 224, 224)
    single = AltaForImageClassification(tiny_alta_config(num_labels=3, problem_type="single_label_classification"))
    out = single(pixel_values, labels=torch.tensor([0, 2]))
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 2])))
    multi = AltaForImageClassification(tiny_alta_config(num_labels=3, problem_type="multi_label_classification"))
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    out = multi(pixel_values, labels=targets)
    assert torch.allclose(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets))


def test_image_classification_pipeline_on_png_and_dicom(alta_folder, tmp_path, realdata_dir):
    model = AltaForImageClassification.from_pretrained(
        alta_folder, num_labels=3, problem_type="multi_label_classification", **_label_maps()
    )
    perturb_parameters_(model.classifier, std=1.0)
    out = tmp_path / "classifier"
    model.save_pretrained(out)
    processor = load_processor(alta_folder)
    processor.save_pretrained(out)
    classify = pipeline("image-classification", model=str(out), trust_remote_code=True)
    for path in (realdata_dir / PNG, realdata_dir / DICOM):
        result = classify(str(path))
        with torch.no_grad():
            expected = model.eval()(processor(images=load_radiograph(path))["pixel_values"]).logits[0].sigmoid()
        got = torch.tensor([next(r["score"] for r in result if r["label"] == label) for label in LABELS])
        assert torch.allclose(got, expected, atol=1e-5), (path, got, expected)


def test_trainer_trains_the_head(tmp_path):
    torch.manual_seed(0)
    model = AltaForImageClassification(tiny_alta_config(num_labels=2), classification_mode="linear_probe")
    generator = torch.Generator().manual_seed(0)
    rows = [{"pixel_values": torch.randn(3, 224, 224, generator=generator), "labels": i % 2} for i in range(4)]
    frozen = model.vision_model.layers[0].mlp.base_layer.fc1.weight.detach().clone()
    head = model.classifier.weight.detach().clone()
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, learning_rate=0.1,
        report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no", dataloader_num_workers=0,
    )
    result = Trainer(model=model, args=args, train_dataset=rows).train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(model.classifier.weight, head)
    assert torch.equal(model.vision_model.layers[0].mlp.base_layer.fc1.weight, frozen)


_CHILD = """
import json, sys
for name in ("modeling_alta", "processing"):
    sys.modules[name] = None  # the repository's packages are not importable: remote code only
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification

folder = sys.argv[1]
model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True, num_labels=3,
                                                        classification_mode="adapters").eval()
inputs = load_file(sys.argv[2])
with torch.no_grad():
    hidden = model.vision_hidden_states(inputs["pixel_values"])
print(json.dumps({"class": type(model).__module__ + "." + type(model).__name__,
                  "tower": torch.equal(hidden, inputs["expected"]), "head": model.classifier.out_features,
                  "trainable": list(model.trainable_parameter_counts())}))
"""


def test_alta_folder_gives_a_classifier_as_remote_code_in_a_fresh_process(alta_folder, source, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    from safetensors.torch import save_file

    folder = tmp_path / "elsewhere" / "alta-tiny"
    shutil.copytree(alta_folder, folder)
    assert (folder / "classification_alta.py").is_file()
    pixel_values = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        save_file({"pixel_values": pixel_values, "expected": source.vision_hidden_states(pixel_values)},
                  str(tmp_path / "inputs.safetensors"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "hf_modules"))
    result = subprocess.run([sys.executable, "-I", "-c", _CHILD, str(folder), str(tmp_path / "inputs.safetensors")],
                            cwd=tmp_path / "elsewhere", env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["class"].startswith("transformers_modules.") and report["class"].endswith(".AltaForImageClassification")
    assert report["tower"] and report["head"] == 3
    local = AltaForImageClassification.from_pretrained(alta_folder, num_labels=3, classification_mode="adapters")
    assert report["trainable"] == list(local.trainable_parameter_counts())
