"""The phono3py versions the engine and its seam are tested with.

The seam uses phono3py internals (the RTA factory, the scattering-solver protocol, the
``Interaction`` arrays) that changed between 4.0 and 4.10 and will change again (the Wigner
solver moves to the ``phono3py-wte`` plugin later): any other version is refused.
"""

from __future__ import annotations

#: ``major.minor`` prefixes of the phono3py releases the seam was tested with.
SUPPORTED_PHONO3PY = ("4.10",)


class PhphVersionError(RuntimeError):
    """phono3py is not a version the engine's seam was tested with."""


def phono3py_version() -> str:
    import phono3py

    return str(phono3py.__version__)


def is_supported(version: str) -> bool:
    parts = version.split(".")
    return len(parts) >= 2 and ".".join(parts[:2]) in SUPPORTED_PHONO3PY


def check_phono3py_version(version: str | None = None) -> str:
    """Return the phono3py version, or raise :class:`PhphVersionError` naming the pin."""
    version = phono3py_version() if version is None else version
    if not is_supported(version):
        raise PhphVersionError(
            f"phono3py {version} is not supported by kappaflow's ph-ph seam (tested with "
            f"phono3py {', '.join(v + '.x' for v in SUPPORTED_PHONO3PY)}); install "
            "phono3py 4.10, or use phono3py's own engine (phono3py.phph_engine: phono3py, "
            "the default)"
        )
    return version
