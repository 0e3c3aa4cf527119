"""kappaflow: lattice thermal conductivity benchmark of foundation MLIPs (arXiv:2408.00755).

The package holds the logic as small functions; the Snakemake workflow (``Snakefile``)
and the CLI (``kappaflow``) call :mod:`kappaflow.steps`. Importing kappaflow imports
neither phono3py nor any model package.
"""

__version__ = "0.1.0"
