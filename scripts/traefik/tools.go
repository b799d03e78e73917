//go:build tools

// Package traefik pins the upstream Traefik v3 that scripts/addon-images
// builds (go build github.com/traefik/traefik/v3/cmd/traefik, inside this
// module) for kedge's Ingress controller add-on image. It is a module of
// its own so that Traefik's dependencies stay out of kedge's go.mod. The
// build tag keeps this file out of every build; it only keeps the
// requirement in go.mod through go mod tidy.
package traefik

import _ "github.com/traefik/traefik/v3/cmd/traefik"
