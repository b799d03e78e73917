package main

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// fakeBusybox writes a stand-in for a static busybox.
func fakeBusybox(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "busybox")
	if err := os.WriteFile(p, []byte("fake busybox\n"), 0o644); err != nil {
		t.Fatalf("writing fake busybox: %v", err)
	}
	return p
}

// fakeBinary writes a small stand-in for a static binary.
func fakeBinary(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hello")
	if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
		t.Fatalf("writing fake binary: %v", err)
	}
	return p
}

func TestPack(t *testing.T) {
	bin := fakeBinary(t, "#!not really an ELF\n")
	bb := fakeBusybox(t)
	tests := []struct {
		name        string
		opts        options
		wantEntry   string
		wantVariant string
		wantEnv     []string
		wantPorts   []string
		busybox     bool // pack a fake busybox too
	}{
		{
			name:      "defaults",
			opts:      options{refs: []string{"kedge.test/hello:v1"}, arch: "amd64"},
			wantEntry: "/hello",
			wantEnv:   []string{"PATH=/"},
		},
		{
			name: "several refs, env and ports",
			opts: options{
				refs: []string{"kedge.test/hello:v1", "simple-server:v1", "flask-hello:latest"},
				arch: "arm64", env: []string{"A=b"}, ports: []string{"8080", "53/udp"},
			},
			wantEntry: "/hello",
			wantEnv:   []string{"PATH=/", "A=b"},
			wantPorts: []string{"53/udp", "8080/tcp"},
		},
		{
			name:        "arm gets variant v7 and nested entrypoint",
			opts:        options{refs: []string{"kedge.local/pause:3.10"}, arch: "arm", entrypoint: "/usr/bin/pause"},
			wantEntry:   "/usr/bin/pause",
			wantVariant: "v7",
			wantEnv:     []string{"PATH=/"},
		},
		{
			name:      "busybox adds /bin and PATH",
			opts:      options{refs: []string{"kedge.test/worker:v1"}, arch: "amd64", env: []string{"A=b"}},
			wantEntry: "/hello",
			wantEnv:   []string{"PATH=/bin:/", "A=b"},
			busybox:   true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.binary = bin
			if tt.busybox {
				tt.opts.busybox = bb
			}
			out := filepath.Join(t.TempDir(), "image.tar")
			digest, err := pack(tt.opts, out)
			if err != nil {
				t.Fatalf("pack: %v", err)
			}

			for _, ref := range tt.opts.refs {
				tag, err := name.NewTag(ref)
				if err != nil {
					t.Fatalf("parsing %q: %v", ref, err)
				}
				img, err := tarball.ImageFromPath(out, &tag)
				if err != nil {
					t.Fatalf("loading %s from archive: %v", ref, err)
				}
				if got, err := img.Digest(); err != nil || got != digest {
					t.Errorf("%s digest = %v, %v; want %v", ref, got, err, digest)
				}
				checkConfig(t, img, tt.opts.arch, tt.wantVariant, tt.wantEntry, tt.wantEnv, tt.wantPorts)
				checkLayer(t, img, tt.wantEntry, tt.busybox)
			}
		})
	}
}

func checkConfig(t *testing.T, img v1.Image, arch, variant, entry string, env, ports []string) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("reading config: %v", err)
	}
	if cf.OS != "linux" || cf.Architecture != arch || cf.Variant != variant {
		t.Errorf("platform = %s/%s/%s, want linux/%s/%s", cf.OS, cf.Architecture, cf.Variant, arch, variant)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{entry}) {
		t.Errorf("entrypoint = %q, want [%q]", cf.Config.Entrypoint, entry)
	}
	if !slices.Equal(cf.Config.Env, env) {
		t.Errorf("env = %q, want %q", cf.Config.Env, env)
	}
	var gotPorts []string
	for p := range cf.Config.ExposedPorts {
		gotPorts = append(gotPorts, p)
	}
	slices.Sort(gotPorts)
	if !slices.Equal(gotPorts, ports) {
		t.Errorf("exposed ports = %q, want %q", gotPorts, ports)
	}
	if !cf.Created.Time.Equal(epoch) {
		t.Errorf("created = %v, want %v", cf.Created.Time, epoch)
	}
}

