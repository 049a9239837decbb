"""Prefect tasks: the steps of the flows. Each wraps plain functions from `media`,
`transcription` and `core.storage`, adding retries and progress reports."""
