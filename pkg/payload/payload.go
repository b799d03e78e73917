// Package payload carries the executables kedge runs besides itself
// (runc, containerd-shim-runc-v2, crictl), built by scripts/payload into
// one compressed archive embedded in the kedge binary, and the image
// archives it imports into containerd (scripts/builtin-images).
//
// Extract unpacks the executables once per archive to
// <data-dir>/data/<hash>/bin, and on every later call checks them against
// the checksums packed with them, restoring any that are missing or
// modified.
package payload

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// ErrNoPayload is returned by Hash and Extract when this binary was built
// without the payload archive.
var ErrNoPayload = errors.New("this kedge was built without its payload: build with scripts/build")

// hashLen is how many hex digits of the archive's sha256 name its
// extraction directory.
const hashLen = 16

// embedded is the archive built into this binary.
var embedded = &source{fsys: assets, name: path.Join(assetsDir, archiveName)}

// Available reports whether this binary carries the payload archive.
func Available() bool {
	_, err := fs.Stat(assets, embedded.name)
	return err == nil
}

// Hash is the hex sha256 of the embedded archive.
func Hash() (string, error) {
	return embedded.hash()
}

// Extract unpacks the payload to <dataDir>/data/<hash>/bin once and returns
// that bin dir. Later calls verify every file against the checksums in the
// archive and re-extract the files that are missing or modified. A first
// extraction goes to a temporary directory renamed into place, and a
// repaired file to a temporary file renamed over it, so a crash never
// leaves a partial file or directory behind under the final name.
func Extract(dataDir string) (binDir string, err error) {
	return embedded.extract(dataDir)
}

// BinDir is the directory Extract unpacks to (and returns), known before
// it runs: components can be configured with it while it extracts.
func BinDir(dataDir string) (string, error) {
	sum, err := embedded.hash()
	if err != nil {
		return "", err
	}
	return filepath.Join(dataDir, "data", sum[:hashLen], binDir), nil
}

// Image returns an embedded image archive by file name (e.g. "pause.tar");
// ok is false if this binary has none by that name.
func Image(name string) (data []byte, ok bool) {
	f, err := OpenImage(name)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	data, err = io.ReadAll(f)
	return data, err == nil
}

// OpenImage opens an embedded image archive by file name for import into
// containerd. It reads from the binary's own data: a long-running caller
// holds no copy of the archive (CoreDNS's is 19 MB).
func OpenImage(name string) (io.ReadCloser, error) {
	if !validName(name) || name == archiveName {
		return nil, fmt.Errorf("no built-in image %q", name)
	}
	return assets.Open(path.Join(assetsDir, name))
}

// source is a payload archive, file name in fsys.
type source struct {
	fsys fs.FS
	name string

	once sync.Once
	sum  string
	err  error
}

// hash is the archive's hex sha256, computed once.
func (s *source) hash() (string, error) {
	s.once.Do(func() {
		f, err := s.fsys.Open(s.name)
		if errors.Is(err, fs.ErrNotExist) {
			s.err = ErrNoPayload
			return
		}
		if err != nil {
			s.err = fmt.Errorf("payload: %w", err)
			return
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			s.err = fmt.Errorf("payload: %w", err)
			return
		}
		s.sum = hex.EncodeToString(h.Sum(nil))
	})
	return s.sum, s.err
}

func (s *source) extract(dataDir string) (string, error) {
	sum, err := s.hash()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(dataDir, "data", sum[:hashLen])
	bin := filepath.Join(dir, binDir) // as BinDir says
	want, err := s.manifest()
	if err != nil {
		return "", err
	}
	// Twice at most: when another process renames its extraction into
	// place first, ours is dropped and theirs is verified.
	for range 2 {
		if _, err := os.Lstat(bin); err == nil {
			return bin, s.repair(bin, want)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("payload: %w", err)
		}
		renamed, err := s.extractNew(dir, bin, want)
		if err != nil || renamed {
			return bin, err
		}
	}
	return "", fmt.Errorf("payload: %s keeps disappearing", bin)
}

// extractNew unpacks the whole archive into a temporary directory in dir
// and renames it to bin. renamed is false if bin appeared meanwhile.
func (s *source) extractNew(dir, bin string, want map[string]string) (renamed bool, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("payload: %w", err)
	}
	tmp, err := os.MkdirTemp(dir, "."+binDir+"-*")
	if err != nil {
		return false, fmt.Errorf("payload: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := s.unpack(tmp, want, nil); err != nil {
		os.RemoveAll(tmp)
		os.Remove(dir) // if empty: a corrupt archive leaves nothing behind
		return false, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return false, fmt.Errorf("payload: %w", err)
	}
	if err := os.Rename(tmp, bin); err != nil {
		if _, statErr := os.Lstat(bin); statErr == nil {
			return false, nil // another process was first
		}
		return false, fmt.Errorf("payload: %w", err)
	}
	syncDir(dir)
	return true, nil
}

