# A material's relax depends on its own frame, not on the whole structures file: the file
# is an ancient() input (read, never compared by mtime) and the frame's content hash is a
# param, so appending or editing one frame re-runs that material only.
rule relax:
    input:
        model_file=get_model_file,
        structures=ancient(STRUCTURES),
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
        structure=get_structure_sha256,
        relax=config["relax"],
        structure_defaults=config["structure_defaults"],
        material_overrides=get_material_overrides,
    script:
        "../scripts/relax.py"
