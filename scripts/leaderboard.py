"""The user's models among the published ones, ranked on the same materials (rule leaderboard)."""

import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)
sys.path.insert(0, str(__import__("pathlib").Path(snakemake.scriptdir).parent / "src"))
from kappaflow.reference import ResolvedDir
from kappaflow.steps.evaluate import run_leaderboard

out = snakemake.output
published = snakemake.params.published
run_leaderboard(
    metrics_csvs=snakemake.input.metrics,
    models=snakemake.params.models,
    reference=snakemake.input.reference,
    reference_name=snakemake.params.reference,
    published=ResolvedDir(__import__("pathlib").Path(published["path"]), published["source"]),
    out_csv=out.table,
    out_md=out.markdown,
    out_ranking=(out.ranking, out.ranking_svg),
    out_scatter=(out.scatter, out.scatter_svg),
)
