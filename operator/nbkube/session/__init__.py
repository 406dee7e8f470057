"""NotebookSessions: a live kernel driven cell by cell, every change a commit on the session's branch.

Built from the same kernel-work parts as runs (nbkube.kernelwork): a kernel taken or reattached, the
silent setup, cells executed with a journal, raced against what can stop them.
"""