// checkLayer asserts there is one layer holding the binary (root-owned,
// 0755), /tmp (1777) and /etc/passwd; with busybox also /bin/busybox (0755)
// and /bin/sh and /bin/tar symlinked to it, and without it no /bin at all.
func checkLayer(t *testing.T, img v1.Image, entry string, busybox bool) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers = %d, %v; want 1", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatalf("opening layer: %v", err)
	}
	defer rc.Close()

	want := map[string]int64{entry[1:]: 0o755, "tmp/": 0o1777, "etc/passwd": 0o644}
	wantLinks := map[string]bool{}
	if busybox {
		want["bin/"] = 0o755
		want["bin/busybox"] = 0o755
		wantLinks["bin/sh"] = true
		wantLinks["bin/tar"] = true
		wantLinks["bin/cat"] = true
	}
	var names []string
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading layer: %v", err)
		}
		names = append(names, hdr.Name)
		if hdr.Uid != 0 || hdr.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want 0:0", hdr.Name, hdr.Uid, hdr.Gid)
		}
		if !hdr.ModTime.Equal(epoch) {
			t.Errorf("%s mtime = %v, want %v", hdr.Name, hdr.ModTime, epoch)
		}
		if !busybox && strings.HasPrefix(hdr.Name, "bin/") {
			t.Errorf("layer has %s without --busybox", hdr.Name)
		}
		if hdr.Typeflag == tar.TypeSymlink {
			if hdr.Linkname != "busybox" && hdr.Linkname != "/bin/busybox" {
				t.Errorf("%s -> %s, want busybox", hdr.Name, hdr.Linkname)
			}
			delete(wantLinks, hdr.Name)
			continue
		}
		if hdr.Name == "bin/busybox" && hdr.Typeflag != tar.TypeReg {
			t.Errorf("bin/busybox type = %c, want regular file", hdr.Typeflag)
		}
		if mode, ok := want[hdr.Name]; ok {
			if hdr.Mode != mode {
				t.Errorf("%s mode = %o, want %o", hdr.Name, hdr.Mode, mode)
			}
			delete(want, hdr.Name)
		}
	}
	for n := range want {
		t.Errorf("layer lacks %s", n)
	}
	for n := range wantLinks {
		t.Errorf("layer lacks symlink %s", n)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			t.Errorf("layer has %s twice", n)
		}
		seen[n] = true
	}
}

// TestPackReproducible packs the same binary twice, at different times,
// and expects identical digests; a different binary must change it.
func TestPackReproducible(t *testing.T) {
	tests := []struct {
		name     string
		second   string
		busybox  bool
		wantSame bool
	}{
		{name: "same binary", second: "binary-v1", wantSame: true},
		{name: "different binary", second: "binary-v2", wantSame: false},
		{name: "same binary with busybox", second: "binary-v1", busybox: true, wantSame: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := options{refs: []string{"kedge.test/hello:v1"}, arch: "amd64", binary: fakeBinary(t, "binary-v1")}
			if tt.busybox {
				opts.busybox = fakeBusybox(t)
			}
			d1, err := pack(opts, filepath.Join(dir, "1.tar"))
			if err != nil {
				t.Fatalf("first pack: %v", err)
			}
			opts.binary = fakeBinary(t, tt.second)
			d2, err := pack(opts, filepath.Join(dir, "2.tar"))
			if err != nil {
				t.Fatalf("second pack: %v", err)
			}
			if (d1 == d2) != tt.wantSame {
				t.Errorf("digests %v and %v: same = %v, want %v", d1, d2, d1 == d2, tt.wantSame)
			}
		})
	}
}

