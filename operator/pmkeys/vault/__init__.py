"""The Vault (OpenBao) store: hashed key records, the owner index and the pepper (KV v2)."""
