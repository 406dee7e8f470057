"""The user-facing API server on loopback with real TLS, certificates made as the local control plane
makes them, and a client that speaks as the API server's front proxy."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from nbkube.userapi.certs import ServingCertificate, ensure_serving_certificate, service_dns_names
from nbkube.userapi.frontproxy import RequestHeaderConfig, server_ssl_context
from nbkube.userapi.server import UserApi, serve_user_api
from nbkube_testenv import pki as pki_mod

HOST = "nbkube-api.nbkube.svc"


@dataclass
class Served:
    pki: pki_mod.Pki
    cert: ServingCertificate
    api: UserApi
    base: str

    def context(self, front_proxy: bool = True) -> ssl.SSLContext:
        crt, key = (
            (self.pki.front_proxy_client_crt, self.pki.front_proxy_client_key)
            if front_proxy
            else (None, None)
        )
        return client_context(self.cert.cert_file.with_name("ca.crt"), crt, key)


@asynccontextmanager
async def serving(tmp_path: Path, kube: Any, results: Any, **options: Any) -> AsyncIterator[Served]:
    pki = pki_mod.create(tmp_path / "pki", "10.0.0.1")
    config = RequestHeaderConfig(
        client_ca=pki.front_proxy_ca_crt.read_text(), allowed_names=(pki_mod.FRONT_PROXY_CLIENT,)
    )
    cert = ensure_serving_certificate(tmp_path / "tls", service_dns_names("nbkube-api", "nbkube"))
    api = UserApi(kube=kube, results=results, journal_dir=tmp_path, requestheader=config, **options)
    runner = await serve_user_api(
        api, "127.0.0.1", 0, server_ssl_context(cert.cert_file, cert.key_file, config)
    )
    try:
        yield Served(pki, cert, api, f"https://127.0.0.1:{runner.addresses[0][1]}")
    finally:
        await runner.cleanup()


def client_context(ca: Path, crt: Path | None, key: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = True
    if crt:
        context.load_cert_chain(str(crt), str(key))
    return context


async def get(base: str, path: str, context: ssl.SSLContext, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(
            base + path, ssl=context, headers={"Host": HOST, **headers}, server_hostname=HOST
        ) as response:
            return response.status, await response.text()
