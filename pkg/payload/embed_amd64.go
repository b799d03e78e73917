package payload

import "embed"

// assets holds what scripts/payload and scripts/builtin-images built for
// GOARCH=amd64 into assets/amd64 (and, in a checkout where they have not run,
// only its .gitignore). Each architecture has its own directory, so a
// cross build never touches the host's.
//
//go:embed all:assets/amd64
var assets embed.FS

// assetsDir is the directory of assets holding the files.
const assetsDir = "assets/amd64"
