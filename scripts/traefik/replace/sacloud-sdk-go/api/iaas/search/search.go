// Package search aliases github.com/sacloud/iaas-api-go/search (see
// ../../../README.md).
package search

import "github.com/sacloud/iaas-api-go/search"

type (
	EqualExpression = search.EqualExpression
	Filter          = search.Filter
	FilterKey       = search.FilterKey
)

// Key is iaas-api-go's.
func Key(field string) FilterKey {
	return search.Key(field)
}

// ExactMatch is iaas-api-go's.
func ExactMatch(conditions ...string) *EqualExpression {
	return search.ExactMatch(conditions...)
}
