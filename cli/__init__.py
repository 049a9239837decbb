"""The `audioflow` command line: run the embedded stack, submit and follow tasks."""
