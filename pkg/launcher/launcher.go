// Package launcher owns kedge's release binary layout: a small static
// launcher with the real kedge appended to it, zstd-compressed (Wrap), so
// that a release binary is a third of kedge's size.
//
// On its first run the launcher extracts kedge to
// <data-dir>/data/<hash>/kedge (decoded into a temporary file, checked
// against the sha256 in the trailer, then renamed into place) and execs it
// with the same argv, argv[0] included (kedge dispatches on it for its
// kubectl, crictl and ctr symlinks), and environment; later runs exec it
// at once. Being exec'd, kedge keeps the launcher's PID (systemd's
// Type=notify works) and /proc/self/exe is the extracted kedge, which it
// re-executes for containerd.
package launcher

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// hashLen is how many hex digits of the inner kedge's sha256 name its
// directory, as for pkg/payload's extraction directory.
const hashLen = 16

// Binary returns the path of the inner kedge of the release binary exe,
// extracting it on first use as described in the package doc. exe is
// normally /proc/self/exe.
func Binary(exe string, e Env) (string, error) {
	f, err := os.Open(exe)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := readBundle(f)
	if err != nil {
		return "", err
	}
	name := filepath.Join("data", hex.EncodeToString(b.sha256[:])[:hashLen], "kedge")
	dataDir, fallback := DataDirs(e)
	if fallback != "" {
		if p := filepath.Join(fallback, name); extracted(p, b) {
			return p, nil
		}
	}
	dataDir, err = filepath.Abs(dataDir)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dataDir, name)
	if extracted(p, b) {
		return p, nil
	}
	if err := extract(f, b, p); err != nil {
		return "", fmt.Errorf("extract kedge to %s: %w", p, err)
	}
	return p, nil
}

// extracted reports whether p looks like b's extracted kedge. Only size and
// mode are checked: hashing 200 MB at every kubectl call would cost
// seconds on a Raspberry Pi, and p only ever appears by a rename after a
// verified extraction.
func extracted(p string, b *bundle) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Size() == b.size && fi.Mode().Perm()&0o111 != 0
}

// extract decodes b from f into a temporary file beside dest, verifies
// its length and sha256, and renames it to dest.
func extract(f *os.File, b *bundle, dest string) error {
	dir := filepath.Dir(dest)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".kedge.tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	dec, err := newDecoder(io.NewSectionReader(f, b.offset, b.compLen))
	if err != nil {
		tmp.Close()
		return err
	}
	defer dec.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(dec, b.size+1))
	if err != nil {
		tmp.Close()
		return err
	}
	if n != b.size || string(h.Sum(nil)) != string(b.sha256[:]) {
		tmp.Close()
		return errors.New("the appended kedge is corrupt (sha256 or size mismatch): download the release binary again")
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dest); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Exec replaces the process with the inner kedge of the running release
// binary, keeping argv and the environment. It returns only on failure.
func Exec() error {
	home, _ := os.UserHomeDir()
	e := Env{Args: os.Args, Getenv: os.Getenv, UID: os.Getuid(), HomeDir: home}
	p, err := Binary("/proc/self/exe", e)
	if err != nil {
		return err
	}
	return fmt.Errorf("exec %s: %w", p, syscall.Exec(p, os.Args, os.Environ()))
}
