package datadir

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestEnsureServerModes(t *testing.T) {
	l := Layout{Root: filepath.Join(t.TempDir(), "kedge")}
	if err := l.EnsureServer(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{l.Server(), l.DBDir(), l.TLSDir(), l.CredDir()} {
		st, err := os.Stat(d)
		if err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v mode %v, want 0700", d, err, st.Mode().Perm())
		}
	}
	if leftovers, _ := filepath.Glob(filepath.Join(l.Root, ".write-test-*")); len(leftovers) > 0 {
		t.Errorf("write probe left behind: %v", leftovers)
	}
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o644)
	if err := (Layout{Root: filepath.Join(notDir, "kedge")}).EnsureServer(); err == nil || !strings.Contains(err.Error(), "--data-dir") {
		t.Errorf("a data dir under a file: %v", err)
	}
}

func TestWriteFileAtomicAndPIDFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := WriteFileAtomic(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, []byte("two"), 0o640); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	st, _ := os.Stat(path)
	if string(data) != "two" || st.Mode().Perm() != 0o640 {
		t.Fatalf("content %q mode %v", data, st.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temp files left: %v", entries)
	}
	remove, err := WritePIDFile(filepath.Join(dir, "run"), "kedge")
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := os.ReadFile(filepath.Join(dir, "run", "kedge.pid"))
	if strings.TrimSpace(string(pid)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("pid file %q", pid)
	}
	remove()
	if _, err := os.Stat(filepath.Join(dir, "run", "kedge.pid")); !os.IsNotExist(err) {
		t.Fatalf("pid file not removed: %v", err)
	}
}
