"""NotebookEnvironment: what a kernel runtime is reconciled into."""
