"""The demo: `python -m prealign_experiments.english_clone` (`make demo`).

Builds the English-Clone setting, trains joint training and PreAlign (``--full``: four arms x 3
seeds) with identical token budgets through the ordinary trainer, evaluates every run, and writes
``runs/demo/report.md`` with tables and plots. See ``../__main__.py`` for the flags, ``config.py``
for the budget rule, ``runner.py`` for the processes and ``report.py`` for the report.
"""
