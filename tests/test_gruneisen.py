"""Grüneisen parameters, γ(T) weighting, K_T and α_V (PROTOCOL §7): known answers."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.io import write
from helpers import fc2_into, fc3_into

from kappaflow import gruneisen as gr
from kappaflow import storage
from kappaflow.calculators import LoadedModel, model_spec
from kappaflow.gruneisen_checks import qha_thermal_expansion
from kappaflow.layout import MATERIAL_FILES
from kappaflow.metrics import score_gamma, srd_gamma, srd_gamma_signed, srme_gamma
from kappaflow.reference import FILES, dft_gamma_csv_from_metrics
from kappaflow.settings import GruneisenSettings, Phono3pySettings, RelaxSettings, SettingsError
from kappaflow.steps.common import material_of
from kappaflow.steps.gruneisen import run_gruneisen, run_gruneisen_fc3_check, run_gruneisen_metrics
from kappaflow.steps.relax import run_relax

KB = 1.380649e-23
R = KB * gr.AVOGADRO


# ------------------------------------------------------------------ weighting and units


def test_weighted_gamma_hand_computed():
    cv = np.array([[[0.0, 1.0], [3.0, 0.0]]])  # (nT=1, nq=2, nb=2)
    gamma = np.array([[np.nan, 2.0], [-1.0, 50.0]])  # NaN/large γ on zero-weight modes
    mode, g = gr.weighted_gamma(cv, gamma)
    assert mode[0].tolist() == [[0.0, 0.5], [-0.75, 0.0]]
    assert g[0] == pytest.approx(-0.25, abs=1e-15)
    assert mode.sum() == pytest.approx(g[0])


def test_mode_heat_capacity_units_and_exclusions():
    # one q-point of weight 1 and one of weight 3; x = hν/kT = 1 for the 6.25 THz mode at 300 K
    units_x1 = 1.0 * KB * 300.0 / 6.62607015e-34 / 1e12  # THz
    freqs = np.array([[0.0, 0.0, 5e-4], [units_x1, 0.5e-3, -1.0]])
    exclude = np.zeros_like(freqs, dtype=bool)
    exclude[0, :3] = True  # Γ acoustic
    cv = gr.mode_heat_capacity(freqs, np.array([1.0, 3.0]), [300.0], exclude)
    expected = R * np.e / (np.e - 1) ** 2 * 3 / 4  # Einstein C at x = 1, weight 3/4
    assert cv[0, 1, 0] == pytest.approx(expected, rel=1e-5)  # phonopy rounds its constants
    # excluded: Γ acoustic, below 1e-3 THz, imaginary
    assert cv[0, 0].tolist() == [0.0, 0.0, 0.0]
    assert cv[0, 1, 1:].tolist() == [0.0, 0.0]


def test_heat_capacity_classical_limit_is_R_per_mode():
    freqs = np.full((1, 3), 0.01)
    cv = gr.mode_heat_capacity(freqs, np.array([1.0]), [2000.0])
    assert gr.heat_capacity_total(cv)[0] == pytest.approx(3 * R, rel=1e-5)


def test_thermal_expansion_units_hand_computed():
    """One classical mode (c = R per mole of primitive cells), γ = 2, K = 100 GPa,
    V_prim = 20 Å^3: α_V = γ R / (K V_prim N_A) = 2 k_B / (K V_prim)."""
    cv = gr.mode_heat_capacity(np.array([[0.01]]), np.array([1.0]), [2000.0])
    alpha = gr.thermal_expansion(cv, np.array([[2.0]]), 100e9, 20.0)
    assert alpha[0] == pytest.approx(2 * KB / (100e9 * 20e-30), rel=1e-5)
    assert alpha[0] == pytest.approx(1.380649e-5, rel=1e-5)


def test_eos_fit_recovers_bulk_modulus():
    from phonopy.qha.eos import get_eos

    v0, b0 = 40.0, 100.0 / 160.21766208  # 100 GPa in eV/Å^3
    v = v0 * (1 + np.array([-0.03, -0.02, -0.01, 0, 0.01, 0.02, 0.03]))
    e = get_eos("vinet")(v, [-10.0, b0, 4.5, v0])
    fit = gr.fit_eos(v, e, n_atoms=2, eos="vinet")
    assert fit.bulk_modulus_GPa == pytest.approx(100.0, rel=1e-5)
    assert fit.V0 == pytest.approx(v0, rel=1e-8)
    assert fit.rms_residual_meV_per_atom < 1e-6


# ------------------------------------------------------------------------- metrics


def test_srd_gamma_on_absolute_values_and_signed():
    # PROTOCOL §7: CHGNet NaCl −3.90 vs DFT +1.70 gives SRE 0.79 (on |γ|)
    assert srd_gamma(-3.90, 1.70) == pytest.approx(2 * 2.2 / 5.6)
    assert abs(srd_gamma(-3.90, 1.70)) == pytest.approx(0.7857, abs=1e-4)
    assert srd_gamma_signed(-3.90, 1.70) == pytest.approx(-2.0)
    assert srd_gamma(np.nan, 1.7) == -2.0
    s = score_gamma(-3.90, 1.70)
    assert s["sign_mismatch"] is True
    assert np.isnan(s["SRME"])  # no mode-resolved reference
    assert score_gamma(1.2, 1.5, "imaginary_modes")["SRME"] == 2.0
    assert score_gamma(1.5, 1.5)["SRE"] == 0.0


def test_srme_gamma_known_answers():
    a = np.array([[0.5, 0.25], [0.25, 0.0]])
    assert srme_gamma(a, a) == 0.0
    b = np.array([[0.25, 0.25], [0.25, 0.25]])
    # Σ|a−b| = 0.5, Σ|a| = Σ|b| = 1  ->  2·0.5/2
    assert srme_gamma(a, b) == pytest.approx(0.5)


def test_settings_reject_bad_values():
    with pytest.raises(SettingsError, match="eos_strains"):
        GruneisenSettings(eos_strains=(-0.01, 0.0, 0.01))
    with pytest.raises(SettingsError, match=r"gruneisen\.eos"):
        GruneisenSettings(eos="spline")
    with pytest.raises(SettingsError, match="symmetry_check"):
        GruneisenSettings(symmetry_check="plus")
    t = GruneisenSettings(t_min=50, t_max=800, t_step=100).temperatures
    assert 300.0 in t and t[0] == 50.0 and t[-1] == 750.0


def test_dft_gamma_is_derived_byte_identical_from_a_metrics_table(reference_dir):
    """The download path: a gamma_SRME metrics_gamma.txt (pandas-printed) -> the pinned CSV."""
    ref = pd.read_csv(reference_dir / "gruneisen_dft_gamma.csv", dtype=str)
    table = pd.DataFrame(
        {
            "mp_id": ref["mp_id"],
            "desc": ref["desc"],
            "SRME": 0.1234,
            "SRE": 0.5,
            "gamma": -1.25,
            "DFT_gamma": ref["gamma_DFT_300K"].astype(float),
            "imaginary_freqs": False,
        }
    ).set_index("mp_id")
    text = "MODEL: X\n\tmean SRME: 0.5\n" + table.sample(frac=1, random_state=1).to_string()
    derived = dft_gamma_csv_from_metrics(text).encode()
    assert hashlib.sha256(derived).hexdigest() == FILES["gruneisen_dft_gamma"].sha256
    with pytest.raises(ValueError, match="DFT_gamma"):
        dft_gamma_csv_from_metrics("no table here")


# ------------------------------------------------------------- γ = 0 for fixed Φ


class FixedPhi(Calculator):
    """F_i = −k Σ_{j∈NN(i)} (u_i − u_j): springs in displacement space with a fixed Φ.

    u = r − r_ref, with the reference sites (the ideal n×n×n grid of a one-atom cell)
    scaled with the cell, so Φ does not depend on the volume (unlike a pair potential,
    whose curvature changes with the bond length).
    """

    implemented_properties = ("energy", "forces", "stress")

    def __init__(self, k: float = 2.0):
        super().__init__()
        self.k = k

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        n = round(len(atoms) ** (1 / 3))
        assert n**3 == len(atoms), "FixedPhi needs an n×n×n supercell of a one-atom cell"
        cell = np.asarray(atoms.cell[:])
        frac = atoms.get_scaled_positions(wrap=False)
        ideal = np.round(frac * n) / n
        u = (frac - ideal) @ cell
        d = ideal[None, :, :] - ideal[:, None, :]
        d -= np.round(d)
        dist = np.linalg.norm(d @ cell, axis=2)
        nn = np.isclose(dist, dist[dist > 1e-8].min(), rtol=1e-6) if n > 1 else dist < 0
        forces = -self.k * (nn.sum(1)[:, None] * u - nn.astype(float) @ u)
        du = u[:, None, :] - u[None, :, :]
        energy = 0.25 * self.k * float(np.sum(nn[..., None] * du**2))
        self.results = {"energy": energy, "forces": forces, "stress": np.zeros(6)}


def _loaded(calc: Calculator, name: str) -> LoadedModel:
    return LoadedModel(calc, {"model": name, "family": "ase", "device": "cpu"})


def _cu_files(tmp_path, fc2=(3, 3, 3), fc3=(3, 3, 3), mesh=(5, 5, 5)):
    cu = bulk("Cu", "fcc", a=3.59)
    cu.info = {
        "material_id": "Cu",
        "fc2_supercell": list(fc2),
        "fc3_supercell": list(fc3),
        "q_mesh": list(mesh),
    }
    write(tmp_path / "s.extxyz", cu, format="extxyz")
    return {k: tmp_path / "Cu" / v for k, v in MATERIAL_FILES.items()}


def _gruneisen(tmp_path, loaded, settings=None, **cu):
    f = _cu_files(tmp_path, **cu)
    spec = model_spec("emt")
    relax = RelaxSettings(fmax=1e-3)
    run_relax(
        structures=tmp_path / "s.extxyz",
        material_id="Cu",
        model=spec,
        settings=relax,
        out_relaxed=f["relaxed"],
        loaded=loaded,
    )
    ps = Phono3pySettings()
    fc2_into(f, spec, ps, loaded=loaded)
    rec = run_gruneisen(
        relaxed=f["relaxed"],
        fc2_path=f["fc2"],
        model=spec,
        settings=settings or GruneisenSettings(),
        relax_settings=relax,
        phono3py_settings=ps,
        out_hdf5=f["gruneisen_hdf5"],
        out_json=f["gruneisen"],
        out_csv=f["thermal_expansion"],
        melting_point=1358.0,
        loaded=loaded,
    )
    return f, rec


def test_gamma_is_zero_for_volume_independent_force_constants(tmp_path):
    fixed = _loaded(FixedPhi(), "fixed-phi")
    f, rec = _gruneisen(tmp_path, fixed)
    data, _ = storage.read_hdf5(f["gruneisen_hdf5"])
    assert rec["status"] == "ok"
    # the frequencies are the same at the three volumes and every mode γ vanishes
    assert np.allclose(data["frequency_plus"], data["frequency"], atol=1e-6)
    g = data["gruneisen"].copy()
    assert np.allclose(data["qpoint"][0], 0)
    g[0, :3] = 0.0  # Γ acoustic: 0/0, excluded from every sum
    assert np.max(np.abs(g)) < 1e-6
    assert abs(rec["gamma"]) < 1e-8
    # E(V) is flat for this model: the EOS fit fails, recorded as data, γ stays valid
    assert rec.get("eos_error") or rec["bulk_modulus_GPa"] is None or rec["bulk_modulus_GPa"] < 1


def test_emt_copper_gamma_bulk_modulus_expansion(tmp_path):
    """EMT Cu (a pair-like potential): γ, K_T and α_V of the right size, outputs consistent."""
    emt = _loaded(EMT(), "emt")
    f, rec = _gruneisen(tmp_path, emt)
    assert rec["status"] == "ok"
    assert 1.5 < rec["gamma"] < 3.0  # experiment ≈ 2.0
    assert 100 < rec["bulk_modulus_GPa"] < 180  # experiment ≈ 140 GPa
    assert rec["eos"]["rms_residual_meV_per_atom"] < 0.1
    assert len(rec["eos"]["volumes"]) == 7
    curve = storage.read_csv(f["thermal_expansion"])
    row = curve.set_index("temperature").loc[300.0]
    assert row["gamma"] == pytest.approx(rec["gamma"])
    assert 3e-5 < row["alpha_V"] < 8e-5  # experiment ≈ 5e-5 /K
    assert row["alpha_linear"] == pytest.approx(row["alpha_V"] / 3)  # cubic
    assert not row["above_melting"]
    data, attrs = storage.read_hdf5(f["gruneisen_hdf5"])
    # the volume is the primitive cell's (one Cu atom)
    assert attrs["volume_primitive_A3"] == pytest.approx(rec["volumes"]["+0.0000"]["volume"])
    # α_V from the stored arrays: Σ c γ / (K V_m)
    i = int(np.argmin(np.abs(data["temperature"] - 300)))
    by_hand = gr.thermal_expansion(
        data["heat_capacity"][i : i + 1],
        data["gruneisen"],
        rec["bulk_modulus_GPa"] * 1e9,
        attrs["volume_primitive_A3"],
    )[0]
    assert by_hand == pytest.approx(row["alpha_V"], rel=1e-12)
    assert data["mode_gamma"][i].sum() == pytest.approx(rec["gamma"])


def test_above_melting_flag(tmp_path):
    emt = _loaded(EMT(), "emt")
    settings = GruneisenSettings(t_min=1300, t_max=1400, t_step=50)
    f, _ = _gruneisen(tmp_path, emt, settings, fc2=(2, 2, 2), mesh=(3, 3, 3))
    curve = storage.read_csv(f["thermal_expansion"]).set_index("temperature")
    assert curve["above_melting"].to_dict() == {
        300.0: False,
        1300.0: False,
        1350.0: False,
        1400.0: True,
    }


class NaNModel(Calculator):
    implemented_properties = ("energy", "forces", "stress")

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        n = len(atoms)
        self.results = {"energy": np.nan, "forces": np.full((n, 3), np.nan), "stress": np.zeros(6)}


def test_failure_flows_to_metrics_as_two(tmp_path, reference_dir):
    bad = _loaded(NaNModel(), "nan")
    f, rec = _gruneisen(tmp_path, bad, fc2=(2, 2, 2), mesh=(3, 3, 3))
    assert rec["status"] in ("relax_error", "nonfinite_forces")
    assert storage.read_csv(f["thermal_expansion"]).empty
    # score it as if it were MgO (a material with a DFT γ)
    rec["mp_id"] = "mp-1265"
    storage.write_json(f["gruneisen"], rec)
    out = tmp_path / "m.csv"
    summary = run_gruneisen_metrics(
        records=[f["gruneisen"]],
        hdf5_files=[f["gruneisen_hdf5"]],
        reference=reference_dir / "gruneisen_dft_gamma.csv",
        out_csv=out,
    )
    row = storage.read_csv(out).iloc[0]
    assert row["SRME"] == 2.0 and row["SRD"] == -2.0 and bool(row["failed"])
    assert summary["gamma_n_failed"] == 1 and summary["gamma_mean_SRE"] == 2.0


def test_mode_reference_srme_zero_against_itself(tmp_path, reference_dir):
    """SRME_γ with a mode-resolved reference in gamma_SRME's layout: the model vs itself is 0."""
    emt = _loaded(EMT(), "emt")
    f, rec = _gruneisen(tmp_path, emt, fc2=(2, 2, 2), mesh=(3, 3, 3))
    data, _ = storage.read_hdf5(f["gruneisen_hdf5"])
    rec["mp_id"] = "mp-1265"
    storage.write_json(f["gruneisen"], rec)
    ref = pd.DataFrame(
        [
            {
                "mp_id": "mp-1265",
                "q_points": data["qpoint"].tolist(),
                "weights": data["weight"].tolist(),
                "frequencies": data["frequency"].tolist(),
                "gruneisen": np.nan_to_num(data["gruneisen"]).tolist(),
            }
        ]
    )
    ref.to_json(tmp_path / "mode_ref.json.gz")
    out = tmp_path / "m.csv"
    summary = run_gruneisen_metrics(
        records=[f["gruneisen"]],
        hdf5_files=[f["gruneisen_hdf5"]],
        reference=reference_dir / "gruneisen_dft_gamma.csv",
        out_csv=out,
        mode_reference=tmp_path / "mode_ref.json.gz",
    )
    assert storage.read_csv(out).iloc[0]["SRME"] == pytest.approx(0.0, abs=1e-10)
    assert summary["gamma_mean_SRME"] == pytest.approx(0.0, abs=1e-10)


