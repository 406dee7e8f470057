"""The kernel-work parts that runs and sessions share.

Taking a kernel (or reattaching to one after an operator restart), racing work against what can
stop it, executing cells with a journal, and turning an error of the bookkeeping into a failure
with a reason: each is a small part here, so a NotebookRun and a NotebookSession are assembled from
the same pieces and a fix in one is a fix in both. Nothing here knows run or session status.
"""
