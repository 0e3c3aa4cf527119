# Force rules (GPU-capable): displaced supercells -> forces -> fc2 (+ gate), fc3.


rule fc2:
    input:
        model_file=get_model_file,
        relaxed="results/{model}/{material}/relaxed.extxyz",
    output:
        fc2="results/{model}/{material}/fc2.hdf5",
        forces="results/{model}/{material}/forces_fc2.hdf5",
        disp="results/{model}/{material}/phono3py_disp.yaml",
        phonons="results/{model}/{material}/phonons.json",
    log:
        "logs/fc2/{model}/{material}.log",
    benchmark:
        "logs/benchmark/fc2/{model}/{material}.tsv"
    conda:
        get_model_env
    threads: 1  # side-by-side 1-thread force jobs: 1.55x one 2-thread job at a time on CPU
    resources:
        mem_mb=6000,
        runtime=runtime_for("fc2"),
    params:
        model=get_model,
        phono3py=CONFIG.force_phono3py,
        forces=config["forces"],
    script:
        "../scripts/fc2.py"


rule fc3:
    input:
        model_file=get_model_file,
        relaxed="results/{model}/{material}/relaxed.extxyz",
        phonons="results/{model}/{material}/phonons.json",
    output:
        fc3="results/{model}/{material}/fc3.hdf5",
        forces="results/{model}/{material}/forces_fc3.hdf5",
    log:
        "logs/fc3/{model}/{material}.log",
    benchmark:
        "logs/benchmark/fc3/{model}/{material}.tsv"
    conda:
        get_model_env
    threads: 1  # side-by-side 1-thread force jobs: 1.55x one 2-thread job at a time on CPU
    resources:
        mem_mb=6000,
        runtime=runtime_for("fc3"),
    params:
        model=get_model,
        phono3py=CONFIG.force_phono3py,
        forces=config["forces"],
    script:
        "../scripts/fc3.py"
