"""One function per workflow step: read inputs, call the physics, write outputs.

The Snakemake scripts and the CLI call exactly these functions, so a CLI run of one
material writes the same files as the workflow. One module per pipeline stage, in the order
the data flow:

=================  ==========================================================
``relax``          structure -> relaxed.extxyz (relax record in its info)
``harmonic``       fc2 forces, fc2.hdf5, phonons.json (the κ gate)
``anharmonic``     fc3 forces, fc3.hdf5
``kappa``          Wigner RTA κ: kappa.hdf5, kappa.json
``evaluate``       gathered table, metrics, summary, figures
``gruneisen``      mode γ, γ(T), K_T, α_V(T); γ metrics and figures
``finetune``       export, labels, training, before/after
``resume``         which CLI steps are current (the workflow leaves that to Snakemake)
=================  ==========================================================

Files are touched only through :mod:`kappaflow.storage`. Physics failures (imaginary modes,
broken symmetry, exceptions of the physics) become a status in the outputs; the DAG stays
static and downstream steps write status-only placeholders.
"""
