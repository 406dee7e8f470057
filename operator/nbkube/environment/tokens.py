"""Gateway tokens derived from one operator key, so the operator never reads a token Secret back.

    token  = HMAC-SHA256(key, "token\\0<namespace>/<environment>/<environment uid>")
    Secret = "<environment>-gateway-token-" + 10 hex digits of HMAC-SHA256(key, "secret-name\\0" ...)

The operator holds `create` on Secrets cluster-wide but `get` only on its key Secret, in its own
namespace. A Secret of a token Secret's name cannot exist before nbkube creates it (its name needs the
key), so creating it either succeeds or finds the one nbkube made earlier; an administrator's Secret is
never mounted into a gateway pod. A new key (the key Secret deleted, then the operator restarted) gives
every environment a new token Secret name, which rolls its gateway pods onto the new tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from nbkube import API_VERSION
from nbkube.environment.objects import token_secret_name
from nbkube.kube import Conflict, Kube, KubeError, resource_path

KEY_BYTES = 32
KEY_DATA = "key"
SECRET_SUFFIX_HEX = 10


class TokenKeyUnavailable(Exception):
    """The operator's key Secret can neither be read nor created."""


def _digest(key: bytes, purpose: str, namespace: str, environment: str, uid: str) -> str:
    message = f"{purpose}\0{namespace}/{environment}/{uid}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def derive_token(key: bytes, namespace: str, environment: str, uid: str) -> str:
    return _digest(key, "token", namespace, environment, uid)


def secret_suffix(key: bytes, namespace: str, environment: str, uid: str) -> str:
    return _digest(key, "secret-name", namespace, environment, uid)[:SECRET_SUFFIX_HEX]


def key_secret(name: str, namespace: str, key: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "nbkube", "app.kubernetes.io/managed-by": "nbkube"},
        },
        "type": "Opaque",
        "immutable": True,
        "data": {KEY_DATA: base64.b64encode(key).decode()},
    }


def decode_key(secret: dict[str, Any]) -> bytes:
    meta = secret.get("metadata") or {}
    where = f"Secret {meta.get('namespace')}/{meta.get('name')}"
    raw = (secret.get("data") or {}).get(KEY_DATA)
    if not raw:
        raise TokenKeyUnavailable(f"{where} has no data.{KEY_DATA}")
    key = base64.b64decode(raw)
    if len(key) < KEY_BYTES:
        raise TokenKeyUnavailable(
            f"{where}: the key must hold at least {KEY_BYTES} bytes, it holds {len(key)}"
        )
    return key


async def load_or_create_key(kube: Kube, namespace: str, name: str) -> bytes:
    """The operator's key from the Secret `name` in its own namespace, created (random) if absent."""
    path = resource_path("v1", "secrets", namespace, name)
    try:
        secret = await kube.get_or_none(path)
        if secret is None:
            key = secrets.token_bytes(KEY_BYTES)
            try:
                await kube.create(key_secret(name, namespace, key))
                return key
            except Conflict:  # another operator process created it meanwhile
                secret = await kube.get(path)
    except KubeError as exc:
        if exc.status != 403:
            raise
        raise TokenKeyUnavailable(
            f"the gateway token key Secret {namespace}/{name} cannot be read ({exc.message}): the "
            f"operator needs `get` on secrets/{name} in namespace {namespace} (the chart's Role)"
        ) from None
    return decode_key(secret)


@dataclass(frozen=True)
class GatewayTokens:
    """Computes each environment's gateway token and token Secret name from the operator key."""

    key: bytes
    kube: Kube

    @classmethod
    async def load(cls, kube: Kube, namespace: str, key_secret_name: str) -> GatewayTokens:
        return cls(await load_or_create_key(kube, namespace, key_secret_name), kube)

    def token(self, namespace: str, environment: str, uid: str) -> str:
        return derive_token(self.key, namespace, environment, uid)

    def secret_name(self, namespace: str, environment: str, uid: str) -> str:
        return token_secret_name(environment, secret_suffix(self.key, namespace, environment, uid))

    async def token_for(self, namespace: str, environment: str) -> str | None:
        """The token of an environment as it exists now (its uid is part of the token); None if it is gone."""
        env = await self.kube.get_or_none(
            resource_path(API_VERSION, "notebookenvironments", namespace, environment)
        )
        if env is None:
            return None
        return self.token(namespace, environment, env["metadata"]["uid"])
