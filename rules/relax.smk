rule relax:
    input:
        model_file=get_model_file,
        structures=STRUCTURES,
    output:
        relaxed="results/{model}/{material}/relaxed.extxyz",
    log:
        "logs/relax/{model}/{material}.log",
    benchmark:
        "logs/benchmark/relax/{model}/{material}.tsv"
    conda:
        get_model_env
    threads: 1
    resources:
        mem_mb=4000,
        runtime=runtime_for("relax"),
    params:
        model=get_model,
        relax=config["relax"],
        structure_defaults=config["structure_defaults"],
        material_overrides=config["material_overrides"],
    script:
        "../scripts/relax.py"
