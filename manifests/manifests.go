// Package manifests embeds the add-on manifests kedge applies at start.
// Each file is a Go text/template; see addons.Values for what it may use.
package manifests

import "embed"

// FS holds one manifest file per add-on, named <addon>.yaml, which the
// add-on deployer applies; ingress/ holds what pkg/ingress applies only
// when an Ingress needs it.
//
//go:embed *.yaml ingress/*.yaml
var FS embed.FS
