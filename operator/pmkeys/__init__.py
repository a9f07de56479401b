"""pmkeys: self-service API keys for PenguinMails tenants, the Kubernetes way.

The package is laid out along the data flow of the product:

* :mod:`pmkeys.api` — the ``TenantApiKey`` resource (pydantic model, CRD, vocabulary).
* :mod:`pmkeys.keys` — key material: format, digest, hashing. Pure, no I/O.
* :mod:`pmkeys.vault` — the Vault (OpenBao) store of hashed key records.
* :mod:`pmkeys.reconcile` — the kopf operator, the only writer of key material.
* :mod:`pmkeys.verify` — the hot path: check a key, enforce scopes and rate limits, count usage.
* :mod:`pmkeys.ui` — the self-service web UI and its JSON API.

The local control plane, OpenBao and Redis for demos and tests are the separate package
``pmkeys_dev`` (``dev/``), which the image does not ship.
"""

__version__ = "0.1.0"
