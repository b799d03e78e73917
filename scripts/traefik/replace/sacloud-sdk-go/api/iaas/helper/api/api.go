// Package api aliases github.com/sacloud/iaas-api-go/helper/api (see
// ../../../../README.md).
package api

import (
	client "github.com/sacloud/api-client-go"
	"github.com/sacloud/iaas-api-go"
	"github.com/sacloud/iaas-api-go/helper/api"
)

type (
	CallerOptions = api.CallerOptions
	ClientOptions = client.Options
)

// DefaultOption is iaas-api-go's.
func DefaultOption() (*CallerOptions, error) {
	return api.DefaultOption()
}

// MergeOptions is iaas-api-go's.
func MergeOptions(opts ...*CallerOptions) *CallerOptions {
	return api.MergeOptions(opts...)
}

// NewCallerWithOptions is iaas-api-go's (lego's tests use it).
func NewCallerWithOptions(opts *CallerOptions) iaas.APICaller {
	return api.NewCallerWithOptions(opts)
}
