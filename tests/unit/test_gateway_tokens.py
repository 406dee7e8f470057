"""Gateway tokens are derived from the operator key, and the egress settings read from NBKUBE_*."""

import hashlib
import hmac

import pytest
from nbkube.config import Settings
from nbkube.environment import tokens
from nbkube.environment.service import gateway_egress
from pydantic import ValidationError

KEY = b"k" * 32


def test_a_token_is_the_hmac_of_namespace_environment_and_uid():
    expected = hmac.new(KEY, b"token\0team/py/uid-1", hashlib.sha256).hexdigest()
    assert tokens.derive_token(KEY, "team", "py", "uid-1") == expected
    others = {
        tokens.derive_token(KEY, "team", "py", "uid-2"),
        tokens.derive_token(KEY, "other", "py", "uid-1"),
        tokens.derive_token(b"x" * 32, "team", "py", "uid-1"),
    }
    assert expected not in others and len(others) == 3


def test_the_token_secret_name_needs_the_key_and_is_not_the_token():
    gateway_tokens = tokens.GatewayTokens(KEY, kube=None)  # type: ignore[arg-type]
    name = gateway_tokens.secret_name("team", "py", "uid-1")
    assert name.startswith("py-gateway-token-") and len(name) == len("py-gateway-token-") + 10
    assert name[-10:] not in gateway_tokens.token("team", "py", "uid-1")
    assert tokens.GatewayTokens(b"x" * 32, kube=None).secret_name("team", "py", "uid-1") != name  # type: ignore[arg-type]


def test_the_key_secret_round_trips_and_a_short_key_is_refused():
    secret = tokens.key_secret("nbkube-gateway-token-key", "nbkube", KEY)
    assert secret["immutable"] is True
    assert tokens.decode_key(secret) == KEY
    with pytest.raises(tokens.TokenKeyUnavailable, match="at least 32 bytes"):
        tokens.decode_key(tokens.key_secret("k", "nbkube", b"short"))


def test_egress_settings_come_from_the_environment_and_the_api_server_ip_is_denied():
    settings = Settings.from_env(
        {
            "NBKUBE_GATEWAY_EGRESS_DENIED_CIDRS": "172.18.0.2, 10.96.0.0/12",
            "NBKUBE_GATEWAY_EGRESS_EXTRA_RULES": '[{"ports": [{"port": 443, "protocol": "TCP"}]}]',
        }
    )
    assert settings.gateway_egress_denied_cidrs == ["172.18.0.2/32", "10.96.0.0/12"]
    assert settings.gateway_egress_extra_rules == [{"ports": [{"port": 443, "protocol": "TCP"}]}]
    assert not settings.gateway_egress_allow_all
    egress = gateway_egress(settings, "https://10.96.0.1:443")
    assert egress.denied_cidrs == ("172.18.0.2/32", "10.96.0.0/12", "10.96.0.1/32")
    assert gateway_egress(settings, "https://kubernetes.default.svc").denied_cidrs == (
        "172.18.0.2/32",
        "10.96.0.0/12",
    )
    assert Settings.from_env({"NBKUBE_GATEWAY_EGRESS_ALLOW_ALL": "true"}).gateway_egress_allow_all
    with pytest.raises(ValidationError):
        Settings.from_env({"NBKUBE_GATEWAY_EGRESS_DENIED_CIDRS": "not-an-address"})
