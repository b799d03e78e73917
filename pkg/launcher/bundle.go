package launcher

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
)

// A release binary is the launcher executable followed by the inner kedge,
// zstd-compressed, and a fixed-size trailer describing it:
//
//	launcher ELF | zstd(kedge) | trailer
//
// trailer: compressed length (uint64 LE), uncompressed length (uint64 LE),
// sha256 of the uncompressed kedge (32 bytes), magic (16 bytes).
// Appending, rather than go:embed, builds the launcher once per architecture
// from committed sources only, so a release build writes nothing into the
// source tree that a concurrent host build could pick up.
const (
	magic      = "kedge-launcher1\x00"
	trailerLen = 8 + 8 + sha256.Size + len(magic)
	// MaxWindow is the largest zstd window the launcher decodes, hence
	// about the memory a first run needs besides the output file. 128 MiB
	// (zstd --long=27) fits a 1 GiB board.
	MaxWindow = 128 << 20
)

// ErrNoBundle is returned when an executable carries no inner kedge.
var ErrNoBundle = errors.New("no kedge appended to this launcher (build release binaries with scripts/release)")

// bundle describes the inner kedge appended to an executable.
type bundle struct {
	offset   int64 // where the compressed bytes start
	compLen  int64
	size     int64 // uncompressed
	sha256   [sha256.Size]byte
	fileSize int64
}

// readBundle reads f's trailer.
func readBundle(f *os.File) (*bundle, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() < int64(trailerLen) {
		return nil, ErrNoBundle
	}
	var t [trailerLen]byte
	if _, err := f.ReadAt(t[:], fi.Size()-int64(trailerLen)); err != nil {
		return nil, err
	}
	if string(t[trailerLen-len(magic):]) != magic {
		return nil, ErrNoBundle
	}
	b := &bundle{
		compLen:  int64(binary.LittleEndian.Uint64(t[0:8])),
		size:     int64(binary.LittleEndian.Uint64(t[8:16])),
		fileSize: fi.Size(),
	}
	copy(b.sha256[:], t[16:16+sha256.Size])
	b.offset = fi.Size() - int64(trailerLen) - b.compLen
	if b.compLen <= 0 || b.size <= 0 || b.offset < 0 {
		return nil, fmt.Errorf("corrupt trailer in %s", f.Name())
	}
	return b, nil
}

// newDecoder returns a single-threaded, low-memory zstd decoder that
// refuses windows larger than MaxWindow.
func newDecoder(r io.Reader) (*zstd.Decoder, error) {
	return zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(MaxWindow))
}

// Wrap writes a release binary to w: the launcher executable, then
// compressed (one or more zstd frames holding exactly inner), then the
// trailer. It decodes compressed as the launcher will, so a stream the
// launcher could not extract (wrong contents, too large a window) is an
// error here rather than on a user's machine.
func Wrap(w io.Writer, launcher, inner, compressed io.Reader) error {
	h := sha256.New()
	size, err := io.Copy(h, inner)
	if err != nil {
		return fmt.Errorf("read inner binary: %w", err)
	}
	var want [sha256.Size]byte
	copy(want[:], h.Sum(nil))

	comp, err := io.ReadAll(compressed)
	if err != nil {
		return fmt.Errorf("read compressed binary: %w", err)
	}
	dec, err := newDecoder(bytes.NewReader(comp))
	if err != nil {
		return err
	}
	h.Reset()
	n, err := io.Copy(h, dec)
	dec.Close()
	if err != nil {
		return fmt.Errorf("decode compressed binary: %w", err)
	}
	if n != size || !bytes.Equal(h.Sum(nil), want[:]) {
		return errors.New("compressed binary does not decode to the inner binary")
	}

	if _, err := io.Copy(w, launcher); err != nil {
		return fmt.Errorf("copy launcher: %w", err)
	}
	if _, err := w.Write(comp); err != nil {
		return err
	}
	var t [trailerLen]byte
	binary.LittleEndian.PutUint64(t[0:8], uint64(len(comp)))
	binary.LittleEndian.PutUint64(t[8:16], uint64(size))
	copy(t[16:], want[:])
	copy(t[16+sha256.Size:], magic)
	_, err = w.Write(t[:])
	return err
}
