"""NotebookRun: how one run (or a sweep) is driven to completion."""
