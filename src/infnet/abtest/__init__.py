"""Online A/B tests on the simulated ad platform, through the real server (run.py), with
their statistics (stats.py), nightly features (features.py) and report (report.py)."""