def test_fc3_cross_check_on_emt_copper(tmp_path):
    """Mode γ from fc3 (fc2 on the 3×3×3 fc3 supercell) vs finite volumes: within 5 %."""
    emt = _loaded(EMT(), "emt")
    settings = GruneisenSettings()
    f, rec = _gruneisen(tmp_path, emt, settings, fc2=(4, 4, 4), mesh=(9, 9, 9))
    ps = Phono3pySettings()
    fc3_into(f, model_spec("emt"), ps, loaded=emt)
    out = run_gruneisen_fc3_check(
        relaxed=f["relaxed"],
        forces_fc3=f["forces_fc3"],
        gruneisen_hdf5=f["gruneisen_hdf5"],
        gruneisen_json=f["gruneisen"],
        settings=settings,
        phono3py_settings=ps,
        out_json=f["gruneisen_fc3_check"],
    )
    assert out["status"] == "ok"
    assert out["gamma_finite_volume"] == pytest.approx(rec["gamma"])
    assert abs(out["relative_difference"]) < 0.05
    assert out["gamma_fc3"] != 0.0


def test_qha_cross_check_on_emt_copper(tmp_path):
    """α_V from the Grüneisen relation at V0 vs phonopy's QHA (PROTOCOL §7 cross-check).

    Measured (EMT Cu, 3×3×3, 9³ mesh): QHA/Grüneisen = 1.08 at 50 K, 1.07 at 100 K, 1.10 at
    200 K, 1.14 at 300 K, 1.25 at 500 K: close at low T, QHA larger as the volume (and the
    softening of K) grows with T, which the Grüneisen relation at V0 leaves out.
    """
    emt = _loaded(EMT(), "emt")
    settings = GruneisenSettings(t_min=50, t_max=300, t_step=50)
    f, _ = _gruneisen(tmp_path, emt, settings, fc2=(3, 3, 3), mesh=(9, 9, 9))
    atoms, relax_record = storage.read_structure(f["relaxed"])
    material = material_of(relax_record)
    temps = [100.0, 300.0]
    qha = qha_thermal_expansion(
        atoms,
        material,
        emt.calculator,
        settings.eos_strains,
        temps,
        [9, 9, 9],
        relax_settings=RelaxSettings(fmax=1e-3),
    )
    curve = storage.read_csv(f["thermal_expansion"]).set_index("temperature")
    assert curve.loc[100.0, "alpha_V"] == pytest.approx(qha[0], rel=0.10)
    assert curve.loc[300.0, "alpha_V"] == pytest.approx(qha[1], rel=0.20)
    assert qha[1] > curve.loc[300.0, "alpha_V"]  # QHA includes the thermal volume growth
