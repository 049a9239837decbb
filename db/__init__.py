"""Persistence: the `tasks` and `workflows` tables, their engine and their queries."""
