path "secret/data/pmkeys/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/pmkeys/*" {
  capabilities = ["read", "list", "delete"]
}
