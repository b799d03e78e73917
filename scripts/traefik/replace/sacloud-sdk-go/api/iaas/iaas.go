// Package iaas aliases the parts of github.com/sacloud/iaas-api-go that
// lego's Sakura Cloud DNS provider uses (see ../../README.md).
package iaas

import (
	client "github.com/sacloud/api-client-go"
	"github.com/sacloud/iaas-api-go"
	realdefaults "github.com/sacloud/iaas-api-go/defaults"

	"github.com/sacloud/sacloud-sdk-go/api/iaas/defaults"
)

type (
	APICaller                = iaas.APICaller
	Client                   = iaas.Client
	DNS                      = iaas.DNS
	DNSAPI                   = iaas.DNSAPI
	DNSCreateRequest         = iaas.DNSCreateRequest
	DNSRecord                = iaas.DNSRecord
	DNSRecords               = iaas.DNSRecords
	DNSUpdateSettingsRequest = iaas.DNSUpdateSettingsRequest
	FindCondition            = iaas.FindCondition
)

// Settings that callers may change before NewDNSOp, which passes them on
// to iaas-api-go (Go cannot alias a variable).
var (
	SakuraCloudAPIRoot = iaas.SakuraCloudAPIRoot
	SakuraCloudZones   = iaas.SakuraCloudZones
	APIDefaultZone     = iaas.APIDefaultZone
	DefaultUserAgent   = iaas.DefaultUserAgent
)

// NewClientWithOptions is iaas-api-go's.
func NewClientWithOptions(opts *client.Options) *Client {
	return iaas.NewClientWithOptions(opts)
}

// NewDNSOp applies the settings above and returns iaas-api-go's DNS API.
func NewDNSOp(caller APICaller) DNSAPI {
	iaas.SakuraCloudAPIRoot = SakuraCloudAPIRoot
	iaas.SakuraCloudZones = SakuraCloudZones
	iaas.APIDefaultZone = APIDefaultZone
	iaas.DefaultUserAgent = DefaultUserAgent
	realdefaults.DefaultStatePollingTimeout = defaults.DefaultStatePollingTimeout
	return iaas.NewDNSOp(caller)
}

// IsNotFoundError is iaas-api-go's.
func IsNotFoundError(err error) bool {
	return iaas.IsNotFoundError(err)
}
