package main

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// epoch is the timestamp of every file and of the image itself; a fixed
// time is what makes the digest depend on the binary alone.
var epoch = time.Unix(0, 0).UTC()

// options describes the image to build.
type options struct {
	binary     string   // host path of the binary to pack
	busybox    string   // host path of a static busybox for /bin, or ""
	refs       []string // NAME:TAG references written into the archive
	entrypoint string   // absolute path of the binary in the image
	arch       string   // GOARCH spelling
	variant    string   // e.g. v7 for arm
	env        []string // K=V, after PATH=/
	ports      []string // PORT or PORT/PROTO
}

// pack builds the image described by o and writes it to out as a
// docker-archive tarball, returning the image digest.
func pack(o options, out string) (v1.Hash, error) {
	tags, err := parseRefs(o.refs)
	if err != nil {
		return v1.Hash{}, err
	}
	img, err := buildImage(o)
	if err != nil {
		return v1.Hash{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("computing image digest: %w", err)
	}
	if err := writeArchive(out, tags, img); err != nil {
		return v1.Hash{}, err
	}
	return digest, nil
}

// parseRefs validates the references; a docker archive can only name an
// image by tag, so digests are rejected.
func parseRefs(refs []string) ([]name.Tag, error) {
	if len(refs) == 0 {
		return nil, fmt.Errorf("at least one --ref is required")
	}
	tags := make([]name.Tag, 0, len(refs))
	for _, r := range refs {
		t, err := name.NewTag(r)
		if err != nil {
			return nil, fmt.Errorf("parsing --ref %q: %w", r, err)
		}
		tags = append(tags, t)
	}
	return tags, nil
}

// buildImage assembles the single-layer image and its config.
func buildImage(o options) (v1.Image, error) {
	if o.binary == "" {
		return nil, fmt.Errorf("--binary is required")
	}
	entry := o.entrypoint
	if entry == "" {
		entry = "/" + filepath.Base(o.binary)
	}
	if !path.IsAbs(entry) || path.Clean(entry) != entry || entry == "/" {
		return nil, fmt.Errorf("entrypoint %q must be a clean absolute file path", entry)
	}
	bin, err := os.ReadFile(o.binary)
	if err != nil {
		return nil, fmt.Errorf("reading binary: %w", err)
	}
	var busybox []byte
	if o.busybox != "" {
		if busybox, err = os.ReadFile(o.busybox); err != nil {
			return nil, fmt.Errorf("reading busybox: %w", err)
		}
		if len(busybox) == 0 {
			return nil, fmt.Errorf("busybox %s is empty", o.busybox)
		}
	}
	layer, err := newLayer(entry, bin, busybox)
	if err != nil {
		return nil, err
	}
	cfg, err := imageConfig(o, entry)
	if err != nil {
		return nil, err
	}

	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: createdBy(o, entry)},
	})
	if err != nil {
		return nil, fmt.Errorf("appending layer: %w", err)
	}
	// Start from the appended image's config so RootFS.DiffIDs and History
	// are kept, then fill in the rest.
	base, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cf := base.DeepCopy()
	cf.Created = v1.Time{Time: epoch}
	cf.OS = "linux"
	cf.Architecture = o.arch
	cf.Variant = o.variant
	if cf.Architecture == "" {
		return nil, fmt.Errorf("--arch must not be empty")
	}
	if cf.Architecture == "arm" && cf.Variant == "" {
		cf.Variant = "v7"
	}
	cf.Config = cfg
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("setting config: %w", err)
	}
	return img, nil
}

// createdBy is the layer's history line.
func createdBy(o options, entry string) string {
	s := "imagepack " + path.Base(entry)
	if o.busybox != "" {
		s += " +busybox"
	}
	return s
}

// imageConfig is the runtime part of the config: entrypoint, env, ports.
func imageConfig(o options, entry string) (v1.Config, error) {
	// Without busybox the image has no shell or /bin; PATH=/ lets a bare
	// command name in a pod spec resolve to the packed binary. With it,
	// /bin comes first so sh, cat, tar... resolve too.
	pathEnv := "PATH=/"
	if o.busybox != "" {
		pathEnv = "PATH=/bin:/"
	}
	cfg := v1.Config{
		Entrypoint: []string{entry},
		Env:        []string{pathEnv},
		WorkingDir: "/",
	}
	for _, e := range o.env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return v1.Config{}, fmt.Errorf("--env %q: want K=V", e)
		}
		cfg.Env = append(cfg.Env, e)
	}
	for _, p := range o.ports {
		port, err := exposedPort(p)
		if err != nil {
			return v1.Config{}, err
		}
		if cfg.ExposedPorts == nil {
			cfg.ExposedPorts = map[string]struct{}{}
		}
		cfg.ExposedPorts[port] = struct{}{}
	}
	return cfg, nil
}

// exposedPort normalises "8080" to "8080/tcp" and validates PORT/PROTO.
func exposedPort(p string) (string, error) {
	num, proto, hasProto := strings.Cut(p, "/")
	if !hasProto {
		proto = "tcp"
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("--port %q: want 1-65535, optionally /tcp, /udp or /sctp", p)
	}
	switch proto {
	case "tcp", "udp", "sctp":
	default:
		return "", fmt.Errorf("--port %q: unknown protocol %q", p, proto)
	}
	return fmt.Sprintf("%d/%s", n, proto), nil
}

// writeArchive writes img under all tags to out. It writes a temporary
// file next to out and renames it, so a failed run never leaves a
// truncated archive that a later import would choke on.
func writeArchive(out string, tags []name.Tag, img v1.Image) error {
	refToImage := make(map[name.Reference]v1.Image, len(tags))
	for _, t := range tags {
		refToImage[t] = img
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return fmt.Errorf("creating temporary archive: %w", err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // no-op after the rename
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmpName, err)
	}
	if err := tarball.MultiRefWriteToFile(tmpName, refToImage); err != nil {
		return fmt.Errorf("writing archive: %w", err)
	}
	// CreateTemp makes the file 0600; archives are not secret.
	if err := os.Chmod(tmpName, 0o644); err != nil {
		return fmt.Errorf("setting mode of %s: %w", tmpName, err)
	}
	if err := os.Rename(tmpName, out); err != nil {
		return fmt.Errorf("renaming archive to %s: %w", out, err)
	}
	return nil
}
