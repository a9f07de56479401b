"""The self-service web UI and its JSON API.

Tenant users sign in with a bearer token the cluster accepts; every Kubernetes call made for
them carries that token, so Kubernetes RBAC alone decides who may see or change which keys.
The UI only creates and patches ``TenantApiKey`` objects; the operator does the rest.

Layout: :mod:`.identity` (TokenReview, SubjectAccessReview), :mod:`.sessions` (server-side
sessions, CSRF), :mod:`.callers` (who is calling: bearer header or session cookie),
:mod:`.keys` (the actions, with the caller's client), :mod:`.schemas` (the JSON API's
models), :mod:`.views` (TenantApiKey objects to what the API and pages show), :mod:`.errors`
(API-server errors to field errors), :mod:`.api` and :mod:`.pages` (the routes), :mod:`.app`.
"""
