# Grüneisen parameters, bulk modulus, thermal expansion (PROTOCOL §7), scored against DFT γ.
# Switched on/off by config gruneisen.enabled (get_final_output asks for these files).


rule gruneisen:
    input:
        model_file=get_model_file,
        relaxed="results/{model}/{material}/relaxed.extxyz",
        fc2="results/{model}/{material}/fc2.hdf5",
    output:
        hdf5="results/{model}/{material}/gruneisen.hdf5",
        record="results/{model}/{material}/gruneisen.json",
        curve="results/{model}/{material}/thermal_expansion.csv",
    log:
        "logs/gruneisen/{model}/{material}.log",
    benchmark:
        "logs/benchmark/gruneisen/{model}/{material}.tsv"
    conda:
        get_model_env
    threads: 1
    resources:
        mem_mb=6000,
        runtime=runtime_for("gruneisen"),
    params:
        model=get_model,
        gruneisen=config["gruneisen"],
        relax=config["relax"],
        phono3py=CONFIG.force_phono3py,
        melting_point=get_melting_point,
    script:
        "../scripts/gruneisen.py"


rule gruneisen_fc3_check:
    input:
        relaxed="results/{model}/{material}/relaxed.extxyz",
        forces_fc3="results/{model}/{material}/forces_fc3.hdf5",
        hdf5="results/{model}/{material}/gruneisen.hdf5",
        record="results/{model}/{material}/gruneisen.json",
    output:
        check="results/{model}/{material}/gruneisen_fc3_check.json",
    log:
        "logs/gruneisen_fc3_check/{model}/{material}.log",
    benchmark:
        "logs/benchmark/gruneisen_fc3_check/{model}/{material}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=runtime_for("gruneisen_fc3_check"),
    params:
        gruneisen=config["gruneisen"],
        phono3py=CONFIG.force_phono3py,
    script:
        "../scripts/gruneisen_fc3_check.py"


rule gruneisen_metrics:
    input:
        records=get_gruneisen_records,
        hdf5=get_gruneisen_hdf5,
        checks=get_gruneisen_checks,
        reference=GAMMA_REFERENCE,
    output:
        metrics=report(
            "results/{model}/gruneisen-metrics.csv",
            caption="../report/gruneisen_metrics.rst",
            category="Grüneisen",
            subcategory="Per material",
            labels={"model": "{model}"},
        ),
        summary="results/{model}/gruneisen-summary.json",
    log:
        "logs/gruneisen_metrics/{model}.log",
    benchmark:
        "logs/benchmark/gruneisen_metrics/{model}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        mode_reference=config["gruneisen"].get("mode_reference"),
    script:
        "../scripts/gruneisen_metrics.py"


rule gamma_parity_plot:
    input:
        metrics="results/{model}/gruneisen-metrics.csv",
    output:
        png=report(
            "results/plots/gamma-parity-{model}.png",
            caption="../report/gamma_parity.rst",
            category="Grüneisen",
            subcategory="γ parity (300 K)",
            labels={"model": "{model}"},
        ),
        svg="results/plots/gamma-parity-{model}.svg",
    log:
        "logs/gamma_parity_plot/{model}.log",
    benchmark:
        "logs/benchmark/gamma_parity_plot/{model}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    script:
        "../scripts/gamma_parity_plot.py"


rule alpha_plot:
    input:
        curves=get_alpha_curves,
        records=get_gruneisen_records,
    output:
        png=report(
            "results/plots/alpha-V-{model}.png",
            caption="../report/alpha.rst",
            category="Grüneisen",
            subcategory="α_V(T)",
            labels={"model": "{model}"},
        ),
        svg="results/plots/alpha-V-{model}.svg",
    log:
        "logs/alpha_plot/{model}.log",
    benchmark:
        "logs/benchmark/alpha_plot/{model}.tsv"
    conda:
        "../envs/analysis.yaml"
    threads: 1
    script:
        "../scripts/alpha_plot.py"
