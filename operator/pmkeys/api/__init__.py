"""The ``TenantApiKey`` resource: its vocabulary, its pydantic model and its CRD."""
