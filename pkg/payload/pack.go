package payload

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

const (
	// archiveName is the payload archive's name in assets/.
	archiveName = "payload.tar.zst"
	// binDir is the directory every executable sits in, in the archive
	// and once extracted.
	binDir = "bin"
	// manifestName is the checksum list in binDir, in sha256sum's format.
	// It is the archive's first entry, so reading it decompresses little.
	manifestName = ".sha256sums"
	// maxManifest bounds how much of a manifest is read.
	maxManifest = 1 << 20
	// packWindow is the zstd window of the files' frame, hence about the
	// memory extracting them takes.
	packWindow = 32 << 20
)

// packTime is every entry's mtime: a fixed one keeps the archive, hence
// its hash and the extraction directory, the same from build to build.
var packTime = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// File is one executable for Pack.
type File struct {
	// Name is the file's name in bin/: no slashes.
	Name string
	Data []byte
}

// Pack writes files to w as the payload archive: a zstd-compressed tar of
// bin/.sha256sums (the checksum of every file, checked on extraction) and
// then bin/<name> for each file in name order, mode 0755, with fixed owners
// and mtimes, so the same files always make the same archive.
func Pack(w io.Writer, files []File) error {
	files = slices.Clone(files)
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Name, b.Name) })
	var manifest bytes.Buffer
	for i, f := range files {
		if !validName(f.Name) || f.Name == manifestName {
			return fmt.Errorf("pack: invalid file name %q", f.Name)
		}
		if i > 0 && files[i-1].Name == f.Name {
			return fmt.Errorf("pack: %s given twice", f.Name)
		}
		sum := sha256.Sum256(f.Data)
		fmt.Fprintf(&manifest, "%s  %s\n", hex.EncodeToString(sum[:]), f.Name)
	}

	// Two zstd frames: the manifest alone, small, so that reading it
	// costs little memory; then the files, with a window wide enough to
	// find what they have in common (the Go runtime, gRPC, ...), which
	// makes the archive about a fifth smaller than the default window does.
	// One encoder goroutine: the output does not depend on the machine.
	var head bytes.Buffer
	tw := tar.NewWriter(&head)
	if err := addFile(tw, manifestName, 0o644, manifest.Bytes()); err != nil {
		return err
	}
	if err := tw.Flush(); err != nil { // no end-of-archive: more follows
		return err
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return err
	}
	if _, err := w.Write(enc.EncodeAll(head.Bytes(), nil)); err != nil {
		return err
	}

	zw, err := zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(packWindow))
	if err != nil {
		return err
	}
	tw = tar.NewWriter(zw)
	for _, f := range files {
		if err := addFile(tw, f.Name, 0o755, f.Data); err != nil {
			zw.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		zw.Close()
		return err
	}
	return zw.Close()
}

// addFile writes bin/name to tw.
func addFile(tw *tar.Writer, name string, mode int64, data []byte) error {
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     binDir + "/" + name,
		Mode:     mode,
		Size:     int64(len(data)),
		ModTime:  packTime,
		Format:   tar.FormatUSTAR,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("pack %s: %w", name, err)
	}
	_, err := tw.Write(data)
	return err
}

// validName reports whether name is a plain file name.
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\\\x00\n")
}
