"""The benchmark: label column × method × SPC × draw -> one table of scores.

:mod:`scdd.benchmark.config` holds its parameter group and grid,
:mod:`scdd.benchmark.runs` computes the runs and :mod:`scdd.benchmark.table`
aggregates them into the table and its markdown.
"""
