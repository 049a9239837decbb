"""audioflow's benchmark harness: `python -m bench` (or `make bench`; `BENCH_QUICK=1` for short).

Every figure is measured against a baseline taken in the same run on the same machine
(plain ffmpeg, the Whisper engine alone, a bare `import prefect`), because on a shared
two-core machine only a ratio against something measured minutes apart means anything.
"""
