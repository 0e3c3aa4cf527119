"""kappaflow.steps.gruneisen figures: the γ parity plot groups structure types (rs, zb, wz,
the rest "other") and marks failures; the α_V(T) plot puts an sg225 user material in the
"other" panel, draws its curve from thermal_expansion.csv, failed ones dashed or absent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ase.build import bulk
from ase.io import write
from helpers import NaNForces, fc2_into, svg_comments

from kappaflow import storage
from kappaflow.calculators import LoadedModel, model_spec
from kappaflow.layout import MATERIAL_FILES
from kappaflow.settings import GruneisenSettings, Phono3pySettings, RelaxSettings
from kappaflow.steps.gruneisen import run_alpha_plot, run_gamma_parity, run_gruneisen
from kappaflow.steps.relax import run_relax

MELTING = 1358.0  # K, Cu
GRUNEISEN = GruneisenSettings(t_min=100, t_max=1500, t_step=200)


# ---------------------------------------------------------------------------- γ parity


def test_gamma_parity_groups_types_and_marks_failures(tmp_path, figures):
    metrics = pd.DataFrame(
        {
            "mp_id": ["a", "b", "c", "d", "e", "f"],
            "structure_type": ["rs", "zb", "sg225", "sg194", "wz", "sg62"],
            "gamma": [1.5, 0.8, 2.2, 1.0, np.nan, 0.5],
            "gamma_DFT": [1.6, 0.7, 2.0, 1.1, 1.2, np.nan],  # f: no DFT γ, not drawn
            "failed": [False, False, False, False, True, False],
            "SRE": [0.1, 0.2, 0.3, 0.4, 2.0, np.nan],
        }
    )
    storage.write_csv(tmp_path / "g.csv", metrics)
    out = tmp_path / "gamma_parity.svg"
    run_gamma_parity(
        metrics_csv=tmp_path / "g.csv", model="emt", out_png=out.with_suffix(".png"), out_svg=out
    )
    texts = svg_comments(out)
    assert {"rs (1)", "zb (1)", "other (2)", "failed (1)"} <= set(texts)
    assert not any(t.startswith("wz (") for t in texts)  # its only material failed
    ax = figures["gamma_parity.svg"].axes[0]
    by_label = {c.get_label(): c.get_offsets() for c in ax.collections}
    assert set(by_label) == {"rs (1)", "zb (1)", "other (2)", "failed (1)"}
    np.testing.assert_allclose(by_label["rs (1)"], [[1.6, 1.5]])
    np.testing.assert_allclose(by_label["zb (1)"], [[0.7, 0.8]])
    np.testing.assert_allclose(by_label["other (2)"], [[2.0, 2.2], [1.1, 1.0]])
    lo = ax.get_xlim()[0]
    assert lo == -0.5
    np.testing.assert_allclose(by_label["failed (1)"], [[1.2, lo]])  # no γ: drawn at the edge
    assert ax.get_title() == "emt: mean SRE$_\\gamma$ 0.600, n=5"
    # the metrics file itself keeps the structure types
    assert list(storage.read_csv(tmp_path / "g.csv")["structure_type"])[2] == "sg225"


# ----------------------------------------------------------------------------- α_V(T)


@pytest.fixture(scope="module")
def grun(tmp_path_factory):
    """EMT Cu given as a user structure (no symm.no: type sg225) through relax -> fc2 ->
    Grüneisen; Ag given dataset-style (symm.no 225: type rs), relaxed with EMT, then a
    model whose forces are NaN at fc2, so the Grüneisen step writes placeholders. (A NaN
    model in the relax itself is avoided: it runs all max_steps before failing, minutes.)"""
    root = tmp_path_factory.mktemp("gruneisen")
    cu = bulk("Cu", "fcc", a=3.59)
    cu.info = {"material_id": "Cu", "fc2_supercell": [2, 2, 2], "fc3_supercell": [2, 2, 2]}
    cu.info["q_mesh"] = [3, 3, 3]
    ag = bulk("Ag", "fcc", a=4.06)
    ag.info = {k: v for k, v in cu.info.items() if k != "material_id"}
    ag.info.update({"mp_id": "mp-124", "symm.no": 225, "name": "Ag"})
    write(root / "s.extxyz", [cu, ag], format="extxyz")
    spec = model_spec("emt")
    nan = LoadedModel(NaNForces(), {"model": "nan", "family": "ase", "device": "cpu"})
    files = {}
    for mid, loaded in (("Cu", None), ("mp-124", nan)):
        f = {k: root / mid / v for k, v in MATERIAL_FILES.items()}
        run_relax(
            structures=root / "s.extxyz",
            material_id=mid,
            model=spec,
            settings=RelaxSettings(fmax=1e-3),
            out_relaxed=f["relaxed"],
        )
        fc2_into(f, spec, Phono3pySettings(), loaded=loaded)
        run_gruneisen(
            relaxed=f["relaxed"],
            fc2_path=f["fc2"],
            model=spec,
            settings=GRUNEISEN,
            relax_settings=RelaxSettings(fmax=1e-3),
            phono3py_settings=Phono3pySettings(),
            out_hdf5=f["gruneisen_hdf5"],
            out_json=f["gruneisen"],
            out_csv=f["thermal_expansion"],
            melting_point=MELTING,
        )
        files[mid] = f
    return root, files


def test_alpha_plot_user_sg225_material_lands_in_other(grun, tmp_path, figures):
    _, files = grun
    cu = storage.read_json(files["Cu"]["gruneisen"])
    ag = storage.read_json(files["mp-124"]["gruneisen"])
    assert cu["status"] == "ok" and cu["material"]["structure_type"] == "sg225"
    assert ag["status"] == "nonfinite_forces"
    assert ag["material"]["structure_type"] == "rs"
    assert storage.read_csv(files["mp-124"]["thermal_expansion"]).empty
    out = tmp_path / "alpha.svg"
    run_alpha_plot(
        curves=[files[m]["thermal_expansion"] for m in ("Cu", "mp-124")],
        records=[files[m]["gruneisen"] for m in ("Cu", "mp-124")],
        model="emt",
        out_png=out.with_suffix(".png"),
        out_svg=out,
    )
    texts = svg_comments(out)
    assert "emt: rs (0 materials)" in texts and "emt: other (1 material)" in texts
    assert "Cu-sg225" in texts
    fig = figures["alpha.svg"]
    assert [ax.get_title() for ax in fig.axes] == [
        "emt: rs (0 materials)",
        "emt: other (1 material)",
    ]
    rs, other = fig.axes
    assert len(rs.lines) == 0  # Ag failed: no curve at all
    curve = storage.read_csv(files["Cu"]["thermal_expansion"])
    below = ~curve["above_melting"].astype(bool).to_numpy()
    assert curve["temperature"][~below].tolist() == [1500]  # only 1500 K > 1358 K
    solid, dotted = other.lines
    assert solid.get_label() == "Cu-sg225" and solid.get_linestyle() == "-"
    np.testing.assert_allclose(solid.get_xdata(), curve["temperature"][below])
    np.testing.assert_allclose(solid.get_ydata(), curve["alpha_V"][below] * 1e6, rtol=1e-12)
    assert dotted.get_linestyle() == ":" and dotted.get_color() == solid.get_color()
    np.testing.assert_allclose(dotted.get_ydata(), curve["alpha_V"][~below] * 1e6)
    # α_V of EMT Cu at 300 K of the size of experiment (≈ 5e-5 /K)
    assert 30 < curve.set_index("temperature").loc[300, "alpha_V"] * 1e6 < 80


def test_alpha_plot_flagged_material_is_dashed(grun, tmp_path, figures):
    """A material flagged by a gate while γ is still written is drawn dashed."""
    _, files = grun
    rec = storage.read_json(files["Cu"]["gruneisen"])
    rec.update(status="broken_symmetry", desc="Cu2-sg225")
    storage.write_json(tmp_path / "flagged.json", rec)
    run_alpha_plot(
        curves=[files["Cu"]["thermal_expansion"]] * 2,
        records=[files["Cu"]["gruneisen"], tmp_path / "flagged.json"],
        model="emt",
        out_png=tmp_path / "a.png",
        out_svg=tmp_path / "a.svg",
    )
    (other,) = figures["a.svg"].axes
    assert other.get_title() == "emt: other (2 materials)"
    styles = {ln.get_label(): ln.get_linestyle() for ln in other.lines if ln.get_label()[0] != "_"}
    assert styles == {"Cu-sg225": "-", "Cu2-sg225": "--"}
