package payload

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/klauspost/compress/zstd"
)

var testFiles = []File{
	{Name: "runc", Data: []byte("#!/bin/sh\necho runc\n")},
	{Name: "crictl", Data: bytes.Repeat([]byte("crictl "), 100000)},
	{Name: "containerd-shim-runc-v2", Data: []byte{0, 1, 2, 3}},
	{Name: "empty", Data: nil},
}

func pack(t *testing.T, files []File) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Pack(&buf, files); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sourceOf(archive []byte) *source {
	return &source{fsys: fstest.MapFS{archiveName: {Data: archive}}, name: archiveName}
}

// extractFrom extracts archive into dataDir, as Extract does the embedded one.
func extractFrom(archive []byte, dataDir string) (string, error) {
	return sourceOf(archive).extract(dataDir)
}

func hashDir(archive []byte) string {
	sum := sha256.Sum256(archive)
	return hex.EncodeToString(sum[:])[:hashLen]
}

// checkBin fails unless bin holds exactly files, executable.
func checkBin(t *testing.T, bin string, files []File) {
	t.Helper()
	entries, err := os.ReadDir(bin)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(files) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("%s holds %v, want %d files", bin, names, len(files))
	}
	for _, f := range files {
		p := filepath.Join(bin, f.Name)
		got, err := os.ReadFile(p)
		if err != nil {
			t.Error(err)
			continue
		}
		if !bytes.Equal(got, f.Data) {
			t.Errorf("%s: wrong contents", p)
		}
		if fi, _ := os.Stat(p); fi.Mode() != 0o755 {
			t.Errorf("%s: mode %v, want 0755", p, fi.Mode())
		}
	}
}

var old = time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)

// age sets every file's mtime in bin to old, so a rewrite shows.
func age(t *testing.T, bin string) {
	t.Helper()
	for _, f := range testFiles {
		if err := os.Chtimes(filepath.Join(bin, f.Name), old, old); err != nil {
			t.Fatal(err)
		}
	}
}

