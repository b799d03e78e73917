module github.com/regfish/regfish-dnsapi-go

go 1.24.0

// ../../go.mod replaces this with github.com/regfish/regfish-dnsapi-go v0.1.1.
require kedge.local/regfish-dnsapi-go-v0.1.1 v0.1.1
