"""The operator: kopf handlers that reconcile ``TenantApiKey`` objects into keys.

``handlers`` registers with kopf; ``reconciler`` decides and acts; ``issuing`` makes keys;
``scheduling`` wakes objects when a rotation, grace period or expiry falls due; ``kube`` is
the narrow Kubernetes interface; ``crashpoints`` lets tests kill the process mid-flight.
"""
