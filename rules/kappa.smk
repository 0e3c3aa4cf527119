# Conductivity, all temperatures at once: phono3py (CPU, OpenMP/Rayon threads = the job's
# threads), its three-phonon interaction by phono3py or kappaflow's engine
# (phono3py.phph_engine; then on the GPU of the job unless `device: cpu`).


rule kappa:
    input:
        relaxed="results/{model}/{material}/relaxed.extxyz",
        phonons="results/{model}/{material}/phonons.json",
        fc2="results/{model}/{material}/fc2.hdf5",
        fc3="results/{model}/{material}/fc3.hdf5",
        forces_fc3="results/{model}/{material}/forces_fc3.hdf5",
    output:
        kappa="results/{model}/{material}/kappa.hdf5",
        record="results/{model}/{material}/kappa.json",
    log:
        "logs/kappa/{model}/{material}.log",
    benchmark:
        "logs/benchmark/kappa/{model}/{material}.tsv"
    conda:
        KAPPA_ENV
    threads: 1  # two 1-thread κ jobs beat one 2-thread job (docs/benchmarks.md); profiles raise it
    resources:
        mem_mb=4000,
        runtime=runtime_for("kappa"),
        gpu=KAPPA_GPUS,
    params:
        temperatures=TEMPS,
        phono3py=config["phono3py"],
    script:
        "../scripts/kappa.py"
