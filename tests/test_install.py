"""The installed distribution: a wheel holds nothing but `alta_hf`, every console command answers `--help`, and
`alta-eval` run from outside the repository, on the installed files only, gives the checkout's figures."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from alta_hf.cli import COMMANDS, run
from alta_hf.evaluation.cli import main as eval_main
from tests.eval_stand_ins import make_rsna
from tests.factories import save_tiny_alta_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`pip wheel .` then `pip install --target` of that wheel (no dependencies: they are this interpreter's)."""
    work = tmp_path_factory.mktemp("install")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(work / "dist"),
                    str(REPO)], check=True, timeout=600)
    (wheel,) = (work / "dist").glob("alta_hf-*.whl")
    target = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target),
                    str(wheel)], check=True, timeout=600)
    return wheel, target


def test_the_wheel_installs_one_top_level_name(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        names = archive.namelist()
    assert tops == {"alta_hf", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    # the design card's folders, inside the one package; the checkout's entry scripts are not installed
    for folder in ("modeling_alta", "processing", "dataset_scripts", "training", "evaluation"):
        assert f"alta_hf/{folder}/__init__.py" in names
    assert "alta_hf/modeling_alta/modeling_alta.py" in names
    assert "alta_hf/dataset_scripts/chexpert_class_prompts.json" in names
    assert not {"alta_hf/train.py", "alta_hf/eval.py", "alta_hf/setup.py"} & set(names)
    with zipfile.ZipFile(wheel) as archive:
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert {line.split(" = ")[0] for line in entry_points.splitlines() if " = " in line} == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_answers_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        run(command, ["--help"])
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_alta_eval_from_outside_the_repository(installed, tmp_path, golden_dir):
    _, target = installed
    model = save_tiny_alta_folder(tmp_path / "alta-tiny", golden_dir / "BiomedVLP-CXR-BERT-specialized")
    data = make_rsna(tmp_path / "rsna")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}
    where = subprocess.run([sys.executable, "-c", "import alta_hf.evaluation.cli as m; print(m.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(target)  # the installed copy, not the checkout
    script = target / "bin" / "alta-eval"
    assert script.is_file()
    arguments = ["--model", str(model), "--task", "rsna", "--data", str(data), "--device", "cpu", "--quiet",
                 "--no-cache"]
    completed = subprocess.run([sys.executable, str(script), *arguments, "--output-dir", str(tmp_path / "out")],
                               cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    installed_metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]
    checkout_metrics = eval_main([*arguments, "--output-dir", str(tmp_path / "checkout")])["metrics"]
    assert installed_metrics == pytest.approx(checkout_metrics, abs=1e-9)
    assert 0.0 <= installed_metrics["roc_auc"] <= 1.0
