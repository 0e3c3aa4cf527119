"""The one config loader (kappaflow.config): defaults agree in config.yaml, the schema and
the dataclasses; both entry points refuse the same mistake the same way."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from kappaflow import config as kc
from kappaflow import storage
from kappaflow.calculators import ModelError
from kappaflow.finetune import ExportSettings, TrainSettings
from kappaflow.forces import ForceSettings
from kappaflow.settings import (
    GruneisenSettings,
    KappaSettings,
    Phono3pySettings,
    RelaxSettings,
    SettingsError,
    StructureDefaults,
)

REPO = Path(__file__).resolve().parents[1]
#: config section -> the dataclass whose defaults it must agree with
SECTIONS = {
    "relax": RelaxSettings,
    "phono3py": Phono3pySettings,
    "forces": ForceSettings,
    "structure_defaults": StructureDefaults,
    "gruneisen": GruneisenSettings,
}
#: schema keys of a section that are workflow wiring, not fields of its dataclass
WIRING = {"gruneisen": {"reference", "mode_reference", "melting_points"}}


def _schema():
    return storage.read_package_yaml(kc.SCHEMA)


def _field_defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_schema_defaults_equal_dataclass_defaults(section):
    props = _schema()["properties"][section]["properties"]
    schema_defaults = {k: v["default"] for k, v in props.items() if "default" in v}
    fields = _field_defaults(SECTIONS[section])
    keys = set(props) - WIRING.get(section, set())
    assert keys == set(fields), f"{section}: schema keys and dataclass fields differ"
    for key in sorted(keys):
        assert key in schema_defaults, f"{section}.{key} has no schema default"
        assert _same(schema_defaults[key], fields[key]), (
            f"{section}.{key}: schema {schema_defaults[key]!r} != dataclass {fields[key]!r}"
        )


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_config_yaml_values_equal_the_defaults(section):
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())
    fields = _field_defaults(SECTIONS[section])
    for key, value in (shipped.get(section) or {}).items():
        if key in WIRING.get(section, set()):
            continue
        assert _same(value, fields[key]), (
            f"config.yaml {section}.{key}: {value!r} != {fields[key]!r}"
        )


def test_top_level_defaults_agree():
    props = _schema()["properties"]
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())
    assert props["temperatures"]["default"] == list(KappaSettings().temperatures) == [300.0]
    for key in ("temperatures", "materials", "models", "structures"):
        assert _same(shipped[key], props[key]["default"]), key
    assert shipped["reference"] == {"dir": None, "kappa": "noNAC", "published": None}
    assert {k: v["default"] for k, v in props["reference"]["properties"].items()} == shipped[
        "reference"
    ]


def test_finetune_export_and_train_keys_are_the_dataclass_fields():
    recipe = _schema()["properties"]["finetune"]["additionalProperties"]["properties"]
    assert set(recipe["export"]["properties"]) == set(_field_defaults(ExportSettings))
    assert set(recipe["train"]["properties"]) == set(_field_defaults(TrainSettings))


def test_an_empty_config_gives_the_dataclass_defaults():
    cfg = kc.load_config({})
    s = cfg.settings
    assert s.relax == RelaxSettings()
    assert s.phono3py == Phono3pySettings()
    assert s.forces == ForceSettings()
    assert s.structure_defaults == StructureDefaults()
    assert s.gruneisen == GruneisenSettings()
    assert s.temperatures == (300.0,)
    assert cfg.models == ["mace-mp-0-medium", "chgnet-0.3.0", "sevennet-0"]


def test_defaults_are_filled_in_place_in_schema_order():
    """What the rules' params were before the loader: snakemake.utils.validate's result."""
    config = {"phono3py": {"mesh": [5, 5, 5]}}
    kc.load_config(config)
    assert next(iter(config["phono3py"])) == "mesh"  # user keys first, then the defaults
    assert config["phono3py"]["displacement"] == 0.03
    assert config["relax"]["fmax"] == 1e-4


def test_command_line_strings_are_retyped():
    config = {"temperatures": ["300", "600"], "phono3py": {"mesh": ["5", "5", "5"]}}
    cfg = kc.load_config(config)
    assert cfg.settings.temperatures == (300.0, 600.0)
    assert cfg.settings.phono3py.mesh == (5, 5, 5)
    # YAML 1.1 leaves "1e-3" a string; the command line means a number
    assert kc._retyped({"fmax": "1e-3", "optimizer": "FIRE"}) == {
        "fmax": 0.001,
        "optimizer": "FIRE",
    }


@pytest.mark.parametrize(
    ("mapping", "error", "words"),
    [
        ({"temperaturs": [600]}, kc.ConfigError, ["temperaturs", "unexpected"]),
        ({"temperatures": [-5]}, kc.ConfigError, ["temperatures.0", "-5"]),
        ({"phono3py": {"backend": "Fortran"}}, kc.ConfigError, ["phono3py.backend", "Fortran"]),
        ({"relax": {"optimzer": "FIRE"}}, kc.ConfigError, ["optimzer"]),
        ({"models": ["no-such-model"]}, ModelError, ["no-such-model"]),
        ({"gruneisen": {"volume_strain": 0.1, "t_min": 900}}, SettingsError, ["t_min"]),
        (
            {"finetune": {"ft": {"base": "chgnet-0.3.0", "labels": ["x"]}}},
            kc.ConfigError,
            ["finetune.ft.base", "not a mace model"],
        ),
    ],
    ids=["typo", "negative-T", "bad-backend", "bad-key", "unknown-model", "physics", "ft-base"],
)
def test_bad_configs_name_the_key(mapping, error, words):
    with pytest.raises(error) as info:
        kc.load_config(mapping)
    for word in words:
        assert word in str(info.value)


def test_cli_file_and_flags_go_through_the_same_validation(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"temperaturs": [600]}))
    with pytest.raises(kc.ConfigError, match="temperaturs"):
        kc.load_config_file(path)
    path.write_text(yaml.safe_dump({"temperatures": [600], "phono3py": {"backend": "Rust"}}))
    cfg = kc.load_config_file(path, {"phono3py": {"mesh": [5, 5, 5]}, "temperatures": [300.0]})
    assert cfg.settings.temperatures == (300.0,)
    assert cfg.settings.phono3py.mesh == (5, 5, 5) and cfg.settings.phono3py.backend == "Rust"
    with pytest.raises(kc.ConfigError, match=r"phono3py\.mesh"):
        kc.load_config_file(None, {"phono3py": {"mesh": [0, 5, 5]}})


def test_job_params_turn_rule_params_into_typed_settings():
    config = {"phono3py": {"mesh": [5, 5, 5]}, "temperatures": [300, 600]}
    cfg = kc.load_config(config)
    params = {
        "model": cfg.model_params("emt"),
        "phono3py": config["phono3py"],
        "temperatures": [300.0, 600.0],
        "relax": config["relax"],
        "materials": ["a", "b"],
    }
    p = kc.job_params(params)
    assert p.model.key == "emt" and p.model.family == "emt"
    assert p.phono3py == cfg.settings.phono3py
    assert p.kappa == KappaSettings((300.0, 600.0), cfg.settings.phono3py)
    assert p.relax == RelaxSettings()
    assert p.other == {"materials": ["a", "b"]}


def test_finetune_keys_become_mace_models_of_the_registry():
    cfg = kc.load_config(
        {"models": ["emt"], "finetune": {"ft-a": {"base": "mace-mp-0-small", "label_with": "emt"}}}
    )
    assert cfg.models == ["emt", "mace-mp-0-small", "ft-a"]
    spec = cfg.model("ft-a")
    assert spec.family == "mace" and spec.options["path"] == "results/finetune/ft-a/ft-a.model"


def test_materials_come_from_the_structures_file(reference_dir, tmp_path):
    cfg = kc.load_config({"materials": ["mp-22862", "wz"]}, cli_reference_dir=reference_dir)
    assert cfg.materials[0] == "mp-22862" and len(cfg.materials) == 34
    assert "mp-22862" in cfg.scored and len(cfg.reference_ids) == 103
    atoms, material = cfg.material("mp-22862")
    assert material.desc == "NaCl-rs" and len(atoms) == 8


def test_kappa_only_keys_one_vocabulary():
    """The schema's enums, the settings' tuples and the CLI's choices are one list each; the
    force rules' phono3py param is the settings' forces_dict() (same keys)."""
    from kappaflow import phph
    from kappaflow.config import load_config
    from kappaflow.settings import (
        KAPPA_CONVENTIONS,
        KAPPA_ONLY_KEYS,
        PHPH_ENGINES,
        Phono3pySettings,
    )
    from kappaflow.storage import read_package_yaml

    props = read_package_yaml("config.schema.yaml")["properties"]["phono3py"]["properties"]
    assert tuple(props["kappa_convention"]["enum"]) == KAPPA_CONVENTIONS
    assert tuple(props["phph_engine"]["enum"]) == PHPH_ENGINES == phph.ENGINES
    assert set(KAPPA_ONLY_KEYS) == {"kappa_convention", "phph_engine"}
    cfg = load_config({"phono3py": {"phph_engine": "kappaflow"}})
    assert set(cfg.force_phono3py) == set(Phono3pySettings().forces_dict())
    assert not set(KAPPA_ONLY_KEYS) & set(cfg.force_phono3py)
    assert cfg.raw["phono3py"]["phph_engine"] == "kappaflow"
    assert cfg.kappa_env == "../envs/phph.yaml" and cfg.kappa_gpus(None) == 1
    assert cfg.kappa_gpus("cpu") == 0
    assert load_config({}).kappa_env == "../envs/analysis.yaml"
    assert load_config({}).kappa_gpus("cuda") == 0


def test_misspelled_kappa_only_value_is_refused():
    import pytest

    from kappaflow.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="phph_engine"):
        load_config({"phono3py": {"phph_engine": "gpu"}})
