"""The conda envs of the rules (envs/*.yaml) and the `strict` extra pin the same versions."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]
ENV_DIR = REPO / "envs"
ENV_FILES = sorted(ENV_DIR.glob("*.yaml"))
ENV_NAMES = [p.stem for p in ENV_FILES]

# a conda spec: "numpy =2.4.6", "numpy=2.4.6", "numpy ==2.4.6" or bare "pip"
CONDA_SPEC = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]*)\s*(?:(?P<op>==|=)\s*(?P<version>\S+))?$"
)
# a pip requirement pinned exactly: "torch==2.13.0"
PIP_SPEC = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]*)\s*(?:(?P<op>==|>=|<=|~=|!=|>|<)\s*(?P<version>\S+))?$"
)
# not packages of the strict extra: the interpreter, and pip itself
NOT_IN_STRICT = {"python", "pip"}
# the workflow driver: runs outside the rule envs (the `script:` jobs do not import it)
DRIVER_ONLY = {"snakemake", "snakemake-executor-plugin-slurm"}
COMMON = {"phono3py", "phonopy", "ase", "numpy"}
MODEL_PACKAGES = {"torch", "mace-torch", "e3nn", "chgnet", "sevenn"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_env(path: Path) -> dict[str, tuple[str | None, str | None]]:
    """{normalized name: (operator, version)} of the conda and pip dependencies of an env file."""
    data = yaml.safe_load(path.read_text())
    out: dict[str, tuple[str | None, str | None]] = {}

    def add(name: str, op: str | None, version: str | None) -> None:
        key = normalize(name)
        assert key not in out, f"{path.name}: {key} listed twice"
        out[key] = (op, version)

    for dep in data["dependencies"]:
        if isinstance(dep, dict):
            assert set(dep) == {"pip"}, f"{path.name}: unexpected dependency mapping {dep}"
            for req in dep["pip"]:
                m = PIP_SPEC.match(req.strip())
                assert m, f"{path.name}: cannot parse pip requirement {req!r}"
                add(m["name"], m["op"], m["version"])
        else:
            m = CONDA_SPEC.match(str(dep).strip())
            assert m, f"{path.name}: cannot parse conda dependency {dep!r}"
            add(m["name"], m["op"], m["version"])
    return out


def strict_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins: dict[str, str] = {}
    for req in project["optional-dependencies"]["strict"]:
        name, sep, version = req.partition("==")
        assert sep and version and not re.search(r"[<>=!~,;\[]", version), (
            f"strict: {req!r} is not an exact pin"
        )
        pins[normalize(name.strip())] = version.strip()
    return pins


@pytest.fixture(scope="module")
def envs() -> dict[str, dict[str, tuple[str | None, str | None]]]:
    assert ENV_FILES, f"no env files in {ENV_DIR}"
    return {p.stem: parse_env(p) for p in ENV_FILES}


@pytest.fixture(scope="module")
def strict() -> dict[str, str]:
    return strict_pins()


def test_rule_envs_exist():
    # rules/common.smk get_model_env: envs/{family}.yaml for mace/chgnet/sevennet, else analysis
    assert {"analysis", "mace", "chgnet", "sevennet"} <= set(ENV_NAMES)


@pytest.mark.parametrize("env_name", ENV_NAMES)
def test_every_pin_equals_strict(envs, strict, env_name):
    deps = envs[env_name]
    mismatched = {}
    for name, (op, version) in deps.items():
        if name in NOT_IN_STRICT:
            continue
        assert op in ("=", "=="), f"{env_name}.yaml: {name} is not pinned exactly ({op}{version})"
        assert name in strict, (
            f"{env_name}.yaml pins {name}=={version}, which the strict extra lacks"
        )
        if version != strict[name]:
            mismatched[name] = (version, strict[name])
    assert not mismatched, f"{env_name}.yaml pins differ from strict (env, strict): {mismatched}"


def test_python_pinned_the_same_everywhere(envs):
    pythons = {name: deps.get("python") for name, deps in envs.items()}
    assert all(p is not None and p[1] for p in pythons.values()), f"python not pinned: {pythons}"
    assert len({p[1] for p in pythons.values()}) == 1, f"envs pin different pythons: {pythons}"


@pytest.mark.parametrize("env_name", ENV_NAMES)
def test_every_env_pins_the_physics_stack(envs, env_name):
    missing = COMMON - set(envs[env_name])
    assert not missing, f"{env_name}.yaml lacks {sorted(missing)}"


def test_model_envs_hold_their_model_only(envs):
    assert {"torch", "mace-torch", "e3nn"} <= set(envs["mace"])
    assert {"torch", "chgnet"} <= set(envs["chgnet"])
    assert {"torch", "sevenn"} <= set(envs["sevennet"])
    # one family per env (mace-torch and sevenn want different e3nn versions upstream)
    assert not {"chgnet", "sevenn"} & set(envs["mace"])
    assert not {"mace-torch", "sevenn", "e3nn"} & set(envs["chgnet"])
    assert not {"mace-torch", "chgnet"} & set(envs["sevennet"])


def test_phph_env_is_analysis_plus_torch(envs):
    """The κ rule's env with kappaflow's ph-ph engine: the analysis env and torch only."""
    assert set(envs["phph"]) - set(envs["analysis"]) == {"torch"}
    assert {k: v for k, v in envs["phph"].items() if k != "torch"} == envs["analysis"]


def test_analysis_env_has_no_torch(envs):
    present = MODEL_PACKAGES & set(envs["analysis"])
    assert not present, f"analysis.yaml must stay torch-free, has {sorted(present)}"


def test_every_strict_pin_is_used_by_an_env(envs, strict):
    used = set().union(*(set(deps) for deps in envs.values()))
    unused = set(strict) - used - DRIVER_ONLY
    assert not unused, f"strict pins no env carries: {sorted(unused)}"
    assert DRIVER_ONLY <= set(strict), "the workflow driver (snakemake) must be pinned in strict"


def test_other_extras_agree_with_strict(strict):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for extra, reqs in project["optional-dependencies"].items():
        for req in reqs:
            name, sep, version = req.partition("==")
            if sep and normalize(name.strip()) in strict:
                assert version.strip() == strict[normalize(name.strip())], (
                    f"[{extra}] {req} != strict"
                )


@pytest.mark.parametrize("package", ["phono3py", "phonopy", "ase"])
def test_installed_version_equals_strict(strict, package):
    try:
        installed = metadata.version(package)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{package} is not installed")
    assert installed == strict[package], (
        f"installed {package} {installed} != strict pin {strict[package]}"
    )
