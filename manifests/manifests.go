// Package manifests embeds the add-on manifests kedge applies at start.
// Each file is a Go text/template; see addons.Values for what it may use.
package manifests

import "embed"

// FS holds one manifest file per add-on, named <addon>.yaml.
//
//go:embed *.yaml
var FS embed.FS
