// Package images makes images available to containerd with no registry:
// the pause image kedge carries, and every archive in the air-gap images
// directory (.tar, .tar.gz, .tgz, .tar.zst; docker-archive or OCI), imported
// at start and whenever a file is added or changed.
package images

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"
	"github.com/klauspost/compress/zstd"
)

// Namespace is the containerd namespace the CRI plugin uses.
const Namespace = "k8s.io"

// Importer is the image import component.
type Importer struct {
	Socket string
	Dir    string
	// Builtin are archives carried in the binary (the pause image), by
	// name, opened only to import them.
	Builtin map[string]func() (io.ReadCloser, error)
	// Interval between scans of Dir for new archives.
	Interval time.Duration
	Log      *slog.Logger

	client *containerd.Client
	seen   map[string]string // path -> size/mtime stamp last imported
	cancel context.CancelFunc
	done   chan struct{}
}

func (im *Importer) Name() string { return "images" }

// Start imports the built-in images and the images dir, then watches it.
func (im *Importer) Start(ctx context.Context) error {
	client, err := containerd.New(im.Socket, containerd.WithDefaultNamespace(Namespace))
	if err != nil {
		return fmt.Errorf("connect to containerd: %w", err)
	}
	im.client = client
	im.seen = map[string]string{}
	if err := os.MkdirAll(im.Dir, 0o755); err != nil {
		return fmt.Errorf("images dir %s: %w", im.Dir, err)
	}
	names := make([]string, 0, len(im.Builtin))
	for name := range im.Builtin {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		refs, err := im.importBuiltin(ctx, im.Builtin[name])
		if err != nil {
			return fmt.Errorf("import built-in image %s: %w", name, err)
		}
		im.Log.Info("imported built-in image", "images", refs)
	}
	im.scan(ctx)
	wctx, cancel := context.WithCancel(context.Background())
	im.cancel, im.done = cancel, make(chan struct{})
	go im.watch(wctx)
	return nil
}

// Ready: the initial import happens in Start.
func (im *Importer) Ready(context.Context) error { return nil }

func (im *Importer) Stop() error {
	if im.cancel != nil {
		im.cancel()
		<-im.done
	}
	if im.client != nil {
		return im.client.Close()
	}
	return nil
}

func (im *Importer) importBuiltin(ctx context.Context, open func() (io.ReadCloser, error)) ([]string, error) {
	r, err := open()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return im.importStream(ctx, r)
}

func (im *Importer) watch(ctx context.Context) {
	defer close(im.done)
	t := time.NewTicker(im.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			im.scan(ctx)
		}
	}
}

// scan imports every archive that is new or changed since the last scan.
// A file still being written is imported once its size and mtime settle.
func (im *Importer) scan(ctx context.Context) {
	entries, err := os.ReadDir(im.Dir)
	if err != nil {
		im.Log.Warn("cannot read images dir", "dir", im.Dir, "err", err)
		return
	}
	for _, e := range entries {
		if e.IsDir() || !isArchive(e.Name()) {
			continue
		}
		path := filepath.Join(im.Dir, e.Name())
		info, err := e.Info()
		if err != nil {
			continue
		}
		// Skip files modified in the last second: they may be partial.
		if time.Since(info.ModTime()) < time.Second {
			continue
		}
		stamp := fmt.Sprintf("%d/%d", info.Size(), info.ModTime().UnixNano())
		if im.seen[path] == stamp {
			continue
		}
		im.seen[path] = stamp
		begin := time.Now()
		refs, err := im.importFile(ctx, path)
		if err != nil {
			im.Log.Error("image import failed", "file", path, "err", err)
			continue
		}
		im.Log.Info("imported images", "file", path, "images", refs, "took", time.Since(begin).Round(time.Millisecond))
	}
}

func isArchive(name string) bool {
	for _, ext := range []string{".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"} {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

func (im *Importer) importFile(ctx context.Context, path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(path, ".gz") || strings.HasSuffix(path, ".tgz"):
		gz, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("gunzip: %w", err)
		}
		defer gz.Close()
		r = gz
	case strings.HasSuffix(path, ".zst") || strings.HasSuffix(path, ".tzst"):
		zr, err := zstd.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		r = zr
	}
	return im.importStream(ctx, r)
}

// Normalize is the name the kubelet asks for when a pod names ref:
// "myapp:v1" is docker.io/library/myapp:v1, as docker-archive imports are
// named. A name that does not parse is kept as it is.
func Normalize(ref string) string {
	n, err := reference.ParseDockerRef(ref)
	if err != nil {
		return ref
	}
	return n.String()
}

// normalizeName renames an image imported under a short name (an OCI
// archive's io.containerd.image.name annotation is taken as written).
func (im *Importer) normalizeName(ctx context.Context, img images.Image) (images.Image, error) {
	name := Normalize(img.Name)
	if name == img.Name {
		return img, nil
	}
	svc := im.client.ImageService()
	renamed := img
	renamed.Name = name
	if _, err := svc.Create(ctx, renamed); err != nil {
		if !errdefs.IsAlreadyExists(err) {
			return img, fmt.Errorf("name %s as %s: %w", img.Name, name, err)
		}
		if _, err := svc.Update(ctx, renamed, "target"); err != nil {
			return img, fmt.Errorf("name %s as %s: %w", img.Name, name, err)
		}
	}
	if err := svc.Delete(ctx, img.Name); err != nil && !errdefs.IsNotFound(err) {
		return img, fmt.Errorf("remove the short name %s: %w", img.Name, err)
	}
	return renamed, nil
}

// importStream imports an archive for this platform and unpacks it into
// the snapshotter, so the CRI can start containers from it at once.
func (im *Importer) importStream(ctx context.Context, r io.Reader) ([]string, error) {
	imgs, err := im.client.Import(ctx, r,
		containerd.WithImportPlatform(platforms.Default()),
		containerd.WithSkipMissing(),
		containerd.WithImageRefTranslator(Normalize),
	)
	if err != nil {
		return nil, err
	}
	var refs []string
	for _, img := range imgs {
		img, err := im.normalizeName(ctx, img)
		if err != nil {
			return refs, err
		}
		image := containerd.NewImageWithPlatform(im.client, img, platforms.Default())
		if err := image.Unpack(ctx, "overlayfs"); err != nil {
			return refs, fmt.Errorf("unpack %s: %w", img.Name, err)
		}
		refs = append(refs, img.Name)
	}
	return refs, nil
}
