# Conductivity (CPU, OpenMP/Rayon threads = the job's threads), all temperatures at once.


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
        "../envs/analysis.yaml"
    threads: 1  # two 1-thread κ jobs beat one 2-thread job (docs/benchmarks.md); profiles raise it
    resources:
        mem_mb=4000,
        runtime=runtime_for("kappa"),
    params:
        temperatures=TEMPS,
        phono3py=config["phono3py"],
    script:
        "../scripts/kappa.py"
