"""The experiment harness around the library: `maporl reproduce` (reproduce.py) over the arms of arms.py with the
settings of settings.py, its claims with paired intervals (claims.py, stats.py), the results tables (tables.py),
`maporl compare` (compare.py), the discussion behaviours (behaviour.py), what the incentives do to the advantages
(incentives.py), the HTML report (report.py, figures.py)."""
