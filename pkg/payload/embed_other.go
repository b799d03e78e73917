//go:build !amd64 && !arm64 && !arm

package payload

import "embed"

// assets is empty on architectures kedge has no asset directory for: such a
// kedge compiles, but Extract returns ErrNoPayload. Add an embed_<arch>.go
// and an assets/<arch> directory to carry a payload there.
var assets embed.FS

const assetsDir = "assets/none"
