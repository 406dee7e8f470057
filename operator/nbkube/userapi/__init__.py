"""The user-facing API: results, clones and logs, reached through the Kubernetes API server.

nbkube registers an aggregated API (`APIService v1alpha1.subresources.nbkube.io`) in front of the
operator's TLS port. The API server authenticates whoever calls, with whatever their kubeconfig holds
(client certificates, tokens, OIDC, exec plugins), authorises the request with RBAC, and forwards it to
the operator over mutual TLS with the caller's identity in `X-Remote-*` headers. The operator admits only
connections whose client certificate is signed by the request-header CA the API server publishes (and
named in its allowed names), then asks a SubjectAccessReview for that identity before it serves a byte.

Routes, below `/apis/subresources.nbkube.io/v1alpha1/namespaces/<namespace>/`:

    notebookruns/<run>/log[?follow=true]         NDJSON outputs as they stream  (get notebookruns/log)
    repositories/results/git/...                 git smart HTTP, read only      (get repositories/git)
    repositories/results/files/<path>?ref=<ref>  one file of the repository     (get repositories/files)
    repositories/results/runs                    the runs the repository holds  (get repositories/runs)
    repositories/results/html/<path>?ref=<ref>   a notebook as inert HTML       (get repositories/html)
    repositories/results/ui/                     the read-only web page          (get repositories/ui)

Every namespace has a repository of its own, so a clone never carries another tenant's history.
"""
