"""Bringing the user-facing API up in the operator: front-proxy settings, serving certificate, the
APIService's caBundle, a Kubernetes client of its own, the TLS listener."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

from aiohttp import web

from nbkube.config import Settings
from nbkube.kube import Kube, KubeError, resource_path
from nbkube.userapi import paths
from nbkube.userapi.certs import ensure_serving_certificate, service_dns_names
from nbkube.userapi.frontproxy import (
    AUTHENTICATION_CONFIGMAP,
    parse_authentication_configmap,
    server_ssl_context,
)
from nbkube.userapi.server import UserApi, serve_user_api
from nbkube.userapi.sessions import Sessions

# Requests on behalf of users (reviews, run reads) go through a pool of their own, so no number of
# callers can take the connections the operator's own work needs.
USER_CONNECTIONS = 4
USER_REQUEST_TIMEOUT = 10.0


async def publish_ca_bundle(kube: Kube, ca_pem: bytes, logger: logging.Logger) -> None:
    path = f"/apis/apiregistration.k8s.io/v1/apiservices/{paths.APISERVICE}"
    bundle = base64.b64encode(ca_pem).decode()
    try:
        current = await kube.get(path)
        if (current.get("spec") or {}).get("caBundle") != bundle:
            await kube.merge_patch(path, {"spec": {"caBundle": bundle}})
            logger.info("APIService %s now trusts this operator's serving CA", paths.APISERVICE)
    except KubeError as exc:
        logger.warning(
            "could not write the serving CA into APIService %s (%s): the API server will not reach "
            "the user-facing API until its caBundle holds %s",
            paths.APISERVICE,
            exc,
            "the CA in the operator's data directory (tls/ca.crt)",
        )


async def start_user_api(
    kube: Kube, results: Any, settings: Settings, logger: logging.Logger, *, sessions: Sessions | None = None
) -> web.AppRunner:
    reader = await Kube.open(kube.configuration, connections=USER_CONNECTIONS, timeout=USER_REQUEST_TIMEOUT)
    try:
        namespace, name = AUTHENTICATION_CONFIGMAP
        configmap = await reader.get(resource_path("v1", "configmaps", namespace, name))
        requestheader = parse_authentication_configmap(configmap)
        cert = await asyncio.to_thread(
            ensure_serving_certificate,
            settings.data_dir / "tls",
            service_dns_names(settings.api_service, settings.namespace),
        )
        if settings.api_manage_ca_bundle:
            await publish_ca_bundle(kube, cert.ca_pem, logger)
        context = await asyncio.to_thread(server_ssl_context, cert.cert_file, cert.key_file, requestheader)
        api = UserApi(
            kube=reader,
            results=results,
            journal_dir=settings.journal_dir,
            requestheader=requestheader,
            sessions=sessions,
        )

        async def close_reader(app: web.Application) -> None:
            await reader.close()

        runner = await serve_user_api(api, settings.api_host, settings.api_port, context, close_reader)
    except BaseException:
        await reader.close()
        raise
    logger.info(
        "user-facing API (results, clones, logs) on :%s behind APIService %s",
        settings.api_port,
        paths.APISERVICE,
    )
    return runner
