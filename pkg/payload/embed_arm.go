package payload

import "embed"

// assets holds what scripts/payload and scripts/builtin-images built for
// GOARCH=arm into assets/arm (and, in a checkout where they have not run,
// only its .gitignore). Each architecture has its own directory, so a
// cross build never touches the host's.
//
//go:embed all:assets/arm
var assets embed.FS

// assetsDir is the directory of assets holding the files.
const assetsDir = "assets/arm"
