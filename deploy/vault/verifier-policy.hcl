path "secret/data/pmkeys/keys/*" {
  capabilities = ["read"]
}
path "secret/data/pmkeys/pepper" {
  capabilities = ["read"]
}
