"""Before/after tables and side-by-side parity plots (rule finetune_compare)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.steps.finetune import run_finetune_compare

out = snakemake.output
run_finetune_compare(
    before_csv=snakemake.input.before,
    after_csv=snakemake.input.after,
    split=snakemake.params.split,
    base=snakemake.params.base,
    key=snakemake.wildcards.ftmodel,
    out_csv=out.table,
    out_summary=out.summary,
    out_md=out.markdown,
    out_png=out.plot,
    out_svg=out.plot_svg,
)
