# kappaflow: thermal conductivity benchmark of foundation MLIPs (arXiv:2408.00755).
#
# Output layout (one wildcard per level):
#   results/{model}/{material}/relaxed.extxyz      relaxed structure + relax record
#   results/{model}/{material}/phono3py_disp.yaml  displacement datasets (phono3py)
#   results/{model}/{material}/forces_fc2.hdf5     forces of the fc2 supercells
#   results/{model}/{material}/fc2.hdf5            2nd-order force constants (phono3py)
#   results/{model}/{material}/phonons.json        harmonic gate: imaginary modes / symmetry
#   results/{model}/{material}/forces_fc3.hdf5     forces of the fc3 supercells
#   results/{model}/{material}/fc3.hdf5            3rd-order force constants (phono3py)
#   results/{model}/{material}/kappa.hdf5          Wigner RTA κ, all temperatures
#   results/{model}/{material}/kappa.json          status, κ summary, relax info, provenance
#   results/{model}/kappa.json.gz                  gathered, reference column names
#   results/{model}/{material}/gruneisen.hdf5      mode γ, c_qs(T), γ(T), α_V(T) (gruneisen.enabled)
#   results/{model}/{material}/gruneisen.json      status, γ(300 K), K_T, E(V) fit, relax records
#   results/{model}/{material}/thermal_expansion.csv  T, γ, C_V, α_V, α_linear, above_melting
#   results/{model}/{material}/gruneisen_fc3_check.json  γ from fc3 vs finite volumes
#   results/{model}/metrics.csv                    per-material SRD/SRE/SRME
#   results/{model}/gruneisen-metrics.csv          per-material γ SRD/SRE (signed too)
#   results/metrics.csv, results/metrics.md        one row per model
#   results/plots/...                              parity, κ(T), cumulative κ
#   results/finetune/{key}/...                     fine-tuning: export, labels, checked
#                                                  data, {key}.model + training.json,
#                                                  before-after.csv/.md (config finetune:)
#   logs/{rule}/{model}/{material}.log, logs/benchmark/{rule}/{model}/{material}.tsv

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/relax.smk"
include: "rules/phonons.smk"
include: "rules/kappa.smk"
include: "rules/evaluate.smk"
include: "rules/gruneisen.smk"
include: "rules/finetune.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
