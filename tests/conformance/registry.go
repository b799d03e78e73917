package main

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"
)

// registryPort is where the cluster's registry mirror listens, on the
// server's address.
const registryPort = 5000

// startMirror serves the test images from an in-memory registry on the
// server node's address and returns a registries.yaml making it the
// mirror of every registry the images are named after. Tests whose pods
// must pull (an image volume with pullPolicy Always) pull from it, as an
// offline site pulls from its own mirror; the nodes still start with the
// images imported.
func (c *cluster) startMirror(images string) (string, error) {
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	ln, err := listenInNetns("/run/netns/"+c.server.netns, fmt.Sprintf("%s:%d", c.server.ip, registryPort))
	if err != nil {
		return "", err
	}
	go http.Serve(ln, reg) //nolint:errcheck // ends with the process
	host := fmt.Sprintf("%s:%d", c.server.ip, registryPort)
	// Pushed straight into the handler: this process's own namespace has
	// no route to the server's address.
	direct := remote.WithTransport(handlerTransport{reg})
	registries := map[string]bool{}
	for _, spec := range testImageSpecs(imageOptions{}) {
		for _, ref := range spec.refs {
			tag, err := name.NewTag(ref)
			if err != nil {
				return "", err
			}
			img, err := tarball.ImageFromPath(images, &tag)
			if err != nil {
				return "", fmt.Errorf("%s from %s: %w", ref, images, err)
			}
			dst, err := name.NewTag(host+"/"+tag.RepositoryStr()+":"+tag.TagStr(), name.Insecure)
			if err != nil {
				return "", err
			}
			if err := remote.Write(dst, img, direct); err != nil {
				return "", fmt.Errorf("push %s: %w", ref, err)
			}
			registries[tag.RegistryStr()] = true
		}
	}
	var b strings.Builder
	b.WriteString("mirrors:\n")
	for r := range registries {
		fmt.Fprintf(&b, "  %s:\n    endpoint: [\"http://%s\"]\n", r, host)
	}
	file := filepath.Join(c.sb.Dir, "registries.yaml")
	return file, os.WriteFile(file, []byte(b.String()), 0o644)
}

// listenInNetns opens a TCP listener inside the network namespace at
// nsPath, from a thread that enters it and is never reused (a goroutine
// that ends locked takes its thread with it).
func listenInNetns(nsPath, addr string) (net.Listener, error) {
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(nsPath)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("enter %s: %w", nsPath, err)}
			return
		}
		ln, err := net.Listen("tcp", addr)
		ch <- result{ln, err}
	}()
	r := <-ch
	return r.ln, r.err
}

// handlerTransport answers requests with an http.Handler, in process.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// A server's request always has a body; a client's may have none.
	if req.Body == nil {
		req.Body = http.NoBody
	}
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, req)
	resp := rec.Result()
	resp.Request = req // the client resolves upload locations against it
	return resp, nil
}
