"""Checkpoints are pickles: one is loaded only when its sha256 is known (issue 13, class 2).

Offline and cheap: no model package is imported in this process. The "checkpoints" are
pickles whose payload writes a marker file when unpickled, so "its code did not run" is
an observable; one subprocess shows that the payload does run once a file is trusted and
unpickled, so the refusals are what keeps it from running.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kappaflow import calculators as calc
from kappaflow import storage
from kappaflow.calculators import (
    UNPINNED,
    CheckpointHashError,
    ModelError,
    load_calculator,
    mace_checkpoint,
    model_spec,
    verified_checkpoint,
)
from kappaflow.reference import ChecksumError

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this runs ``exec``: it writes ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def _payload_bytes(marker: Path) -> bytes:
    return pickle.dumps(_Payload(marker))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _spec(path: Path, **opts) -> calc.ModelSpec:
    return model_spec("mine", {"mine": {"family": "mace", "path": str(path), **opts}})


@pytest.fixture
def foundation(tmp_path, monkeypatch):
    """A foundation name ``test-0`` whose download URL is a local file:// URL."""
    served = tmp_path / "server" / "test-0.model"
    served.parent.mkdir()
    served.write_bytes(b"weights of test-0 " * 100)
    url = served.as_uri()
    monkeypatch.setitem(calc.MACE_FOUNDATIONS, "test-0", (url, None))
    spec = model_spec("t0", {"t0": {"family": "mace", "foundation": "test-0"}})
    return spec, served, url, tmp_path / "models"


_PLANTED = """
import json, sys
from pathlib import Path
from kappaflow.calculators import ModelError, load_calculator, model_spec
cache = Path(sys.argv[1])
out = {}
for key in ("mace-mp-0-medium", "mace-omat-0-medium"):
    try:
        load_calculator(model_spec(key), device="cpu", model_dir=cache)
        out[key] = ["loaded", ""]
    except ModelError as exc:
        out[key] = [type(exc).__name__, str(exc)]
out["imported"] = [m for m in ("torch", "mace", "chgnet", "sevenn") if m in sys.modules]
out["marker_after_refusals"] = Path(sys.argv[2]).exists()
# positive control: the same bytes, trusted explicitly, are unpickled and their code runs
from kappaflow import calculators as C
spec = model_spec("p", {"p": {"family": "mace", "path": sys.argv[3], "trust_unpinned": True}})
try:
    C._unpickle(C.verified_checkpoint(spec, sys.argv[3]).data, "cpu")
except Exception as exc:  # the payload is not a model: whatever torch says afterwards
    out["control_error"] = type(exc).__name__
out["marker_after_control"] = Path(sys.argv[2]).exists()
print("RESULT " + json.dumps(out))
"""


