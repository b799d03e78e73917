// Package ext stands in for Traefik's nested module
// github.com/traefik/traefik/dynamic/ext (pkg/config/dynamic/ext in its
// repository). Traefik's go.mod replaces it with that directory, but a
// nested module is left out of Traefik's module zip and no proxy serves it
// under that path. Traefik v3.7.13's pkg/config/dynamic embeds these two
// types in HTTPConfiguration and Router; upstream they are empty
// extension points too, so the configuration is the same.
package ext

// HTTP extends dynamic.HTTPConfiguration.
type HTTP struct{}

// Router extends dynamic.Router.
type Router struct{}
