package payload

import "embed"

// assets holds whatever scripts/payload and scripts/builtin-images put into
// assets/ (and, in a checkout where they have not run, only its README).
//
//go:embed all:assets
var assets embed.FS

// assetsDir is assets' only top-level directory.
const assetsDir = "assets"