def test_planted_file_at_cached_foundation_path_is_refused_and_its_code_never_runs(tmp_path):
    """The reported attack: a pickle planted where kappaflow caches a foundation file."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch not installed")
    marker = tmp_path / "marker"
    cache = tmp_path / "models"
    cache.mkdir()
    payload = _payload_bytes(marker)
    for name in ("2023-12-03-mace-128-L1_epoch-199.model", "mace-omat-0-medium.model"):
        (cache / name).write_bytes(payload)  # exactly where load_calculator looks
    control = tmp_path / "control.model"
    control.write_bytes(payload)
    proc = subprocess.run(
        [sys.executable, "-c", _PLANTED, str(cache), str(marker), str(control)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    # pinned name: the planted bytes differ from the pin
    kind, msg = out["mace-mp-0-medium"]
    assert kind == "CheckpointHashError"
    assert calc.MACE_FOUNDATIONS["medium"][1] in msg and _sha(payload) in msg
    assert "refusing to load it" in msg and "to let kappaflow download it again" in msg
    # unpinned name: no download record beside the file
    kind, msg = out["mace-omat-0-medium"]
    assert kind == "ModelError"
    assert "no record of downloading it" in msg and "mace-omat-0-medium.model" in msg
    assert "trust_unpinned: true" in msg and "this runs code from that file" in msg
    # refused before any model package (or torch) was imported, and nothing ran
    assert out["imported"] == []
    assert out["marker_after_refusals"] is False
    # the control: trusted and unpickled, the same bytes do run their code
    assert out["marker_after_control"] is True
    assert marker.read_text() == "code ran"


def test_local_model_without_sha256_is_refused_naming_the_ways_to_trust_it(tmp_path):
    marker = tmp_path / "marker"
    ck = tmp_path / "my.model"
    ck.write_bytes(_payload_bytes(marker))
    for call in (
        lambda: mace_checkpoint(model_spec(str(ck)), tmp_path),
        lambda: load_calculator(model_spec(str(ck)), device="cpu", model_dir=tmp_path),
    ):
        with pytest.raises(ModelError) as exc:
            call()
        msg = str(exc.value)
        assert f"model {str(ck)!r}" in msg and f"the sha256 of {ck} is not known" in msg
        assert "'sha256: <hex>'" in msg and "'trust_unpinned: true'" in msg
        assert "(this runs code from that file)" in msg
    assert not marker.exists()


@pytest.mark.parametrize(
    ("family", "opts"), [("chgnet", {"version": "0.3.0"}), ("sevennet", {"name": "7net-0"})]
)
def test_custom_chgnet_and_sevennet_paths_need_a_hash_too(tmp_path, family, opts):
    marker = tmp_path / "marker"
    ck = tmp_path / "custom.pth"
    ck.write_bytes(_payload_bytes(marker))
    spec = model_spec("c", {"c": {"family": family, "path": str(ck), **opts}})
    with pytest.raises(ModelError, match="trust_unpinned: true"):
        load_calculator(spec, device="cpu")
    assert not marker.exists()


def test_trust_unpinned_loads_the_file_and_records_its_hash(tmp_path):
    data = b"a model I built myself " * 50
    ck = tmp_path / "mine.model"
    ck.write_bytes(data)
    path, info = mace_checkpoint(_spec(ck, trust_unpinned=True), tmp_path / "models")
    assert info == {
        "checkpoint": str(ck),
        "checkpoint_sha256": _sha(data),
        "sha256_source": UNPINNED,
    }
    assert UNPINNED == "unpinned (trusted by config)"
    # mace's own programs get a private copy of the verified bytes
    assert path != ck and path.name == ck.name and path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    calc._remove_private_copies()  # what happens at interpreter exit
    assert not path.exists() and not path.parent.exists()


def test_configured_sha256_is_checked_and_a_wrong_one_refused(tmp_path):
    data = b"weights " * 100
    ck = tmp_path / "mine.model"
    ck.write_bytes(data)
    _, info = mace_checkpoint(_spec(ck, sha256=_sha(data).upper()), tmp_path)
    assert info["sha256_source"] == "config" and info["checkpoint_sha256"] == _sha(data)
    wrong = "f" * 64
    with pytest.raises(CheckpointHashError) as exc:
        mace_checkpoint(_spec(ck, sha256=wrong), tmp_path)
    assert isinstance(exc.value, ChecksumError) and isinstance(exc.value, ModelError)
    msg = str(exc.value)
    assert "model 'mine'" in msg and _sha(data) in msg and wrong in msg
    assert "model_definitions mine: sha256" in msg
    # trust_unpinned never overrides a hash that is known and differs
    with pytest.raises(CheckpointHashError):
        mace_checkpoint(_spec(ck, sha256=wrong, trust_unpinned=True), tmp_path)


@pytest.mark.parametrize(
    ("opts", "match"),
    [
        ({"sha256": "abc"}, "sha256 must be 64 hexadecimal digits"),
        ({"sha256": 12}, "sha256 must be 64 hexadecimal digits"),
        ({"trust_unpinned": "yes"}, "trust_unpinned must be true or false"),
        ({"sha256_from": 3}, "sha256_from must be the path of a training record"),
    ],
)
def test_malformed_trust_options_fail_when_the_model_is_resolved(opts, match):
    with pytest.raises(ModelError, match=match):
        model_spec("m", {"m": {"family": "mace", "path": "x.model", **opts}})


def test_download_is_recorded_then_trusted_and_a_tampered_cache_file_refused(foundation):
    spec, served, url, cache = foundation
    data = served.read_bytes()
    path, info = mace_checkpoint(spec, cache)
    cached = cache / "test-0.model"
    record = cache / "test-0.model.kappaflow.json"
    assert path.read_bytes() == data and cached.read_bytes() == data
    assert sorted(p.name for p in cache.iterdir()) == [cached.name, record.name]  # no temp
    sidecar = storage.read_json(record)
    assert sidecar["url"] == url and sidecar["sha256"] == _sha(data)
    assert sidecar["size"] == len(data) and sidecar["downloaded"].endswith("+00:00")
    assert info["sha256_source"] == "download record" and info["sha256_record"] == str(record)
    assert info["checkpoint_sha256"] == _sha(data) and info["foundation_url"] == url

    served.unlink()  # offline from now on: the cached file is trusted by its record
    _, info = mace_checkpoint(spec, cache)
    assert info["sha256_source"] == "download record" and info["checkpoint"] == str(cached)

    cached.write_bytes(data[:-1] + b"!")  # changed after the download
    with pytest.raises(CheckpointHashError, match="changed after kappaflow downloaded it"):
        mace_checkpoint(spec, cache)

    cached.write_bytes(data)
    record.unlink()  # a file in the cache that kappaflow did not download
    with pytest.raises(ModelError, match="no record of downloading it") as exc:
        mace_checkpoint(spec, cache)
    assert "Delete it to let kappaflow download it again" in str(exc.value)

    storage.write_json(record, {"url": "https://elsewhere/test-0.model", "sha256": _sha(data)})
    with pytest.raises(ModelError, match=r"download record .* is of 'https://elsewhere"):
        mace_checkpoint(spec, cache)


def test_a_download_that_differs_from_its_pin_writes_nothing(foundation, monkeypatch):
    spec, _, url, cache = foundation
    monkeypatch.setitem(calc.FOUNDATION_SHA256, url, "a" * 64)
    with pytest.raises(CheckpointHashError, match="nothing was written"):
        mace_checkpoint(spec, cache)
    assert not cache.exists() or not any(cache.iterdir())


def test_a_pinned_download_is_trusted_by_its_pin(foundation, monkeypatch):
    spec, served, url, cache = foundation
    monkeypatch.setitem(calc.FOUNDATION_SHA256, url, _sha(served.read_bytes()))
    _, info = mace_checkpoint(spec, cache)
    assert info["sha256_source"] == "pinned"
    assert (cache / "test-0.model.kappaflow.json").exists()  # recorded all the same
    (cache / "test-0.model.kappaflow.json").unlink()
    assert mace_checkpoint(spec, cache)[1]["sha256_source"] == "pinned"  # the pin suffices


def test_a_configured_sha256_decides_for_a_foundation_download_too(foundation):
    _, served, _, cache = foundation
    entry = {"family": "mace", "foundation": "test-0", "sha256": _sha(served.read_bytes())}
    _, info = mace_checkpoint(model_spec("t0", {"t0": entry}), cache)
    assert info["sha256_source"] == "config" and "sha256_record" not in info
    (cache / "test-0.model").unlink()
    entry["sha256"] = "b" * 64
    with pytest.raises(CheckpointHashError, match="nothing was written"):
        mace_checkpoint(model_spec("t0", {"t0": entry}), cache)
    assert not (cache / "test-0.model").exists()


def test_offline_message_says_how_to_get_the_file_safely(foundation):
    spec, served, url, cache = foundation
    served.unlink()
    with pytest.raises(ModelError) as exc:
        mace_checkpoint(spec, cache)
    msg = str(exc.value)
    assert f"cannot download {url}" in msg
    assert "download that file yourself" in msg and "check its sha256" in msg
    assert "path: <file>, sha256: <hex>" in msg
    assert "place the file" not in msg and "put into the model cache by hand is not loaded" in msg
    assert not cache.exists() or not any(cache.iterdir())


def test_fine_tuned_model_is_checked_against_its_training_record(tmp_path):
    """`sha256_from: training.json` (the record the training step writes, read with
    kappaflow.storage) says which file the fine-tuned model must be."""
    data = b"fine-tuned weights " * 64
    model = tmp_path / "finetune" / "ft" / "ft.model"
    model.parent.mkdir(parents=True)
    model.write_bytes(data)
    record = model.parent / "training.json"
    storage.write_json(record, {"model": "ft", "model_file": str(model), "sha256": _sha(data)})
    spec = _spec(model, sha256_from=str(record))
    path, info = mace_checkpoint(spec, tmp_path)
    assert path.read_bytes() == data
    assert info["sha256_source"] == "training record" and info["sha256_record"] == str(record)

    storage.write_json(record, {"model_file": str(model), "sha256": _sha(b"another model")})
    with pytest.raises(CheckpointHashError, match="re-run the training step"):
        mace_checkpoint(spec, tmp_path)
    storage.write_json(record, {"model_file": str(model)})
    with pytest.raises(ModelError, match="has no valid 'sha256' entry"):
        mace_checkpoint(spec, tmp_path)
    storage.write_json(record, {"model_file": "other/x.model", "sha256": _sha(data)})
    with pytest.raises(ModelError, match=r"describes other/x\.model"):
        mace_checkpoint(spec, tmp_path)
    record.unlink()
    with pytest.raises(ModelError, match=r"sha256_from .* not found.* run it first"):
        mace_checkpoint(spec, tmp_path)


def test_swapping_the_file_after_the_check_cannot_change_what_is_loaded(tmp_path, monkeypatch):
    """The hash step replaces the file on disk right after it was read: what comes back
    is still the bytes that were hashed; and bytes that failed the check stay refused even
    when the file on disk is good by the time anyone looks."""
    good = b"the genuine model " * 64
    marker = tmp_path / "marker"
    evil = _payload_bytes(marker)
    ck = tmp_path / "m.model"
    real_hash = calc._sha256_bytes

    def hash_then_swap(to: bytes):
        def run(data: bytes) -> str:
            digest = real_hash(data)
            ck.write_bytes(to)
            return digest

        return run

    ck.write_bytes(good)
    monkeypatch.setattr(calc, "_sha256_bytes", hash_then_swap(evil))
    verified = verified_checkpoint(_spec(ck, sha256=_sha(good)), ck)
    assert verified.data == good and ck.read_bytes() == evil
    ck.write_bytes(good)
    path, _ = mace_checkpoint(_spec(ck, sha256=_sha(good)), tmp_path)
    assert path.read_bytes() == good and ck.read_bytes() == evil

    ck.write_bytes(evil)
    monkeypatch.setattr(calc, "_sha256_bytes", hash_then_swap(good))
    with pytest.raises(CheckpointHashError):
        verified_checkpoint(_spec(ck, sha256=_sha(good)), ck)
    assert ck.read_bytes() == good and not marker.exists()


def _wheel_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)  # finds the package without importing it
    if spec is None:
        pytest.skip(f"{package} not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        pytest.skip(f"{path} not in this {package} install")
    return path


def test_a_copy_of_a_pinned_file_is_trusted_wherever_it_lies(tmp_path):
    wheel = _wheel_file("chgnet", "pretrained/0.3.0/chgnet_0.3.0_e29f68s314m37.pth.tar")
    copy = tmp_path / "elsewhere.pth.tar"
    copy.write_bytes(wheel.read_bytes())
    spec = model_spec("c", {"c": {"family": "chgnet", "path": str(copy)}})
    info = verified_checkpoint(spec, copy).info
    assert info["sha256_source"] == "pinned"
    assert info["checkpoint_sha256"] == calc.PINNED_SHA256[wheel.name]
    assert info["pinned_as"] == wheel.name


def test_an_unpinned_file_shipped_in_a_model_wheel_is_checked_against_its_record():
    """Files inside an installed model package (e.g. SevenNet l3i5, CHGNet 0.2.0) are
    checked against the wheel's RECORD: as trusted as the package's own code."""
    path = _wheel_file("sevenn", "pretrained_potentials/SevenNet_l3i5/checkpoint_l3i5.pth")
    spec = model_spec("l3", {"l3": {"family": "sevennet", "name": "7net-l3i5"}})
    info = verified_checkpoint(spec, path, package="sevenn").info
    assert info["sha256_source"] == "package record" and info["sha256_record"] == "sevenn RECORD"
    assert info["checkpoint_sha256"] == storage.sha256_file(path)
    # without the RECORD it would be an unknown file
    with pytest.raises(ModelError, match="is not known"):
        verified_checkpoint(spec, path)


def test_foundation_table_pins_are_well_formed():
    """URLs are mace-torch 0.3.16's (compared with the installed mace in
    tests/test_calculators.py); every built-in foundation name is in the table."""
    names = {e["foundation"] for e in calc.BUILTIN_MODELS.values() if "foundation" in e}
    assert names <= set(calc.MACE_FOUNDATIONS)
    for url, sha in calc.MACE_FOUNDATIONS.values():
        assert url.startswith("https://github.com/ACEsuit/mace-mp/releases/download/")
        assert sha is None or calc._HEX64.match(sha)
    assert calc.MACE_FOUNDATIONS["medium-omat-0"][1] is None  # not established: see docs
    assert len(calc.FOUNDATION_SHA256) == 5
    assert os.path.basename(calc.MACE_FOUNDATIONS["medium"][0]) == (
        "2023-12-03-mace-128-L1_epoch-199.model"
    )
