# nbkube's Kernel Gateway tuning as a config file:
#   jupyter kernelgateway --config=operator/nbkube/gateway/kernel_gateway_config.py
# Same settings as `python -m nbkube.gateway` (what pods run); needs the nbkube package importable
# for the websocket connection class. See nbkube/gateway/config.py for what each setting is for.
from nbkube.gateway.config import tuned_config

c = get_config()  # type: ignore[name-defined]  # noqa: F821
c.merge(tuned_config())
