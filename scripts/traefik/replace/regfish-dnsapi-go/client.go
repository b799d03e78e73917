// Package regfishapi stands in for github.com/regfish/regfish-dnsapi-go
// v0.2.0, which answers 403 on the Go module proxy here. Only lego's
// regfish DNS provider (an ACME DNS-01 challenge provider kedge does not
// use) imports it. It offers the part of v0.2.0's API lego v5.4.1 calls,
// on top of the real v0.1.1 client (the same REST endpoints), which
// ../../go.mod makes available as kedge.local/regfish-dnsapi-go-v0.1.1.
package regfishapi

import (
	"context"
	"net/http"

	v011 "kedge.local/regfish-dnsapi-go-v0.1.1"
)

// Record is a DNS record.
type Record = v011.Record

// Client holds the API's base URL, the API key and the HTTP client.
type Client struct {
	BaseURL string
	APIKey  string
	Client  *http.Client
}

// NewClient returns a client for the regfish API.
func NewClient(apiKey string) *Client {
	c := v011.NewClient(apiKey)
	return &Client{BaseURL: c.BaseURL, APIKey: c.APIKey, Client: c.Client}
}

func (c *Client) v011() *v011.Client {
	return &v011.Client{BaseURL: c.BaseURL, APIKey: c.APIKey, Client: c.Client}
}

// AddRecord creates a DNS record. v0.1.1 takes no context: ctx is only
// checked before the request (the HTTP client has its own timeout).
func (c *Client) AddRecord(ctx context.Context, record Record) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	return c.v011().CreateRecord(record)
}

// DeleteRecordByRRID deletes the DNS record with ID rrid (see AddRecord
// about ctx).
func (c *Client) DeleteRecordByRRID(ctx context.Context, rrid int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return c.v011().DeleteRecord(rrid)
}
