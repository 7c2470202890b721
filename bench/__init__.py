"""DeltaForge benchmarks: the worker against a reference reader of the same change set, same run.

`python -m bench run pg-kafka` is the first scenario (see bench/README.md). Everything here uses
the standard library and the project's own dependencies only; profilers are optional extras.
"""
