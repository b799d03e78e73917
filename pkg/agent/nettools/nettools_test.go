package nettools

import (
	"archive/tar"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestWithDir(t *testing.T) {
	for _, c := range []struct {
		path   string
		prefer bool
		want   string
	}{
		{"/usr/sbin:/usr/bin", true, "/k/sbin:/usr/sbin:/usr/bin"},
		{"/usr/sbin:/usr/bin", false, "/usr/sbin:/usr/bin:/k/sbin"},
		{"/usr/bin:/k/sbin:/usr/sbin", true, "/k/sbin:/usr/bin:/usr/sbin"}, // moved, not doubled
		{"", true, "/k/sbin"},
	} {
		if got := withDir(c.path, "/k/sbin", c.prefer); got != c.want {
			t.Errorf("withDir(%q, %v) = %q, want %q", c.path, c.prefer, got, c.want)
		}
	}
}

func TestWrapper(t *testing.T) {
	w := wrapper("/var/lib/kedge/data/abc/nettools", "iptables-restore", "legacy")
	for _, want := range []string{
		"#!/bin/sh\n",
		"XTABLES_LIBDIR='/var/lib/kedge/data/abc/nettools/xtables'\nexport XTABLES_LIBDIR\n",
		"exec '/var/lib/kedge/data/abc/nettools/lib/ld.so' --library-path '/var/lib/kedge/data/abc/nettools/lib' --argv0 'iptables-restore' '/var/lib/kedge/data/abc/nettools/bin/xtables-legacy-multi' \"$@\"\n",
	} {
		if !strings.Contains(w, want) {
			t.Errorf("wrapper lacks %q:\n%s", want, w)
		}
	}
	if w := wrapper("/r", "nft", "nft"); !strings.Contains(w, "--argv0 'nft' '/r/bin/nft'") {
		t.Errorf("nft wrapper:\n%s", w)
	}
	// A quote in the path stays one word.
	if w := wrapper("/it's", "conntrack", "nft"); !strings.Contains(w, `'/it'\''s/bin/conntrack'`) {
		t.Errorf("quoting:\n%s", w)
	}
}

// writeTar makes a tools archive of files (name to content).
func writeTar(t *testing.T, file string, files map[string]string) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	for name, data := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write([]byte(data))
	}
	tw.Close()
	f.Close()
}

// TestSetup runs a wrapper end to end, with a fake loader: a shell script
// that prints how it was called.
func TestSetup(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Fatal("no sh")
	}
	bin := filepath.Join(t.TempDir(), "bin")
	os.MkdirAll(bin, 0o755)
	writeTar(t, filepath.Join(bin, Archive), map[string]string{
		"./lib/ld.so":              "#!/bin/sh\necho \"loader $* XTABLES_LIBDIR=$XTABLES_LIBDIR\"\n",
		"./bin/xtables-nft-multi":  "",
		"./xtables/libxt_mark.so":  "",
		"./bin/../lib/libc.so.6":   "",
		"bin/xtables-legacy-multi": "",
	})
	t.Setenv("PATH", "/usr/bin:/bin")
	sbin, err := Setup(bin, true, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(filepath.Dir(bin), "nettools")
	if sbin != filepath.Join(root, "sbin") || !strings.HasPrefix(os.Getenv("PATH"), sbin+":") {
		t.Fatalf("sbin %s, PATH %s", sbin, os.Getenv("PATH"))
	}
	out, err := exec.Command("iptables-save", "-t", "nat").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := "loader --library-path " + root + "/lib --argv0 iptables-save " + root + "/bin/xtables-nft-multi -t nat XTABLES_LIBDIR=" + root + "/xtables\n"
	if string(out) != want {
		t.Fatalf("iptables-save ran as\n%q, want\n%q", out, want)
	}
	// A second start reuses the tree and finds the wrappers current.
	if _, err := Setup(bin, false, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(os.Getenv("PATH"), ":"+sbin) {
		t.Fatalf("PATH without preference: %s", os.Getenv("PATH"))
	}
}

func TestSetupRefusesEscapingEntries(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "bin")
	os.MkdirAll(bin, 0o755)
	writeTar(t, filepath.Join(bin, Archive), map[string]string{"../../evil": "x", "lib/ld.so": ""})
	if _, err := Setup(bin, true, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "unexpected entry") {
		t.Fatalf("an entry outside the tree: %v", err)
	}
}

func TestSetupWithoutTools(t *testing.T) {
	if dir, err := Setup(t.TempDir(), true, slog.New(slog.DiscardHandler)); dir != "" || err != nil {
		t.Fatalf("no archive: %q, %v", dir, err)
	}
}
