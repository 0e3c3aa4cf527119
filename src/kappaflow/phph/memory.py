"""Memory sizing of the engine: the per-q table store and the triplet batch.

All sizes in bytes, FP64 (complex128 = 16 bytes). ``n_p`` primitive atoms, ``n_s`` supercell
atoms (fc3 supercell), ``nb = 3 n_p`` bands, ``n_m`` the largest multiplicity of the
shortest vectors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

COMPLEX = 16
REAL = 8
MB = 1024 * 1024

#: share of the free budget the leg-1 table store may take when memory is short
TABLE_SHARE = 0.6
MIN_BATCH = 1
#: triplets per batch reserved before the tables (larger batches gain little on a CPU)
RESERVED_BATCH = 256
#: largest triplet batch (more does not help even a GPU: one grid point has <= N/2 triplets)
MAX_BATCH = 4096


#: what a κ job keeps for phono3py, its phonons and Python besides the engine (MB)
JOB_RESERVE_MB = 1024.0


def job_budget_mb(job_mem_mb: float | None, device_type: str) -> float | None:
    """The engine's budget in a job of ``job_mem_mb`` (its ``mem_mb`` resource): on the CPU
    the job's memory less :data:`JOB_RESERVE_MB` (a 4 GB job gives the engine 3 GB); on a
    GPU None (the engine takes 80 % of the free device memory)."""
    if device_type != "cpu" or job_mem_mb is None:
        return None
    return max(float(job_mem_mb) - JOB_RESERVE_MB, 256.0)


class MemoryBudgetError(ValueError):
    """The memory budget cannot hold even one triplet of the engine's workspace."""


def table_bytes_per_point(n_p: int, n_s: int) -> int:
    """One leg-1 table Y[q](i, j, u, k, 27): n_p * n_p * (n_s / n_p) * n_p * 27 complex."""
    return n_p * n_p * n_s * 27 * COMPLEX


def fixed_bytes(n_p: int, n_s: int, n_bz: int, nb: int) -> int:
    """fc3 copies (2 real on the device, 1 on the host), per-grid-point leg-2/3 tables
    (2 complex), the phases of every BZ grid point (complex) and their q-vectors."""
    fc3 = 3 * n_p * n_s * n_s * 27 * REAL
    legs = 2 * n_p * n_s * n_p * 27 * COMPLEX
    phases = n_bz * n_p * n_s * COMPLEX
    return fc3 + legs + phases + n_bz * 3 * REAL


def workspace_bytes_per_triplet(n_p: int, n_s: int, nb: int, n_m: int, n_temps: int = 1) -> int:
    """Per-triplet intermediates of one batch (upper bound, with torch's temporaries)."""
    n_c = n_s // n_p
    phases = 2 * n_p * n_s * COMPLEX
    # leg 1: a gathered table (tables mode) or the products P1 x P2 of one anchor (direct)
    table = max(table_bytes_per_point(n_p, n_s), 2 * n_p * n_p * n_c * n_c * 2 * REAL)
    legs = 6 * nb**3 * COMPLEX  # L1, L2, L3, their permuted copies, the sum
    projection = 4 * nb**3 * COMPLEX + 2 * nb**3 * REAL  # A, B, C (+ a copy), |C|^2, masks
    weights = 3 * nb**3 * REAL + 2 * n_temps * nb * REAL  # g1, g2-g3, products, n1, n2
    eigvecs = 2 * nb * nb * COMPLEX
    return phases + table + legs + projection + weights + eigvecs


@dataclass(frozen=True)
class MemoryPlan:
    budget_mb: float
    batch_triplets: int
    table_capacity: int  # number of leg-1 tables kept (canonical q-points)
    table_points: int  # canonical q-points in the grid
    table_mb: float
    workspace_mb: float

    @property
    def all_tables_kept(self) -> bool:
        return self.table_capacity >= self.table_points

    def as_dict(self) -> dict:
        return asdict(self)


def plan_memory(
    budget_mb: float,
    n_p: int,
    n_s: int,
    n_m: int,
    n_bz: int,
    n_table_points: int,
    n_temps: int = 1,
    max_batch: int = MAX_BATCH,
) -> MemoryPlan:
    """Split ``budget_mb`` between the leg-1 table store and the triplet batch.

    Before the tables, the batch keeps room for :data:`RESERVED_BATCH` triplets (at most
    ``1 - TABLE_SHARE`` of what the fixed part leaves); the tables take the rest, and memory
    the tables do not need goes to the batch (up to ``max_batch`` triplets). Tables that do
    not fit are recomputed per batch (same numbers, more arithmetic).
    """
    if not budget_mb > 0:
        raise MemoryBudgetError(f"memory budget must be > 0 MB, got {budget_mb!r}")
    nb = 3 * n_p
    budget = float(budget_mb) * MB
    free = budget - fixed_bytes(n_p, n_s, n_bz, nb)
    per_triplet = workspace_bytes_per_triplet(n_p, n_s, nb, n_m, n_temps)
    if free < per_triplet:
        need = (fixed_bytes(n_p, n_s, n_bz, nb) + per_triplet) / MB
        raise MemoryBudgetError(
            f"memory budget {budget_mb:g} MB is too small for the ph-ph engine on this cell "
            f"({n_p} primitive atoms, {n_s} supercell atoms): at least {need:.0f} MB"
        )
    per_table = table_bytes_per_point(n_p, n_s)
    workspace = min((1.0 - TABLE_SHARE) * free, min(max_batch, RESERVED_BATCH) * per_triplet)
    capacity = int(min(n_table_points, (free - workspace) // per_table))
    rest = free - capacity * per_table
    batch = int(max(MIN_BATCH, min(max_batch, rest // per_triplet)))
    return MemoryPlan(
        budget_mb=float(budget_mb),
        batch_triplets=batch,
        table_capacity=int(capacity),
        table_points=int(n_table_points),
        table_mb=capacity * per_table / MB,
        workspace_mb=batch * per_triplet / MB,
    )
