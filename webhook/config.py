"""The `webhook` section of the bridge config. Depends on pydantic only: bridge/config.py embeds it."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

# A namespace carrying this label (value "true") opts in: its pods get our schedulerName.
LABEL_NAMESPACE_OPT_IN: Final = "slurm-bridge.io/scheduling"
# A pod carrying this label (value "true") asks for our schedulerName in a managed namespace.
LABEL_POD_OPT_IN: Final = "slurm-bridge.io/scheduling"


class WebhookConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    listen_address: str = "0.0.0.0:9443"
    # Holds ca.crt/ca.key (the CA whose certificate is the caBundle) and tls.crt/tls.key (serving).
    cert_dir: Path = Path("/var/run/slurm-bridge/webhook")
    # false: the certificates are provided (cert-manager, a Secret); only reloaded when they change.
    generate_certificates: bool = True
    # Names the serving certificate is valid for (besides IP 127.0.0.1).
    dns_names: tuple[str, ...] = (
        "slurm-bridge-webhook",
        "slurm-bridge-webhook.slurm-bridge-system",
        "slurm-bridge-webhook.slurm-bridge-system.svc",
    )
    ip_addresses: tuple[str, ...] = ("127.0.0.1",)
    serving_cert_days: int = Field(default=90, ge=1)
    ca_cert_days: int = Field(default=3650, ge=1)
    # A serving certificate is replaced when less than this is left of it.
    renew_before_days: float = Field(default=30.0, gt=0)
    # How often the certificate files are checked (rotation, or a new one written by someone else).
    check_interval_seconds: float = Field(default=60.0, gt=0)
    # Identities allowed to set or change the labels, annotations and finalizer the bridge owns:
    # user names as the API server reports them (a ServiceAccount is system:serviceaccount:<ns>:<name>).
    bridge_usernames: tuple[str, ...] = ("system:serviceaccount:slurm-bridge-system:slurm-bridge",)
    # The Mutating/ValidatingWebhookConfiguration (both this name) whose caBundle the bridge updates when
    # it replaces its CA; None: the registration is someone else's to update.
    registration_name: str | None = None

    @field_validator("listen_address")
    @classmethod
    def _listen_address(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"listen address {value!r} is not host:port")
        return value
