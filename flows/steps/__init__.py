"""Prefect tasks: the steps of the flows, declared with one preset (`options.step`). Each wraps
plain functions from `media`, `transcription`, `core.storage` and (the reprocessing flow's
passes) `domain`, adding retries and progress reports."""
