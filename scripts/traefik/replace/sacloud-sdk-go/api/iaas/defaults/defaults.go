// Package defaults mirrors github.com/sacloud/iaas-api-go/defaults; the
// iaas package passes it on (see ../../../README.md).
package defaults

import "github.com/sacloud/iaas-api-go/defaults"

// DefaultStatePollingTimeout is iaas-api-go's default.
var DefaultStatePollingTimeout = defaults.DefaultStatePollingTimeout
