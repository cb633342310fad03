"""The paper's output from saved results: tables and fits (tables.py), Figs. 4-7 and the
linear check (figures.py), the claim-by-claim report (report.py). Never trains."""
