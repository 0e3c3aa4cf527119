# Fine-tuning (config `finetune:`; README "Fine-tuning"): training structures out, labels
# in and checked, mace's own training entry point, the fine-tuned model benchmarked as a
# model key like any other, before/after tables and side-by-side parity plots.


localrules:
    finetune_compare,


rule finetune_export:
    input:
        structures=STRUCTURES,
    output:
        frames="results/finetune/{ftmodel}/export/structures.extxyz",
        manifest="results/finetune/{ftmodel}/export/manifest.json",
    log:
        "logs/finetune_export/{ftmodel}.log",
    benchmark:
        "logs/benchmark/finetune_export/{ftmodel}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        materials=lambda w: FT_TRAIN[w.ftmodel],
        export=lambda w: FINETUNE[w.ftmodel].export.as_dict(),
        phono3py=config["phono3py"],
        defaults=config["structure_defaults"],
        overrides=config["material_overrides"],
    script:
        "../scripts/finetune_export.py"


rule finetune_label:
    input:
        exported="results/finetune/{ftmodel}/export/structures.extxyz",
    output:
        labels="results/finetune/{ftmodel}/labels.extxyz",
    log:
        "logs/finetune_label/{ftmodel}.log",
    benchmark:
        "logs/benchmark/finetune_label/{ftmodel}.tsv"
    conda:
        lambda w: env_for(FINETUNE[w.ftmodel].label_with)
    threads: 1
    resources:
        mem_mb=8000,
        runtime=runtime_for("finetune_label"),
    params:
        model=lambda w: model_dict(FINETUNE[w.ftmodel].label_with),
        with_stress=lambda w: FINETUNE[w.ftmodel].train.stress_weight > 0,
    script:
        "../scripts/finetune_label.py"


rule finetune_check:
    input:
        labels=get_ft_labels,
        exported="results/finetune/{ftmodel}/export/structures.extxyz",
    output:
        data="results/finetune/{ftmodel}/train_data.extxyz",
        summary="results/finetune/{ftmodel}/train_data.json",
    log:
        "logs/finetune_check/{ftmodel}.log",
    benchmark:
        "logs/benchmark/finetune_check/{ftmodel}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        match_export=lambda w: FINETUNE[w.ftmodel].match_export,
    script:
        "../scripts/finetune_check.py"


rule finetune_train:
    input:
        data="results/finetune/{ftmodel}/train_data.extxyz",
        base=get_ft_base_file,
    output:
        model="results/finetune/{ftmodel}/{ftmodel}.model",
        record="results/finetune/{ftmodel}/training.json",
    log:
        "logs/finetune_train/{ftmodel}.log",
    benchmark:
        "logs/benchmark/finetune_train/{ftmodel}.tsv"
    conda:
        "../envs/mace.yaml"
    threads: 2
    resources:
        mem_mb=16000,
        runtime=runtime_for("finetune_train"),
    params:
        base=lambda w: model_dict(FINETUNE[w.ftmodel].base),
        settings=lambda w: FINETUNE[w.ftmodel].train.as_dict(),
        workroot=lambda w, output: str(Path(output.model).parent / "train"),
    script:
        "../scripts/finetune_train.py"


rule finetune_compare:
    input:
        before=lambda w: f"results/{FINETUNE[w.ftmodel].base}/metrics.csv",
        after="results/{ftmodel}/metrics.csv",
        training="results/finetune/{ftmodel}/training.json",
    output:
        table=report(
            "results/finetune/{ftmodel}/before-after.csv",
            caption="../report/finetune.rst",
            category="Fine-tuning",
            labels={"model": "{ftmodel}", "table": "per material"},
        ),
        summary="results/finetune/{ftmodel}/before-after-summary.csv",
        markdown="results/finetune/{ftmodel}/before-after.md",
        plot=report(
            "results/plots/finetune-{ftmodel}.svg",
            caption="../report/finetune.rst",
            category="Fine-tuning",
            labels={"model": "{ftmodel}", "table": "parity before/after"},
        ),
    log:
        "logs/finetune_compare/{ftmodel}.log",
    benchmark:
        "logs/benchmark/finetune_compare/{ftmodel}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        split=lambda w: FT_SPLIT[w.ftmodel],
        base=lambda w: FINETUNE[w.ftmodel].base,
    script:
        "../scripts/finetune_compare.py"