// TestPackBusyboxChangesDigest checks that --busybox is part of the image.
func TestPackBusyboxChangesDigest(t *testing.T) {
	dir := t.TempDir()
	opts := options{refs: []string{"kedge.test/worker:v1"}, arch: "amd64", binary: fakeBinary(t, "worker")}
	d1, err := pack(opts, filepath.Join(dir, "1.tar"))
	if err != nil {
		t.Fatalf("pack without busybox: %v", err)
	}
	opts.busybox = fakeBusybox(t)
	d2, err := pack(opts, filepath.Join(dir, "2.tar"))
	if err != nil {
		t.Fatalf("pack with busybox: %v", err)
	}
	if d1 == d2 {
		t.Errorf("digest %v is the same with and without busybox", d1)
	}
}

func TestPackErrors(t *testing.T) {
	bin := fakeBinary(t, "x")
	bb := fakeBusybox(t)
	tests := []struct {
		name string
		opts options
	}{
		{name: "no refs", opts: options{binary: bin, arch: "amd64"}},
		{name: "digest ref", opts: options{binary: bin, arch: "amd64", refs: []string{"a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}}},
		{name: "missing binary", opts: options{binary: filepath.Join(t.TempDir(), "nope"), arch: "amd64", refs: []string{"a:b"}}},
		{name: "relative entrypoint", opts: options{binary: bin, arch: "amd64", refs: []string{"a:b"}, entrypoint: "hello"}},
		{name: "entrypoint is a directory", opts: options{binary: bin, arch: "amd64", refs: []string{"a:b"}, entrypoint: "/tmp"}},
		{name: "bad env", opts: options{binary: bin, arch: "amd64", refs: []string{"a:b"}, env: []string{"NOEQUALS"}}},
		{name: "bad port", opts: options{binary: bin, arch: "amd64", refs: []string{"a:b"}, ports: []string{"http"}}},
		{name: "bad protocol", opts: options{binary: bin, arch: "amd64", refs: []string{"a:b"}, ports: []string{"80/icmp"}}},
		{name: "empty arch", opts: options{binary: bin, refs: []string{"a:b"}}},
		{name: "missing busybox", opts: options{binary: bin, arch: "amd64", refs: []string{"a:b"}, busybox: filepath.Join(t.TempDir(), "nope")}},
		{name: "entrypoint is busybox's sh", opts: options{binary: bin, arch: "amd64", refs: []string{"a:b"}, busybox: bb, entrypoint: "/bin/sh"}},
		{name: "entrypoint is /bin/busybox", opts: options{binary: bin, arch: "amd64", refs: []string{"a:b"}, busybox: bb, entrypoint: "/bin/busybox"}},
		{name: "entrypoint is /bin with busybox", opts: options{binary: bin, arch: "amd64", refs: []string{"a:b"}, busybox: bb, entrypoint: "/bin"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := pack(tt.opts, filepath.Join(dir, "image.tar")); err == nil {
				t.Fatalf("pack succeeded, want error")
			}
			// Neither the archive nor its temporary file may be left behind.
			if left, err := os.ReadDir(dir); err != nil || len(left) != 0 {
				t.Errorf("failed pack left %v behind (readdir: %v)", left, err)
			}
		})
	}
}

// TestBusyboxApplets keeps the applet list sorted, free of duplicates and
// of path separators, and holding what kubectl exec/cp need.
func TestBusyboxApplets(t *testing.T) {
	if !slices.IsSorted(busyboxApplets) {
		t.Errorf("busyboxApplets is not sorted")
	}
	if len(slices.Compact(slices.Clone(busyboxApplets))) != len(busyboxApplets) {
		t.Errorf("busyboxApplets has duplicates")
	}
	for _, a := range busyboxApplets {
		if a == "" || a == "busybox" || strings.Contains(a, "/") {
			t.Errorf("bad applet name %q", a)
		}
	}
	for _, need := range []string{"sh", "cat", "tar", "ls", "sleep"} {
		if !slices.Contains(busyboxApplets, need) {
			t.Errorf("busyboxApplets lacks %s", need)
		}
	}
}
