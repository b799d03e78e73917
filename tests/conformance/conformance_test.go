package main

import (
	"archive/tar"
	"io"
	"log"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// A ginkgo JUnit report as a parallel pass writes it: suite nodes beside
// the tests, a skipped test, a failed one.
const junitSample = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="5" disabled="0" errors="0" failures="1" time="40">
  <testsuite name="Kubernetes e2e suite" tests="5" skipped="1" failures="1" errors="0">
    <testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="passed" time="0.1"></testcase>
    <testcase name="[It] [sig-node] ConfigMap should be consumable [Conformance]" classname="Kubernetes e2e suite" status="passed" time="4"></testcase>
    <testcase name="[It] [sig-network] Services should serve [Conformance]" classname="Kubernetes e2e suite" status="failed" time="30">
      <failure message="timed out" type="failed">no answer</failure>
    </testcase>
    <testcase name="[It] [sig-apps] Job should run [Slow]" classname="Kubernetes e2e suite" status="skipped" time="0"><skipped message="skipped"/></testcase>
    <testcase name="[ReportAfterSuite] Kubernetes e2e suite report" classname="Kubernetes e2e suite" status="passed" time="0"></testcase>
  </testsuite>
</testsuites>
`

func TestReadJUnit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "junit.xml")
	if err := os.WriteFile(path, []byte(junitSample), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := readJUnit(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"[sig-node] ConfigMap should be consumable [Conformance]"}; !reflect.DeepEqual(r.passed, want) {
		t.Errorf("passed %q, want %q", r.passed, want)
	}
	if want := []string{"[sig-network] Services should serve [Conformance] (failed)"}; !reflect.DeepEqual(r.failed, want) {
		t.Errorf("failed %q, want %q", r.failed, want)
	}
	if r.skipped != 1 {
		t.Errorf("skipped %d, want 1", r.skipped)
	}
	r.name = "parallel"
	sum := summarize(runOptions{focus: `\[Conformance\]`, version: "v1.36.3"}, []passResult{r}, 0)
	for _, want := range []string{"parallel: 1 passed, 1 failed", "total: 1 passed, 1 failed", "FAILED [parallel] [sig-network] Services should serve"} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary lacks %q:\n%s", want, sum)
		}
	}
	if _, err := readJUnit(filepath.Join(t.TempDir(), "none.xml")); err == nil {
		t.Error("a missing report read without error")
	}
}

func TestPasses(t *testing.T) {
	ps := runOptions{procs: 3, skip: "Slow"}.passes()
	if len(ps) != 2 {
		t.Fatalf("%d passes, want 2", len(ps))
	}
	if p := ps[0]; p.procs != 3 || p.skip != `\[Serial\]|\[Disruptive\]|Slow` || p.labelFilter != "" {
		t.Errorf("parallel pass %+v", p)
	}
	if p := ps[1]; p.procs != 1 || p.skip != "Slow" || p.labelFilter != "Serial || Disruptive" {
		t.Errorf("serial pass %+v", p)
	}
	if ps := (runOptions{procs: 2, noSerial: true}).passes(); len(ps) != 1 {
		t.Errorf("-no-serial: %d passes", len(ps))
	}
}

// TestImage builds an image on a tiny root filesystem and reads back its
// layers and config.
func TestImage(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.MkdirAll(filepath.Join(root, "proc", "1"), 0o755)
	os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("root:x:0:0::/root:/bin/sh\n"), 0o644)
	os.Symlink("passwd", filepath.Join(root, "etc", "link"))
	base, err := dirLayer(root)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "tool")
	os.WriteFile(bin, []byte("#!tool"), 0o755)
	spec := imageSpec{refs: []string{"example.test/tool:1"}, entrypoint: []string{"/tool"}, user: "1234",
		ports: []string{"80/tcp"}, files: []file{
			{path: "tool", src: bin, mode: 0o4755},
			{path: "uploads", dir: true, mode: 0o755},
			{path: "tool-2", link: "tool"},
			{path: "etc/passwd", data: appendLine(root, "etc/passwd", "user:x:1000:1000::/:/bin/sh"), mode: 0o644},
		}}
	img, err := buildImage(spec, base, nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if c := cf.Config; !reflect.DeepEqual(c.Entrypoint, []string{"/tool"}) || c.User != "1234" || len(c.ExposedPorts) != 1 || len(c.Env) == 0 {
		t.Errorf("config %+v", c)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 2 {
		t.Fatalf("layers %d, %v; want 2", len(layers), err)
	}
	baseEntries := tarEntries(t, layers[0])
	if _, ok := baseEntries["etc/link"]; !ok || baseEntries["proc/"] == nil {
		t.Errorf("base layer entries %v", keys(baseEntries))
	}
	if _, ok := baseEntries["proc/1/"]; ok {
		t.Error("the base layer holds what is under /proc")
	}
	own := tarEntries(t, layers[1])
	if h := own["tool"]; h == nil || h.Mode != 0o4755 {
		t.Errorf("tool entry %+v", h)
	}
	if h := own["tool-2"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "tool" {
		t.Errorf("tool-2 entry %+v", h)
	}
	if own["uploads/"] == nil || own["etc/passwd"] == nil || own["etc/passwd"].Size != int64(len("root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/:/bin/sh\n")) {
		t.Errorf("own layer entries %v", keys(own))
	}
	// An image on another must name one built before it.
	if _, err := buildImage(imageSpec{refs: []string{"x:1"}, from: "y:1"}, base, map[string]v1.Image{}); err == nil {
		t.Error("an image on a missing one built")
	}
}

func tarEntries(t *testing.T, l interface {
	Uncompressed() (io.ReadCloser, error)
}) map[string]*tar.Header {
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = h
	}
}

func keys(m map[string]*tar.Header) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestHandlerTransport pushes an image into an in-memory registry through
// the in-process transport the mirror is filled with, and reads it back.
func TestHandlerTransport(t *testing.T) {
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	direct := remote.WithTransport(handlerTransport{reg})
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewTag("10.0.0.1:5000/e2e-test-images/x:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, direct); err != nil {
		t.Fatal(err)
	}
	got, err := remote.Image(ref, direct)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	if d, _ := got.Digest(); d != want {
		t.Errorf("pulled %s, pushed %s", d, want)
	}
}
