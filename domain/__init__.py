"""The rules both the API and the flows follow: services, the flow-run outbox, the reconciler,
reprocessing, uploads, outputs, the task-type registry and the Prefect gateway.

Imports neither Litestar nor flow code (`make lint` checks it with import-linter); the API
(`api/`), the flows (`flows/`) and the CLI call into this package.
"""
