# Gather per model, metrics against the DFT reference, tables and figures (local rules).


localrules:
    leaderboard,
    parity_grid,
    gruneisen_metrics,
    gamma_parity_plot,
    alpha_plot,
    gather,
    metrics,
    summary,
    parity_plot,
    kappa_vs_temperature,
    cumulative_plots,


rule gather:
    input:
        records=get_records,
        kappa=get_kappa_files,
    output:
        table="results/{model}/kappa.json.gz",
    log:
        "logs/gather/{model}.log",
    benchmark:
        "logs/benchmark/gather/{model}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        checks=config["checks"],
    script:
        "../scripts/gather.py"


rule metrics:
    input:
        table="results/{model}/kappa.json.gz",
        reference=REFERENCE_KAPPA,
    output:
        metrics=report(
            "results/{model}/metrics.csv",
            caption="../report/metrics.rst",
            category="Metrics",
            subcategory="Per material",
            labels={"model": "{model}"},
        ),
        summary="results/{model}/metrics-summary.json",
    log:
        "logs/metrics/{model}.log",
    benchmark:
        "logs/benchmark/metrics/{model}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        materials=MATERIALS,
        temperature=REFERENCE_TEMPERATURE,
        computed_temperatures=TEMPS,
        reference_model=CONFIG.reference_model,
        checks=config["checks"],
    script:
        "../scripts/metrics.py"


rule summary:
    input:
        summaries=expand("results/{model}/metrics-summary.json", model=MODELS),
        gamma=get_gamma_summaries,
    output:
        csv=report(
            "results/metrics.csv",
            caption="../report/summary.rst",
            category="Metrics",
            subcategory="Summary (all models)",
            labels={"table": "metrics (all models)"},
        ),
        markdown="results/metrics.md",
    log:
        "logs/summary/summary.log",
    benchmark:
        "logs/benchmark/summary/summary.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        models=MODELS,
        reference=config["reference"]["kappa"],
    script:
        "../scripts/summary.py"


rule parity_plot:
    input:
        metrics="results/{model}/metrics.csv",
    output:
        report(
            "results/plots/parity-{model}-T{temperature}K.svg",
            caption="../report/parity.rst",
            category="Parity",
            subcategory="Per model",
            labels={"model": "{model}", "T": "{temperature} K"},
        ),
    log:
        "logs/parity/{model}-T{temperature}K.log",
    benchmark:
        "logs/benchmark/parity/{model}-T{temperature}K.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/parity_plot.py"


rule kappa_vs_temperature:
    input:
        table="results/{model}/kappa.json.gz",
    output:
        report(
            "results/plots/kappa-vs-T-{model}.svg",
            caption="../report/kappa_vs_t.rst",
            category="Kappa(T)",
            labels={"model": "{model}"},
        ),
    log:
        "logs/kappa_vs_t/{model}.log",
    benchmark:
        "logs/benchmark/kappa_vs_t/{model}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/kappa_vs_t.py"


rule cumulative_plots:
    input:
        table="results/{model}/kappa.json.gz",
        reference=REFERENCE_KAPPA,
    output:
        report(
            directory("results/plots/cumulative-{model}"),
            patterns=["{material}.svg"],
            caption="../report/cumulative.rst",
            category="Cumulative kappa",
            labels={"model": "{model}", "material": "{material}"},
        ),
    log:
        "logs/cumulative/{model}.log",
    benchmark:
        "logs/benchmark/cumulative/{model}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        materials=CONFIG.scored,
        temperature=REFERENCE_TEMPERATURE,
    script:
        "../scripts/cumulative_plots.py"


rule parity_grid:
    input:
        metrics=expand("results/{model}/metrics.csv", model=MODELS),
    output:
        png=report(
            "results/plots/parity-grid.png",
            caption="../report/parity_grid.rst",
            category="Parity",
            subcategory="All models",
            labels={"figure": "κ parity, one panel per model"},
        ),
        svg="results/plots/parity-grid.svg",
    log:
        "logs/parity_grid/parity_grid.log",
    benchmark:
        "logs/benchmark/parity_grid/parity_grid.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        models=MODELS,
    script:
        "../scripts/parity_grid.py"


rule leaderboard:
    input:
        metrics=expand("results/{model}/metrics.csv", model=MODELS),
        reference=REFERENCE_KAPPA,
    output:
        table=report(
            "results/leaderboard.csv",
            caption="../report/leaderboard.rst",
            category="Metrics",
            subcategory="Summary (all models)",
            labels={"table": "leaderboard"},
        ),
        markdown="results/leaderboard.md",
        ranking=report(
            "results/plots/ranking.png",
            caption="../report/ranking.rst",
            category="Leaderboard",
            labels={"figure": "κ_SRME ranking"},
        ),
        ranking_svg="results/plots/ranking.svg",
        scatter=report(
            "results/plots/sre-vs-srme.png",
            caption="../report/sre_srme.rst",
            category="Leaderboard",
            labels={"figure": "SRE vs SRME"},
        ),
        scatter_svg="results/plots/sre-vs-srme.svg",
    log:
        "logs/leaderboard/leaderboard.log",
    benchmark:
        "logs/benchmark/leaderboard/leaderboard.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        models=MODELS,
        reference=config["reference"]["kappa"],
        published=get_published_dir,
    script:
        "../scripts/leaderboard.py"
