"""kappaflow's three-phonon interaction engine: |Φ|² of all triplets of one grid point.

torch, FP64 only, any device torch offers (cpu, cuda), batched over the triplets of a grid
point. Everything that fixes a convention is phono3py's and is read from its ``Interaction``
object (docs: /work/shared/docs/PHPH.md §4, phono3py 4.10 ``c/real_to_reciprocal.c``,
``c/reciprocal_to_normal.c``): the BZ grid (addresses, ``D_diag``, ``Q``), the triplets and
their weights, the frequencies and eigenvectors of phono3py's own solver (never
re-diagonalised), the smallest vectors with their multiplicities, the compact fc3 with its
``fc3_nonzero_indices``, ``all_shortest``, ``make_r0_average``, ``cutoff_frequency`` and the
interaction's ``unit_conversion_factor``.

The fc3 transform is factorized. With ``P_a[x](q)`` the multiplicity-averaged phase of
supercell atom ``x`` seen from primitive atom ``a`` and ``F`` the compact fc3, phono3py's
three r0-average legs are, for a triplet (q0, q1, q2) and primitive atoms (i, j, k):

* leg 1 (anchor i): Σ_{x∈j, y∈k} F1[i,x,y] P_i[x](q1) P_i[y](q2), computed as
  Σ_{x∈j} P_i[x](q1) Y[q2](i,x,k) from a per-q table Y[q](i,x,k) = Σ_{y∈k} F1[i,x,y] P_i[y](q)
  that is built once per q-point and reused by every grid point (time reversal halves the
  store: Y[-q] = conj Y[q]);
* leg 2 (anchor j) and leg 3 (anchor k) have one phase at q0, fixed per grid point: the q0
  sum is done once per grid point, the other per triplet.

F1 = F (1 + 2 S) and F23 = F (1 - S) carry phono3py's ``all_shortest`` rule S (leg 1 counts
3x and legs 2 and 3 count 0 where the three atoms are unique shortest vectors); the legs are
summed with phono3py's index swaps and pre-phases and divided by 3. The projection onto the
eigenvectors (divided by √m, not conjugated) is three batched matrix products.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kappaflow.phph.memory import MB, MemoryPlan, plan_memory

#: default memory budget of the engine itself (tables + batch), MB
DEFAULT_MEMORY_MB = 2048.0


class EngineUnavailableError(ImportError):
    """torch (the engine's only extra dependency) is not importable."""


class UnknownDeviceError(ValueError):
    """A device name the engine cannot run on (it runs on cpu or cuda)."""


class DeviceUnavailableError(RuntimeError):
    """The requested torch device does not exist on this machine."""


def require_torch() -> Any:
    """Import torch lazily; a clear error where it is missing."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - exercised in a torch-free env
        raise EngineUnavailableError(
            "phono3py.phph_engine 'kappaflow' needs PyTorch, which is not installed in this "
            "environment: install kappaflow's 'phph' extra (pip install 'kappaflow[phph]') "
            "or choose phph_engine: phono3py"
        ) from exc
    return torch


def resolve_device(device: Any, torch: Any) -> Any:
    """torch.device from 'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when present)."""
    name = "cpu" if device is None else str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise UnknownDeviceError(f"unknown torch device {device!r} for the ph-ph engine") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device {name!r} requested for the ph-ph engine, but torch "
                f"{torch.__version__} sees no CUDA device"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(
                f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present"
            )
    elif dev.type != "cpu":
        raise UnknownDeviceError(f"the ph-ph engine runs on cpu or cuda, not {dev.type!r}")
    return dev


@dataclass
class EngineStats:
    """What the engine did (for the provenance record)."""

    grid_points: int = 0
    triplets: int = 0
    batches: int = 0
    max_batch: int = 0
    tables_built: int = 0
    tables_recomputed: int = 0  # tables that did not fit the store, rebuilt per batch
    seconds: dict[str, float] = field(
        default_factory=lambda: {"setup": 0.0, "tables": 0.0, "interaction": 0.0, "sum": 0.0}
    )

    def as_dict(self) -> dict[str, Any]:
        return {
            "grid_points": self.grid_points,
            "triplets": self.triplets,
            "batches": self.batches,
            "max_batch": self.max_batch,
            "tables_built": self.tables_built,
            "tables_recomputed": self.tables_recomputed,
            "seconds": {k: round(v, 6) for k, v in self.seconds.items()},
        }


class PhphEngine:
    """|Φ|² (phono3py's interaction strength) of the triplets of a grid point, in torch.

    Parameters
    ----------
    interaction : phono3py.phonon3.interaction.Interaction
        phono3py's object, after ``init_dynamical_matrix`` (phonons on the whole BZ grid are
        solved on first use by phono3py's own solver).
    device : "cpu", "cuda", "cuda:N" or "auto".
    threads : torch intra-op threads (``torch.set_num_threads``); None leaves torch's setting.
    memory_mb : what the engine itself may allocate (leg-1 table store + batch workspace);
        the rest of the process (phono3py, the interpreter) is not counted.
    n_temps : temperatures summed per batch (sizes the workspace).
    """

    def __init__(
        self,
        interaction: Any,
        device: Any = "cpu",
        threads: int | None = None,
        memory_mb: float | None = None,
        n_temps: int = 1,
        leg1: str = "auto",
    ) -> None:
        t_start = time.perf_counter()
        torch = require_torch()
        self._torch = torch
        self.device = resolve_device(device, torch)
        if threads is not None:
            if int(threads) < 1:
                raise ValueError(f"threads must be >= 1, got {threads!r}")
            torch.set_num_threads(int(threads))
        self.threads = int(torch.get_num_threads())
        self.stats = EngineStats()
        pp = interaction
        self._pp = pp
        prim = pp.primitive
        svecs, multi = prim.get_smallest_vectors()
        svecs = np.asarray(svecs, dtype="double")
        multi = np.asarray(multi, dtype="int64")
        p2s = np.asarray(prim.p2s_map, dtype="int64")
        s2p = np.asarray(prim.s2p_map, dtype="int64")
        n_s, n_p = multi.shape[:2]
        self.n_p, self.n_s, self.nb = int(n_p), int(n_s), int(3 * n_p)
        groups = [np.nonzero(s2p == p2s[b])[0] for b in range(n_p)]
        n_c = len(groups[0])
        if any(len(g) != n_c for g in groups) or n_c * n_p != n_s:
            raise ValueError("supercell atoms do not map evenly onto the primitive atoms")
        self.n_c = int(n_c)
        order = np.concatenate(groups)  # supercell atoms grouped by primitive atom

        fc3 = np.asarray(pp.fc3, dtype="double")
        compact = fc3.shape[0] != fc3.shape[1]
        rows = np.arange(n_p) if compact else p2s
        nonzero = np.asarray(pp.fc3_nonzero_indices)[rows][:, order][:, :, order]
        f = fc3[rows][:, order][:, :, order] * (nonzero != 0)[..., None, None, None]
        f = f.reshape(n_p, n_p, n_c, n_p, n_c, 27)  # [a, b, u, c, v, lmn]
        self.make_r0_average = bool(pp.make_r0_average)
        if self.make_r0_average:
            short = np.asarray(pp.all_shortest)[:, order][:, order]
            short = (short != 0).astype("double").reshape(n_p, n_p, n_c, n_p, n_c, 1)
            f1 = f * (1.0 + 2.0 * short)
            f23 = f * (1.0 - short)
        else:
            f1, f23 = f, None
        dev = self.device
        n_c = self.n_c
        # leg-1 fc3 in two layouts: tables [(i,k), v, (j,u,lmn)], direct [i, (j,k), (u,v), lmn]
        self._f1_tab = torch.as_tensor(
            np.ascontiguousarray(f1.transpose(0, 3, 4, 1, 2, 5)).reshape(
                n_p * n_p, n_c, n_p * n_c * 27
            ),
            device=dev,
        )
        self._f1 = f1  # host copy: the direct layout is built on first use
        self._f1_dir = None
        self._f23 = None if f23 is None else torch.as_tensor(np.ascontiguousarray(f23), device=dev)

        # phases: shortest vectors of every (anchor a, supercell atom x), padded to n_m
        counts = multi[:, :, 0].T[:, order]  # (a, x)
        starts = multi[:, :, 1].T[:, order]
        n_m = int(counts.max())
        self.n_m = n_m
        m_idx = np.arange(n_m)
        idx = np.minimum(starts[..., None] + m_idx, len(svecs) - 1)
        valid = m_idx < counts[..., None]
        vecs = np.where(valid[..., None], svecs[idx], 0.0)  # (a, x, m, 3)
        # pre-phase position of primitive atom a: its shortest vector from primitive atom 0
        self._r_pre = torch.as_tensor(svecs[multi[p2s, 0, 1]], device=dev)  # (a, 3)
        self._inv_sqrt_m = np.repeat(1.0 / np.sqrt(np.asarray(prim.masses, dtype="double")), 3)

        bz = pp.bz_grid
        addresses = np.asarray(bz.addresses, dtype="int64")
        q = (addresses / np.asarray(bz.D_diag, dtype="double")) @ np.asarray(bz.Q, "double").T
        self._q = torch.as_tensor(q, device=dev)
        self.n_bz = len(addresses)
        self._canon, self._conj = _time_reversal_partners(addresses)
        n_canon = int(np.unique(self._canon).size)
        if memory_mb is None:
            memory_mb = _default_memory_mb(torch, dev)
        if leg1 == "auto":
            leg1 = "tables"
        if leg1 not in ("tables", "direct"):
            raise ValueError(f"leg1 must be 'tables', 'direct' or 'auto', got {leg1!r}")
        self.leg1 = leg1
        self.plan: MemoryPlan = plan_memory(
            memory_mb,
            self.n_p,
            self.n_s,
            n_m,
            self.n_bz,
            n_canon if leg1 == "tables" else 0,
            n_temps=n_temps,
        )
        # P_a[x](q) of every BZ grid point, (n_bz, a, b, u) complex
        vt = torch.as_tensor(vecs.reshape(-1, 3).T.copy(), device=dev)  # (3, a*x*m)
        wt = torch.as_tensor(
            (valid / np.maximum(counts, 1)[..., None]).reshape(-1), device=dev
        )  # 1/M on valid vectors, 0 on the padding
        chunk = max(1, int(64 * MB // (vt.shape[1] * 16)))
        parts = []
        for c0 in range(0, self.n_bz, chunk):
            theta = (self._q[c0 : c0 + chunk] @ vt) * (2.0 * np.pi)
            re = (torch.cos(theta) * wt).view(-1, n_p, n_p, n_c, n_m).sum(-1)
            im = (torch.sin(theta) * wt).view(-1, n_p, n_p, n_c, n_m).sum(-1)
            parts.append(torch.complex(re, im))
        self._P = torch.cat(parts)
        self._slot = np.full(self.n_bz, -1, dtype="int64")  # canonical gp -> store slot
        self._store = None
        self._n_stored = 0
        self.band_indices = np.asarray(pp.band_indices, dtype="int64")
        self.cutoff_frequency = float(pp.cutoff_frequency)
        self.unit_conversion_factor = float(pp.unit_conversion_factor)
        self._gp0: int | None = None
        self._v2 = self._u3 = None
        self.stats.seconds["setup"] += time.perf_counter() - t_start

    # ------------------------------------------------------------------ leg 1

    def _build_tables(self, gps: Any) -> Any:
        """Leg-1 tables Y[q](i, k, j, u, lmn) = Σ_v F1[i,j,u,k,v] P_i[k,v](q) at ``gps``:
        (g, (i, k), (j, u, lmn)) complex."""
        torch = self._torch
        n_p, n_c = self.n_p, self.n_c
        p = self._P[gps].reshape(-1, n_p * n_p, n_c).transpose(0, 1)  # ((i,k), g, v)
        re = torch.bmm(p.real.contiguous(), self._f1_tab)  # ((i,k), g, (j,u,lmn))
        im = torch.bmm(p.imag.contiguous(), self._f1_tab)
        return torch.complex(re, im).transpose(0, 1)  # (g, (i,k), (j,u,lmn)), a view

    def _store_tables(self, canon: np.ndarray) -> None:
        """Build and keep the tables of the canonical points ``canon`` not stored yet,
        as far as the store's capacity allows."""
        torch = self._torch
        need = np.unique(canon[self._slot[canon] < 0])
        capacity = self.plan.table_capacity
        n_new = min(need.size, capacity - self._n_stored)
        if n_new <= 0:
            return
        width = self.n_s * 27
        if self._store is None:
            shape = (capacity, self.n_p * self.n_p, width)
            self._store = torch.empty(shape, dtype=torch.complex128, device=self.device)
        keep = need[:n_new]
        step = max(1, self.plan.batch_triplets)
        for s0 in range(0, keep.size, step):
            part = keep[s0 : s0 + step]
            first = self._n_stored
            self._store[first : first + part.size] = self._build_tables(
                torch.as_tensor(part, device=self.device)
            )
            self._slot[part] = np.arange(first, first + part.size)
            self._n_stored += part.size
        self.stats.tables_built += int(keep.size)

    def _leg1_tables(self, p1: Any, g2: np.ndarray) -> Any:
        """Σ_{u} P_i[j,u](q1) Y[q2](i,k,j,u,lmn), tables from the store (built on first use;
        rebuilt per batch where the store is full). Y[-q] = conj Y[q]: those triplets use
        conj(Σ conj(P1) Y[q])."""
        torch = self._torch
        t0 = time.perf_counter()
        n_p, n_c = self.n_p, self.n_c
        canon = self._canon[g2]
        self._store_tables(canon)
        n_t = len(g2)
        flip = torch.as_tensor(self._conj[g2], device=self.device)[:, None, None, None]
        p1 = torch.where(flip, p1.conj(), p1)
        out = torch.empty((n_t, n_p, n_p, n_p, 27), dtype=torch.complex128, device=self.device)
        # sub-batches small enough for the gathered tables to stay in cache (CPU)
        per = n_p * n_p * self.n_s * 27 * 16
        sub = n_t if self.device.type == "cuda" else max(1, int(4 * MB // per))
        slot = self._slot[canon]
        for s0 in range(0, n_t, sub):
            sl = slice(s0, min(n_t, s0 + sub))
            sc = slot[sl]
            if np.all(sc >= 0):
                y = self._store.index_select(0, torch.as_tensor(sc, device=self.device))
            else:
                y = self._build_tables(torch.as_tensor(canon[sl], device=self.device))
                self.stats.tables_recomputed += int(np.count_nonzero(sc < 0))
            n_s = y.shape[0]
            y = y.reshape(n_s, n_p, n_p, n_p, n_c, 27)  # (t, i, k, j, u, lmn)
            pv = p1[sl][:, :, None, :, None, :]  # (t, i, 1, j, 1, u)
            res = torch.matmul(pv, y).squeeze(-2)  # (t, i, k, j, lmn)
            out[sl] = res.permute(0, 1, 3, 2, 4)
        out = torch.where(flip[..., None], out.conj(), out)
        self._sync()
        self.stats.seconds["tables"] += time.perf_counter() - t0
        return out  # (t, i, j, k, lmn)

    def _leg1_direct(self, p1: Any, p2: Any) -> Any:
        """Σ_{u,v} F1[i,j,u,k,v] P_i[j,u](q1) P_i[k,v](q2) as one GEMM per anchor i on the
        products P1 ⊗ P2 (no stored tables)."""
        torch = self._torch
        n_t, n_p, n_c = p1.shape[0], self.n_p, self.n_c
        if self._f1_dir is None:
            self._f1_dir = torch.as_tensor(
                np.ascontiguousarray(self._f1.transpose(0, 1, 3, 2, 4, 5)).reshape(
                    n_p, n_p * n_p, n_c * n_c, 27
                ),
                device=self.device,
            )
        out = torch.empty((n_t, n_p, n_p, n_p, 27), dtype=torch.complex128, device=self.device)
        for i in range(n_p):
            # K[t, j, k, u, v] = P_i[j,u](q1) P_i[k,v](q2)
            kr = p1[:, i, :, None, :, None] * p2[:, i, None, :, None, :]
            kr = torch.view_as_real(kr).permute(1, 2, 5, 0, 3, 4)  # (j, k, 2, t, u, v)
            kr = kr.reshape(n_p * n_p, 2 * n_t, n_c * n_c)
            res = torch.bmm(kr, self._f1_dir[i])  # ((j,k), (2, t), lmn)
            res = res.view(n_p, n_p, 2, n_t, 27).permute(3, 0, 1, 4, 2)
            out[:, i] = torch.view_as_complex(res.contiguous())
        return out  # (t, i, j, k, lmn)

    # ------------------------------------------------------------------ one grid point

    def set_grid_point(self, gp0: int) -> None:
        """Per-grid-point legs 2 and 3 (their q0 sums)."""
        torch = self._torch
        self._gp0 = int(gp0)
        if self._f23 is None:
            return
        p0 = self._P[self._gp0]  # (a, b, u)
        f23 = self._f23
        # leg 2, anchor j: V2[j, i, k, v] = Σ_{u} P_j[i,u](q0) F23[j,i,u,k,v]
        self._v2 = torch.complex(
            torch.einsum("jiu,jiukvz->jikvz", p0.real.contiguous(), f23),
            torch.einsum("jiu,jiukvz->jikvz", p0.imag.contiguous(), f23),
        )
        # leg 3, anchor k: U3[k, j, u, i] = Σ_{v} F23[k,j,u,i,v] P_k[i,v](q0)
        self._u3 = torch.complex(
            torch.einsum("kjuivz,kiv->kjuiz", f23, p0.real.contiguous()),
            torch.einsum("kjuivz,kiv->kjuiz", f23, p0.imag.contiguous()),
        )

    def _eigvecs(self, gps: np.ndarray) -> Any:
        """Eigenvectors of phono3py's solver divided by √m: (len, component, band)."""
        eig = np.asarray(self._pp.phonons.eigenvectors)[gps] * self._inv_sqrt_m[:, None]
        return self._torch.as_tensor(eig, device=self.device)

    def phi2_batch(self, g1: np.ndarray, g2: np.ndarray) -> Any:
        """|Φ|²/(f0 f1 f2) of triplets (gp0, g1[t], g2[t]) without the unit conversion:
        (t, band0, band, band) on the device; zero where a frequency is <= the cutoff."""
        torch = self._torch
        if self._gp0 is None:
            raise RuntimeError("PhphEngine.set_grid_point() first")
        dev = self.device
        n_t, n_p, nb = len(g1), self.n_p, self.nb
        g1_t = torch.as_tensor(g1, device=dev)
        g2_t = torch.as_tensor(g2, device=dev)
        p1 = self._P[g1_t]  # (t, a, b, u)
        p2 = self._P[g2_t]
        t_mid = time.perf_counter()
        if self.leg1 == "tables":
            leg1 = self._leg1_tables(p1, np.asarray(g2))
        else:
            leg1 = self._leg1_direct(p1, p2)  # z = (l, m, n)
        qsum = self._q[self._gp0] + self._q[g1_t] + self._q[g2_t]  # (t, 3)
        theta = (qsum @ self._r_pre.T) * (2.0 * np.pi)  # (t, a)
        pre = torch.complex(torch.cos(theta), torch.sin(theta))
        s = leg1.view(n_t, n_p, n_p, n_p, 3, 3, 3) * pre[:, :, None, None, None, None, None]
        if self._f23 is not None:
            leg2 = torch.einsum("jikvz,tjkv->tjikz", self._v2, p2)  # z = (m, l, n)
            leg2 = leg2.view(n_t, n_p, n_p, n_p, 3, 3, 3) * pre[:, :, None, None, None, None, None]
            s = s + leg2.permute(0, 2, 1, 3, 5, 4, 6)
            del leg2
            leg3 = torch.einsum("tkju,kjuiz->tkjiz", p1, self._u3)  # z = (n, m, l)
            leg3 = leg3.view(n_t, n_p, n_p, n_p, 3, 3, 3) * pre[:, :, None, None, None, None, None]
            s = s + leg3.permute(0, 3, 2, 1, 6, 5, 4)
            del leg3
            s = s / 3.0
        # (t, i, j, k, l, m, n) -> (t, il, jm, kn)
        s = s.permute(0, 1, 4, 2, 5, 3, 6).reshape(n_t, nb, nb * nb)
        e0 = self._eigvecs(np.array([self._gp0]))[0][:, self.band_indices]  # (il, b0)
        e1 = self._eigvecs(np.asarray(g1))
        e2 = self._eigvecs(np.asarray(g2))
        nb0 = e0.shape[1]
        a = torch.matmul(e0.T, s)  # (t, b0, jm*kn)
        b = torch.matmul(a.view(n_t, nb0 * nb, nb), e2)  # (t, b0*jm, b2)
        c = torch.matmul(e1.transpose(1, 2)[:, None], b.view(n_t, nb0, nb, nb))  # (t,b0,b1,b2)
        phi2 = c.real**2 + c.imag**2
        freqs = np.asarray(self._pp.phonons.frequencies, dtype="double")
        f0 = torch.as_tensor(freqs[self._gp0][self.band_indices], device=dev)
        f1 = torch.as_tensor(freqs[g1], device=dev)
        f2 = torch.as_tensor(freqs[g2], device=dev)
        cut = self.cutoff_frequency
        fff = f0[None, :, None, None] * f1[:, None, :, None] * f2[:, None, None, :]
        ok = (f0 > cut)[None, :, None, None] & (f1 > cut)[:, None, :, None]
        ok = ok & (f2 > cut)[:, None, None, :]
        phi2 = torch.where(ok, phi2 / torch.where(ok, fff, 1.0), 0.0)
        self.stats.batches += 1
        self.stats.triplets += n_t
        self.stats.max_batch = max(self.stats.max_batch, n_t)
        self._sync()
        self.stats.seconds["interaction"] += time.perf_counter() - t_mid
        return phi2

    def _sync(self) -> None:
        if self.device.type == "cuda":  # honest per-stage timings on an asynchronous device
            self._torch.cuda.synchronize(self.device)

    def release(self) -> None:
        """Free the table store and the per-grid-point tables (the engine can run again)."""
        self._store = None
        self._n_stored = 0
        self._slot[:] = -1
        self._v2 = self._u3 = None
        self._gp0 = None
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()

    def batches(self, n: int) -> list[slice]:
        step = self.plan.batch_triplets
        return [slice(s, min(n, s + step)) for s in range(0, n, step)]

    def interaction_strength(self, triplets: np.ndarray) -> np.ndarray:
        """phono3py's ``Interaction.interaction_strength`` for ``triplets`` (n, 3) of BZ grid
        points sharing q0 = triplets[:, 0]: (n, band0, band, band), unit conversion
        included, as a numpy array."""
        triplets = np.asarray(triplets, dtype="int64")
        if triplets.ndim != 2 or triplets.shape[1] != 3:
            raise ValueError("triplets must have shape (n, 3)")
        with self._torch.inference_mode():
            return self._interaction_strength(triplets)

    def _phi2_batches(self, triplets: np.ndarray) -> Iterator[tuple[np.ndarray, Any]]:
        """(rows, |Φ|² of the triplets in those rows), batch by batch; q0 of a BZ-surface
        grid point has several representations among its triplets, each set up once."""
        for gp0 in np.unique(triplets[:, 0]):
            rows = np.nonzero(triplets[:, 0] == gp0)[0]
            self.set_grid_point(int(gp0))
            for sl in self.batches(len(rows)):
                r = rows[sl]
                yield r, self.phi2_batch(triplets[r, 1], triplets[r, 2])

    def _interaction_strength(self, triplets: np.ndarray) -> np.ndarray:
        out = np.zeros((len(triplets), len(self.band_indices), self.nb, self.nb))
        for r, phi2 in self._phi2_batches(triplets):
            out[r] = phi2.cpu().numpy() * self.unit_conversion_factor
        return out

    def collisions(
        self,
        triplets: np.ndarray,
        weights: np.ndarray,
        g: np.ndarray,
        temperatures_thz: np.ndarray,
    ) -> np.ndarray:
        """Σ_t w_t Σ_{b1 b2} [(n1+n2+1) g1 + (n1-n2)(g2-g3)] |Φ|² at every temperature:
        (temperatures, band0), without unit conversions, as phono3py's low-memory C
        ``pp_collision`` returns it (``triplets`` of one grid point; their q0 may be
        several BZ representations of it). ``g`` (2, t, band0, band, band) are the tetrahedron
        weights of the same triplets (phono3py's ``get_triplets_integration_weights``)."""
        with self._torch.inference_mode():  # no autograd, whatever a force model enabled
            return self._collisions(np.asarray(triplets, dtype="int64"), weights, g,
                                    temperatures_thz)  # fmt: skip

    def _collisions(self, triplets, weights, g, temperatures_thz) -> np.ndarray:
        torch = self._torch
        dev = self.device
        temps = torch.as_tensor(np.asarray(temperatures_thz, dtype="double"), device=dev)
        freqs = np.asarray(self._pp.phonons.frequencies, dtype="double")
        cut = self.cutoff_frequency
        col = torch.zeros((len(temps), len(self.band_indices)), dtype=torch.float64, device=dev)
        for r, phi2 in self._phi2_batches(triplets):
            t0 = time.perf_counter()
            w = torch.as_tensor(np.asarray(weights[r], dtype="double"), device=dev)
            g1 = torch.as_tensor(g[0, r], device=dev)
            g23 = torch.as_tensor(g[1, r], device=dev)
            n1 = _occupations(torch, freqs[triplets[r, 1]], temps, cut, dev)  # (t, T, b)
            n2 = _occupations(torch, freqs[triplets[r, 2]], temps, cut, dev)
            x1 = g1 * phi2
            x23 = g23 * phi2
            plus = (x1 + x23).sum(-1)  # (t, b0, b1): coefficient of n1
            minus = (x1 - x23).sum(-2)  # (t, b0, b2): coefficient of n2
            const = x1.sum((-1, -2))  # (t, b0)
            col += torch.einsum("t,tTb,tab->Ta", w, n1, plus)
            col += torch.einsum("t,tTc,tac->Ta", w, n2, minus)
            col += (w[:, None] * const).sum(0)[None, :]
            self._sync()
            self.stats.seconds["sum"] += time.perf_counter() - t0
        self.stats.grid_points += 1
        return col.cpu().numpy()


def _occupations(torch: Any, f: np.ndarray, temps: Any, cut: float, dev: Any) -> Any:
    """Bose-Einstein n(f, T) (t, T, band); 0 where f <= cutoff (|Φ|² is 0 there) or T <= 0."""
    ft = torch.as_tensor(f, device=dev)[:, None, :]
    tt = temps[None, :, None]
    ok = (ft > cut) & (tt > 0)
    x = torch.where(ok, ft / torch.where(tt > 0, tt, 1.0), 1.0)
    return torch.where(ok, 1.0 / (torch.exp(x) - 1.0), 0.0)


def _time_reversal_partners(addresses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per BZ grid point: the canonical point of the pair {q, -q} and whether q is its
    negative (its leg-1 table is then the conjugate)."""
    lookup = {tuple(a): i for i, a in enumerate(addresses.tolist())}
    n = len(addresses)
    canon = np.arange(n, dtype="int64")
    conj = np.zeros(n, dtype=bool)
    for i, a in enumerate(addresses.tolist()):
        j = lookup.get((-a[0], -a[1], -a[2]))
        if j is not None and j < i:
            canon[i] = j
            conj[i] = True
    return canon, conj


def _default_memory_mb(torch: Any, dev: Any) -> float:
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        return 0.8 * free / MB
    return DEFAULT_MEMORY_MB
