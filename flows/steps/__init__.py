"""Prefect tasks: the steps of the flows. Each wraps plain functions from `flows.audio`,
`flows.transcription` and `core.storage`, adding retries and progress reports."""
