"""Who is asking: the API server's front-proxy client certificate and the identity it forwards.

The API server publishes how it forwards identities in the ConfigMap
`kube-system/extension-apiserver-authentication` (keys `requestheader-*`). Only a TLS client whose
certificate chains to that request-header CA, and whose common name is one of the allowed names (any,
when the list is empty, as the API server itself treats it), may assert an identity in headers; anyone
else never gets past the TLS handshake.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

AUTHENTICATION_CONFIGMAP = ("kube-system", "extension-apiserver-authentication")


class NotAuthenticated(Exception):
    """The request carries no identity we can trust."""


@dataclass(frozen=True)
class RequestHeaderConfig:
    client_ca: str  # PEM bundle
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    uid_headers: tuple[str, ...] = ("X-Remote-Uid",)
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)


@dataclass(frozen=True)
class UserInfo:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = field(default_factory=tuple)

    def review_user(self) -> dict[str, Any]:
        """The user fields of a SubjectAccessReview spec."""
        spec: dict[str, Any] = {"user": self.name, "groups": list(self.groups)}
        if self.uid:
            spec["uid"] = self.uid
        if self.extra:
            spec["extra"] = {k: list(v) for k, v in self.extra}
        return spec


def _list(data: dict[str, str], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = data.get(key)
    if raw is None:
        return default
    value = json.loads(raw)
    return tuple(str(v) for v in value or ())


def parse_authentication_configmap(configmap: dict[str, Any]) -> RequestHeaderConfig:
    """The front-proxy settings from `extension-apiserver-authentication`; ValueError when the API
    server has no request-header CA (aggregation is not configured)."""
    data = configmap.get("data") or {}
    ca = data.get("requestheader-client-ca-file", "").strip()
    if not ca:
        raise ValueError(
            "the API server publishes no requestheader-client-ca-file in "
            "kube-system/extension-apiserver-authentication: the aggregation layer is not configured "
            "(kube-apiserver --requestheader-client-ca-file and --proxy-client-cert-file)"
        )
    return RequestHeaderConfig(
        client_ca=ca + "\n",
        allowed_names=_list(data, "requestheader-allowed-names", ()),
        username_headers=_list(data, "requestheader-username-headers", ("X-Remote-User",)),
        uid_headers=_list(data, "requestheader-uid-headers", ("X-Remote-Uid",)),
        group_headers=_list(data, "requestheader-group-headers", ("X-Remote-Group",)),
        extra_prefixes=_list(data, "requestheader-extra-headers-prefix", ("X-Remote-Extra-",)),
    )


def server_ssl_context(cert_file: Path, key_file: Path, config: RequestHeaderConfig) -> ssl.SSLContext:
    """TLS for the user-facing port: our serving certificate; a client certificate of the request-header
    CA is required, so nothing but the API server's front proxy completes a handshake."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=config.client_ca)
    return context


def _common_name(peercert: dict[str, Any] | None) -> str | None:
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def identity(peercert: dict[str, Any] | None, headers: Any, config: RequestHeaderConfig) -> UserInfo:
    """The caller the front proxy vouches for. `peercert` is the verified client certificate
    (ssl's getpeercert()); `headers` a case-insensitive multi-dict (aiohttp's request.headers)."""
    if not peercert:
        raise NotAuthenticated("no client certificate")
    cn = _common_name(peercert)
    if config.allowed_names and cn not in config.allowed_names:
        raise NotAuthenticated(f"client certificate {cn!r} is not an allowed front proxy")
    name = next((headers[h] for h in config.username_headers if headers.get(h)), "")
    if not name:
        raise NotAuthenticated("the front proxy named no user")
    uid = next((headers[h] for h in config.uid_headers if headers.get(h)), "")
    groups = tuple(g for h in config.group_headers for g in headers.getall(h, ()))
    extra: dict[str, list[str]] = {}
    for key in headers:
        for prefix in config.extra_prefixes:
            if key.lower().startswith(prefix.lower()) and len(key) > len(prefix):
                # The API server percent-encodes extra keys (they may hold '/' or ':').
                extra.setdefault(unquote(key[len(prefix) :]).lower(), []).extend(headers.getall(key))
    return UserInfo(
        name=name,
        uid=uid,
        groups=groups,
        extra=tuple(sorted((k, tuple(dict.fromkeys(v))) for k, v in extra.items())),
    )
