"""Model registry: key resolution, hash checks, lazy imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kappaflow import calculators as calc
from kappaflow import storage
from kappaflow.reference import ChecksumError


def test_builtin_and_path_and_factory_keys():
    assert calc.model_spec("chgnet-0.3.0").family == "chgnet"
    assert calc.model_spec("mace-mp-0-medium").options == {"foundation": "medium"}
    assert calc.model_spec("sevennet-0").family == "sevennet"
    assert calc.model_spec("my.model").options == {"path": "my.model"}
    assert calc.model_spec("ase.calculators.emt:EMT").family == "ase"
    cfg = {"mine": {"family": "mace", "path": "x.model", "sha256": "0" * 64}}
    assert calc.model_spec("mine", cfg).options["sha256"] == "0" * 64


def test_unknown_model_is_named():
    with pytest.raises(calc.ModelError, match="unknown model 'gpt-5'"):
        calc.model_spec("gpt-5")
    with pytest.raises(calc.ModelError, match="family"):
        calc.model_spec("x", {"x": {"family": "orb"}})


def test_ase_factory_with_kwargs():
    spec = calc.model_spec(
        "lj",
        {
            "lj": {
                "family": "ase",
                "factory": "ase.calculators.lj:LennardJones",
                "kwargs": {"sigma": 2.0},
            }
        },
    )
    loaded = calc.load_calculator(spec)
    assert loaded.calculator.parameters.sigma == 2.0
    assert loaded.info["model"] == "lj" and loaded.info["device"] == "cpu"


def test_checkpoint_hash_pinned_or_recorded(tmp_path):
    ck = tmp_path / "model.pt"
    ck.write_bytes(b"not really a pickle")
    rec = calc._check_checkpoint(ck, None, "test")
    assert rec["sha256_source"] == "recorded" and len(rec["checkpoint_sha256"]) == 64
    assert calc._check_checkpoint(ck, rec["checkpoint_sha256"], "test")["sha256_source"] == "pinned"
    with pytest.raises(ChecksumError, match="refusing"):
        calc._check_checkpoint(ck, "f" * 64, "test")


def test_chgnet_with_wrong_pin_is_refused_before_unpickling():
    spec = calc.model_spec("c", {"c": {"family": "chgnet", "version": "0.3.0", "sha256": "a" * 64}})
    pytest.importorskip("chgnet")
    with pytest.raises(ChecksumError):
        calc.load_calculator(spec, device="cpu")


def test_importing_the_package_imports_no_model():
    code = (
        "import sys, kappaflow.calculators, kappaflow.steps, kappaflow.metrics; "
        "print([m for m in ('torch', 'mace', 'chgnet', 'sevenn') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_mace_checkpoint_is_a_local_file_with_its_checksum(tmp_path):
    from kappaflow.calculators import ModelError, mace_checkpoint, model_spec

    ckpt = tmp_path / "my.model"
    ckpt.write_bytes(b"not really a model")
    path, info = mace_checkpoint(model_spec(str(ckpt)), tmp_path)
    assert path == ckpt and info["sha256_source"] == "recorded"
    assert info["checkpoint_sha256"] == storage.sha256_file(ckpt)
    with pytest.raises(ModelError, match="fine-tuning needs a mace model"):
        mace_checkpoint(model_spec("chgnet-0.3.0"), tmp_path)
    with pytest.raises(ModelError, match="not found"):
        mace_checkpoint(model_spec(str(tmp_path / "missing.model")), tmp_path)
