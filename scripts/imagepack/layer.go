package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// passwd gives root and nobody names, for tools that look users up
// (e.g. runAsUser: 65534 in tests).
const passwd = "root:x:0:0:root:/:/sbin/nologin\n" +
	"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"

// busyboxApplets are the commands linked to /bin/busybox when --busybox is
// given: enough for `kubectl exec -- sh -c ...`, `kubectl cp` (tar) and
// poking around a pod. The list is fixed, not read from the binary, so the
// layer depends on the busybox bytes alone; Debian's busybox-static has all
// of them. Kept sorted, which is the order they are written in.
var busyboxApplets = []string{
	"[", "awk", "basename", "cat", "chmod", "chown", "cp", "cut", "date", "df",
	"dirname", "du", "echo", "env", "false", "find", "free", "grep", "gunzip",
	"gzip", "head", "hostname", "id", "ip", "kill", "less", "ln", "ls", "mkdir",
	"mount", "mv", "nc", "netstat", "nslookup", "ping", "printf", "ps", "pwd",
	"readlink", "rm", "rmdir", "sed", "seq", "sh", "sleep", "sort", "stat",
	"tail", "tar", "tee", "test", "top", "touch", "tr", "true", "uname",
	"uniq", "vi", "wc", "wget", "which", "whoami", "xargs", "zcat",
}

// busyboxPath is where the busybox binary lands; the applets are symlinks
// to it, relative so they also resolve in a layer unpacked outside a chroot.
const busyboxPath = "bin/busybox"

// newLayer returns an uncompressed-tar-backed layer holding the binary at
// entry (mode 0755) plus a minimal tree: /tmp (1777) and /etc/passwd. If
// busybox is not nil it is added as /bin/busybox (0755) with a symlink in
// /bin for each of busyboxApplets. Everything is owned by root and dated
// epoch so the layer is byte-for-byte reproducible.
func newLayer(entry string, bin, busybox []byte) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)

	dirs := map[string]int64{"etc": 0o755, "tmp": 0o1777}
	if busybox != nil {
		dirs[path.Dir(busyboxPath)] = 0o755
	}
	for d := path.Dir(strings.TrimPrefix(entry, "/")); d != "."; d = path.Dir(d) {
		if _, ok := dirs[d]; !ok {
			dirs[d] = 0o755
		}
	}
	if dirs[strings.TrimPrefix(entry, "/")] != 0 {
		return nil, fmt.Errorf("entrypoint %q clashes with a directory of the image", entry)
	}
	if entry == "/etc/passwd" {
		return nil, fmt.Errorf("entrypoint %q clashes with /etc/passwd", entry)
	}
	var links []string
	if busybox != nil {
		for _, a := range busyboxApplets {
			links = append(links, path.Join(path.Dir(busyboxPath), a))
		}
		if rel := strings.TrimPrefix(entry, "/"); rel == busyboxPath || slices.Contains(links, rel) {
			return nil, fmt.Errorf("entrypoint %q clashes with busybox's %s", entry, rel)
		}
	}
	// Sorted order, parents first, keeps the tar stable and valid.
	for _, d := range sortedKeys(dirs) {
		if err := writeEntry(tw, d+"/", tar.TypeDir, dirs[d], nil); err != nil {
			return nil, err
		}
	}
	if err := writeEntry(tw, "etc/passwd", tar.TypeReg, 0o644, []byte(passwd)); err != nil {
		return nil, err
	}
	if err := writeEntry(tw, strings.TrimPrefix(entry, "/"), tar.TypeReg, 0o755, bin); err != nil {
		return nil, err
	}
	// Without busybox nothing below is written, so those images are
	// unchanged from before the flag existed.
	if busybox != nil {
		if err := writeEntry(tw, busyboxPath, tar.TypeReg, 0o755, busybox); err != nil {
			return nil, err
		}
		for _, l := range links {
			if err := writeLink(tw, l, path.Base(busyboxPath)); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("finishing layer tar: %w", err)
	}

	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("creating layer: %w", err)
	}
	return layer, nil
}

func writeEntry(tw *tar.Writer, name string, typ byte, mode int64, data []byte) error {
	hdr := &tar.Header{
		Typeflag: typ,
		Name:     name,
		Mode:     mode,
		Size:     int64(len(data)),
		ModTime:  epoch,
		Uname:    "root",
		Gname:    "root",
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("writing tar header for %s: %w", name, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}

// writeLink writes a root-owned symlink name -> target.
func writeLink(tw *tar.Writer, name, target string) error {
	hdr := &tar.Header{
		Typeflag: tar.TypeSymlink,
		Name:     name,
		Linkname: target,
		Mode:     0o777,
		ModTime:  epoch,
		Uname:    "root",
		Gname:    "root",
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("writing tar header for %s: %w", name, err)
	}
	return nil
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// Lexical order puts "a" before "a/b", so parents precede children.
	slices.Sort(keys)
	return keys
}
