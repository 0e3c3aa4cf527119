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
        materials=get_ft_materials,
        export=get_ft_export,
        phono3py=CONFIG.force_phono3py,
        structure_defaults=config["structure_defaults"],
        material_overrides=config["material_overrides"],
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
        get_ft_teacher_env
    threads: 1
    resources:
        mem_mb=8000,
        runtime=runtime_for("finetune_label"),
    params:
        model=get_ft_teacher,
        with_stress=get_ft_with_stress,
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
        match_export=get_ft_match_export,
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
        model=get_ft_base,
        train=get_ft_train,
        workroot=get_ft_workroot,
    script:
        "../scripts/finetune_train.py"


rule finetune_compare:
    input:
        before=get_ft_before,
        after="results/{ftmodel}/metrics.csv",
        training="results/finetune/{ftmodel}/training.json",
    output:
        table=report(
            "results/finetune/{ftmodel}/before-after.csv",
            caption="../report/finetune.rst",
            category="Fine-tuning",
            subcategory="Per material",
            labels={"model": "{ftmodel}"},
        ),
        summary="results/finetune/{ftmodel}/before-after-summary.csv",
        markdown="results/finetune/{ftmodel}/before-after.md",
        plot=report(
            "results/plots/finetune-{ftmodel}.png",
            caption="../report/finetune.rst",
            category="Fine-tuning",
            subcategory="Parity before/after",
            labels={"model": "{ftmodel}"},
        ),
        plot_svg="results/plots/finetune-{ftmodel}.svg",
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
        split=get_ft_split,
        base=get_ft_base_key,
    script:
        "../scripts/finetune_compare.py"
