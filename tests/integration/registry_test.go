package integration

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
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

	base, err := tarball.ImageFromPath(filepath.Join(imagesDir, "worker.tar"), nil)
	if err != nil {
		stop()
		return "", nil, err
	}
	// An image of its own (another config digest), not the worker under a
	// second name.
	cfg, err := base.ConfigFile()
	if err != nil {
		stop()
		return "", nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Config.Env = append(cfg.Config.Env, "KEDGE_TEST_IMAGE=mirrored")
	img, err := mutate.ConfigFile(base, cfg)
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
	shared.kubectl(t, "-n", ns, "run", "pulled", "--image="+mirroredImage, "--restart=Never", "--", "--message", "pulled through the mirror")
	eventually(t, 90*time.Second, "a pod of an image only the mirror has completes", func() error {
		if p := shared.jsonpath(ns, "pod/pulled", "{.status.phase}"); p != "Succeeded" {
			ev, _ := shared.kubectlErr("-n", ns, "get", "events", "--field-selector", "involvedObject.name=pulled")
			return fmt.Errorf("phase %q\n%s", p, ev)
		}
		return nil
	})
	if out := shared.kubectl(t, "-n", ns, "logs", "pulled"); !strings.Contains(out, "pulled through the mirror") {
		t.Fatalf("logs %q", out)
	}
}