// repair re-extracts the files of bin that do not match their checksums.
func (s *source) repair(bin string, want map[string]string) error {
	bad := map[string]bool{}
	for name, sum := range want {
		if !fileMatches(filepath.Join(bin, name), sum) {
			bad[name] = true
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return s.unpack(bin, want, bad)
}

// fileMatches reports whether file is an executable regular file whose
// sha256 is sum.
func fileMatches(file, sum string) bool {
	fi, err := os.Lstat(file)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o755 {
		return false
	}
	f, err := os.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false
	}
	return hex.EncodeToString(h.Sum(nil)) == sum
}

// open returns a reader of the archive's tar stream; close releases it.
func (s *source) open() (tr *tar.Reader, close func(), err error) {
	f, err := s.fsys.Open(s.name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, ErrNoPayload
	}
	if err != nil {
		return nil, nil, fmt.Errorf("payload: %w", err)
	}
	zr, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1))
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("payload: %w", err)
	}
	return tar.NewReader(zr), func() { zr.Close(); f.Close() }, nil
}

// corrupt wraps a problem with the archive's contents.
func corrupt(format string, args ...any) error {
	return fmt.Errorf("payload: corrupt archive: "+format, args...)
}

// manifest reads the archive's first entry, bin/.sha256sums: file name to
// hex sha256.
func (s *source) manifest() (map[string]string, error) {
	tr, closeFn, err := s.open()
	if err != nil {
		return nil, err
	}
	defer closeFn()
	hdr, err := tr.Next()
	if err != nil {
		return nil, corrupt("%v", err)
	}
	if hdr.Name != binDir+"/"+manifestName {
		return nil, corrupt("first entry is %q, not %s/%s", hdr.Name, binDir, manifestName)
	}
	data, err := io.ReadAll(io.LimitReader(tr, maxManifest+1))
	if err != nil {
		return nil, corrupt("%v", err)
	}
	if len(data) > maxManifest {
		return nil, corrupt("%s too large", manifestName)
	}
	want := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if b, err := hex.DecodeString(sum); !ok || err != nil || len(b) != sha256.Size || !validName(name) || name == manifestName {
			return nil, corrupt("bad %s line %q", manifestName, sc.Text())
		}
		if _, dup := want[name]; dup {
			return nil, corrupt("%s lists %s twice", manifestName, name)
		}
		want[name] = sum
	}
	if len(want) == 0 {
		return nil, corrupt("%s is empty", manifestName)
	}
	return want, nil
}

// unpack writes the archive's files that are in only (all if only is nil)
// into dir, each through a temporary file renamed into place, checking
// every one against want.
func (s *source) unpack(dir string, want map[string]string, only map[string]bool) error {
	tr, closeFn, err := s.open()
	if err != nil {
		return err
	}
	defer closeFn()
	seen := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return corrupt("%v", err)
		}
		if hdr.Typeflag == tar.TypeDir && strings.TrimSuffix(hdr.Name, "/") == binDir {
			continue
		}
		name, ok := strings.CutPrefix(hdr.Name, binDir+"/")
		if !ok || !validName(name) || hdr.Typeflag != tar.TypeReg {
			return corrupt("unexpected entry %q", hdr.Name)
		}
		if name == manifestName {
			continue
		}
		sum, listed := want[name]
		if !listed {
			return corrupt("%s is not in %s", name, manifestName)
		}
		if seen[name] {
			return corrupt("%s appears twice", name)
		}
		seen[name] = true
		if only != nil && !only[name] {
			continue
		}
		if err := writeFile(dir, name, sum, tr); err != nil {
			return err
		}
	}
	for name := range want {
		if !seen[name] && (only == nil || only[name]) {
			return corrupt("%s is missing", name)
		}
	}
	syncDir(dir)
	return nil
}

// writeFile writes r to dir/name, mode 0755, if its sha256 is sum.
func writeFile(dir, name, sum string, r io.Reader) error {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("payload: %w", err)
	}
	defer os.Remove(f.Name()) // after the rename, a no-op
	h := sha256.New()
	src := &errReader{r: r}
	if _, err := io.Copy(io.MultiWriter(f, h), src); err != nil {
		f.Close()
		if src.err != nil {
			return corrupt("%s: %v", name, err)
		}
		return fmt.Errorf("payload: write %s: %w", filepath.Join(dir, name), err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		f.Close()
		return corrupt("%s has sha256 %s, want %s", name, got, sum)
	}
	if err := f.Chmod(0o755); err != nil {
		f.Close()
		return fmt.Errorf("payload: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("payload: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("payload: %w", err)
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("payload: %w", err)
	}
	return nil
}

// errReader remembers its reader's error, other than io.EOF.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// syncDir makes renames in dir durable, as far as it can.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
