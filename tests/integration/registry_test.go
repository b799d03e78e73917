package integration

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const (
	registryUser     = "kedge"
	registryPassword = "pull-secret"
	// mirroredImage exists only in the test registry, reached as a mirror
	// of docker.io.
	mirroredImage = "docker.io/library/mirrored:v1"
)

// startMirrorRegistry serves an in-memory registry with basic auth on
// loopback, pushes the worker image to it as library/mirrored:v1, and
// writes a registries.yaml making it docker.io's mirror.
func startMirrorRegistry(dir string) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	reg := registry.New()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != registryUser || p != registryPassword {
			w.Header().Set("WWW-Authenticate", `Basic realm="kedge-test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	stop := func() { srv.Close() }
	host := ln.Addr().String()

	img, err := workerVariant("mirrored")
	if err != nil {
		stop()
		return "", nil, err
	}
	ref, err := name.ParseReference(host+"/library/mirrored:v1", name.Insecure)
	if err != nil {
		stop()
		return "", nil, err
	}
	auth := remote.WithAuth(&authn.Basic{Username: registryUser, Password: registryPassword})
	if err := remote.Write(ref, img, auth); err != nil {
		stop()
		return "", nil, fmt.Errorf("push to test registry: %w", err)
	}
	file := filepath.Join(dir, "registries.yaml")
	yaml := fmt.Sprintf(`mirrors:
  docker.io:
    endpoint: ["http://%s"]
configs:
  "%s":
    auth: {username: %s, password: %s}
`, host, host, registryUser, registryPassword)
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		stop()
		return "", nil, err
	}
	return file, stop, nil
}

func TestPullThroughRegistryMirror(t *testing.T) {
	ns := namespace(t, shared)
	shared.runToCompletion(t, ns, "pulled", mirroredImage, "IfNotPresent", "pulled through the mirror")
}