func TestExtract(t *testing.T) {
	archive := pack(t, testFiles)
	tests := []struct {
		name string
		// damage changes a first extraction in bin.
		damage func(t *testing.T, bin string)
		// rewritten are the files a second Extract must rewrite.
		rewritten []string
	}{
		{name: "untouched is a no-op", damage: func(*testing.T, string) {}},
		{
			name: "modified file restored",
			damage: func(t *testing.T, bin string) {
				if err := os.WriteFile(filepath.Join(bin, "runc"), []byte("evil"), 0o755); err != nil {
					t.Fatal(err)
				}
			},
			rewritten: []string{"runc"},
		},
		{
			name: "same size, one byte changed",
			damage: func(t *testing.T, bin string) {
				p := filepath.Join(bin, "containerd-shim-runc-v2")
				if err := os.WriteFile(p, []byte{0, 1, 2, 4}, 0o755); err != nil {
					t.Fatal(err)
				}
			},
			rewritten: []string{"containerd-shim-runc-v2"},
		},
		{
			name: "deleted files restored",
			damage: func(t *testing.T, bin string) {
				for _, n := range []string{"crictl", "empty"} {
					if err := os.Remove(filepath.Join(bin, n)); err != nil {
						t.Fatal(err)
					}
				}
			},
			rewritten: []string{"crictl", "empty"},
		},
		{
			name: "not executable restored",
			damage: func(t *testing.T, bin string) {
				if err := os.Chmod(filepath.Join(bin, "crictl"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			rewritten: []string{"crictl"},
		},
		{
			name: "symlink replaced",
			damage: func(t *testing.T, bin string) {
				p := filepath.Join(bin, "runc")
				if err := os.Rename(p, p+".real"); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink("runc.real", p); err != nil {
					t.Fatal(err)
				}
			},
			rewritten: []string{"runc"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := t.TempDir()
			bin, err := extractFrom(archive, dataDir)
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(dataDir, "data", hashDir(archive), "bin"); bin != want {
				t.Fatalf("bin dir %s, want %s", bin, want)
			}
			checkBin(t, bin, testFiles)
			age(t, bin)
			tt.damage(t, bin)
			os.Remove(filepath.Join(bin, "runc.real"))

			again, err := extractFrom(archive, dataDir)
			if err != nil {
				t.Fatal(err)
			}
			if again != bin {
				t.Fatalf("second extract to %s, first to %s", again, bin)
			}
			checkBin(t, bin, testFiles)
			for _, f := range testFiles {
				fi, err := os.Stat(filepath.Join(bin, f.Name))
				if err != nil {
					t.Fatal(err)
				}
				rewritten := strings.Contains(" "+strings.Join(tt.rewritten, " ")+" ", " "+f.Name+" ")
				if unchanged := fi.ModTime().Equal(old); unchanged == rewritten {
					t.Errorf("%s: mtime %v; rewritten %v, want %v", f.Name, fi.ModTime(), !unchanged, rewritten)
				}
			}
			// Nothing left over: no temp dirs or files.
			entries, _ := os.ReadDir(filepath.Dir(bin))
			if len(entries) != 1 {
				t.Errorf("%s holds %d entries, want just bin", filepath.Dir(bin), len(entries))
			}
		})
	}
}

// rawArchive packs entries as they are, to make archives Pack would not.
func rawArchive(t *testing.T, entries ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(zw)
	for _, h := range entries {
		data := []byte(h.Linkname)
		h.Linkname = ""
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(data))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(data)
		}
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func sumLine(data, name string) string {
	sum := sha256.Sum256([]byte(data))
	return hex.EncodeToString(sum[:]) + "  " + name + "\n"
}

func TestExtractCorrupt(t *testing.T) {
	good := pack(t, testFiles)
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0xff
	// reg makes a regular file entry; its contents go in Linkname.
	reg := func(name, data string) tar.Header {
		return tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Linkname: data}
	}
	manifest := func(lines ...string) tar.Header {
		return reg("bin/"+manifestName, strings.Join(lines, ""))
	}
	tests := []struct {
		name    string
		archive []byte
		want    string
	}{
		{"empty", nil, "corrupt archive"},
		{"not zstd", []byte("hello, world, this is not an archive"), "corrupt archive"},
		{"truncated", good[:len(good)/2], "corrupt archive"},
		{"byte flipped", flipped, "corrupt archive"},
		{"no manifest", rawArchive(t, reg("bin/runc", "x")), "first entry"},
		{"empty manifest", rawArchive(t, manifest(), reg("bin/runc", "x")), "is empty"},
		{"bad manifest line", rawArchive(t, manifest("nonsense\n"), reg("bin/runc", "x")), "bad .sha256sums line"},
		{"file not in manifest", rawArchive(t, manifest(sumLine("x", "runc")), reg("bin/runc", "x"), reg("bin/sh", "y")), "sh is not in"},
		{"file missing", rawArchive(t, manifest(sumLine("x", "runc"), sumLine("y", "sh")), reg("bin/runc", "x")), "sh is missing"},
		{"wrong checksum", rawArchive(t, manifest(sumLine("x", "runc")), reg("bin/runc", "y")), "has sha256"},
		{"path escapes", rawArchive(t, manifest(sumLine("x", "runc")), reg("bin/../runc", "x")), "unexpected entry"},
		{"outside bin", rawArchive(t, manifest(sumLine("x", "runc")), reg("runc", "x")), "unexpected entry"},
		{"symlink", rawArchive(t, manifest(sumLine("x", "runc")), tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/runc", Linkname: "/bin/sh"}), "unexpected entry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := t.TempDir()
			bin, err := extractFrom(tt.archive, dataDir)
			if err == nil {
				t.Fatalf("extracted to %s, want an error", bin)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to mention %q", err, tt.want)
			}
			// Nothing half-extracted is left behind.
			if entries, _ := os.ReadDir(filepath.Join(dataDir, "data")); len(entries) != 0 {
				t.Errorf("data dir holds %d entries after a failure", len(entries))
			}
		})
	}
}

func TestHashNamesDir(t *testing.T) {
	a := pack(t, testFiles)
	if again := pack(t, testFiles); !bytes.Equal(a, again) {
		t.Fatal("Pack is not reproducible")
	}
	reordered := []File{testFiles[3], testFiles[1], testFiles[0], testFiles[2]}
	if again := pack(t, reordered); !bytes.Equal(a, again) {
		t.Fatal("Pack depends on the order of its files")
	}
	changed := append([]File{{Name: "runc", Data: []byte("runc v2")}}, testFiles[1:]...)
	b := pack(t, changed)

	dataDir := t.TempDir()
	binA, err := extractFrom(a, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	binB, err := extractFrom(b, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if binA == binB {
		t.Fatalf("different archives share %s", binA)
	}
	for _, c := range []struct {
		archive []byte
		bin     string
		files   []File
	}{{a, binA, testFiles}, {b, binB, changed}} {
		sum, err := sourceOf(c.archive).hash()
		if err != nil {
			t.Fatal(err)
		}
		if want := sha256.Sum256(c.archive); sum != hex.EncodeToString(want[:]) {
			t.Errorf("hash %s, want the archive's sha256", sum)
		}
		if filepath.Base(filepath.Dir(c.bin)) != sum[:hashLen] {
			t.Errorf("%s is not named by hash %s", c.bin, sum)
		}
		checkBin(t, c.bin, c.files)
	}
}

func TestExtractConcurrent(t *testing.T) {
	archive := pack(t, testFiles)
	dataDir := t.TempDir()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = extractFrom(archive, dataDir)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	checkBin(t, filepath.Join(dataDir, "data", hashDir(archive), "bin"), testFiles)
}

func TestNoPayload(t *testing.T) {
	s := &source{fsys: fstest.MapFS{}, name: archiveName}
	if _, err := s.hash(); !errors.Is(err, ErrNoPayload) {
		t.Errorf("hash: %v, want ErrNoPayload", err)
	}
	if _, err := s.extract(t.TempDir()); !errors.Is(err, ErrNoPayload) {
		t.Errorf("extract: %v, want ErrNoPayload", err)
	}
	if !strings.Contains(ErrNoPayload.Error(), "scripts/build") {
		t.Errorf("%q does not say how to build the payload", ErrNoPayload)
	}
}

// TestEmbedded checks the package's own API, whether or not this checkout
// has built the payload.
func TestEmbedded(t *testing.T) {
	dataDir := t.TempDir()
	bin, err := Extract(dataDir)
	if !Available() {
		if !errors.Is(err, ErrNoPayload) {
			t.Fatalf("Extract without a payload: %v, want ErrNoPayload", err)
		}
		if _, err := Hash(); !errors.Is(err, ErrNoPayload) {
			t.Fatalf("Hash without a payload: %v, want ErrNoPayload", err)
		}
		t.Log("no payload built; run scripts/payload to test it")
	} else {
		if err != nil {
			t.Fatal(err)
		}
		sum, err := Hash()
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(dataDir, "data", sum[:hashLen], "bin"); bin != want {
			t.Errorf("Extract to %s, want %s", bin, want)
		}
		for _, c := range []struct{ name, flag, want string }{
			{"runc", "--version", "runc version"},
			{"containerd-shim-runc-v2", "-v", "Version:"},
			{"crictl", "--version", "crictl version"},
		} {
			out, err := exec.Command(filepath.Join(bin, c.name), c.flag).CombinedOutput()
			if err != nil || !strings.Contains(string(out), c.want) {
				t.Errorf("%s %s: %v\n%s", c.name, c.flag, err, out)
			}
			t.Logf("%s %s:\n%s", c.name, c.flag, out)
		}
	}
	for _, name := range []string{"", ".", "..", "../payload.go", "nonexistent.tar", archiveName} {
		if _, ok := Image(name); ok {
			t.Errorf("Image(%q) found something", name)
		}
	}
}

func TestPackRejects(t *testing.T) {
	for _, name := range []string{"", ".", "..", "a/b", manifestName} {
		if err := Pack(&bytes.Buffer{}, []File{{Name: name}}); err == nil {
			t.Errorf("Pack accepted a file named %q", name)
		}
	}
	if err := Pack(&bytes.Buffer{}, []File{{Name: "a"}, {Name: "a"}}); err == nil {
		t.Error("Pack accepted a name twice")
	}
}

// BinDir names, before extraction, the directory Extract fills.
func TestBinDir(t *testing.T) {
	if !Available() {
		if _, err := BinDir(t.TempDir()); !errors.Is(err, ErrNoPayload) {
			t.Fatalf("without a payload: %v", err)
		}
		return
	}
	dataDir := t.TempDir()
	want, err := BinDir(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(want); !os.IsNotExist(err) {
		t.Fatalf("BinDir extracted something: %v", err)
	}
	got, err := Extract(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("Extract to %s, BinDir said %s", got, want)
	}
}
