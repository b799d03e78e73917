package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The registries the suite's image names use (e2e.test --list-images).
const (
	e2eRegistry = "registry.k8s.io/e2e-test-images/"
	k8sRegistry = "registry.k8s.io/"
)

// imageSpec is one test image: the shared Debian layer, then files of its
// own, with the config its upstream Dockerfile sets.
type imageSpec struct {
	refs       []string
	from       string // another spec's first ref, whose layers come first
	files      []file
	entrypoint []string
	cmd        []string
	user       string
	ports      []string
	stopSignal string
	// bare images get no Debian layer (pause).
	bare bool
}

// file is one entry of an image's own layer: a copy of a host file
// (src), given bytes (data), a symlink (link) or a directory (dir).
type file struct {
	path string
	src  string
	data []byte
	link string
	dir  bool
	mode int64
}

// imageOptions are what `images` needs: the Debian root filesystem, the
// binaries built for the images, and the kubernetes module's
// test/images directory, whose data files (kitten.jpg, the porter
// certificate) the images carry as upstream's do.
type imageOptions struct {
	rootfs, bins, testImages, out string
	// applets are the busybox applets (busybox --list).
	applets []string
}

func imagesMain(args []string) error {
	fl := flag.NewFlagSet("images", flag.ContinueOnError)
	var o imageOptions
	fl.StringVar(&o.rootfs, "rootfs", "", "Debian root filesystem (debootstrap) every image but pause is built on (required)")
	fl.StringVar(&o.bins, "bins", "", "directory with agnhost, busybox, coredns, nnp, sample-apiserver, etcd and pause, built for the images (required)")
	fl.StringVar(&o.testImages, "test-images", "", "the kubernetes module's test/images directory (required)")
	fl.StringVar(&o.out, "out", "", "docker archive to write, holding every image (required)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if o.rootfs == "" || o.bins == "" || o.testImages == "" || o.out == "" {
		return fmt.Errorf("images: -rootfs, -bins, -test-images and -out are required")
	}
	list, err := exec.Command(filepath.Join(o.bins, "busybox"), "--list").Output()
	if err != nil {
		return fmt.Errorf("images: %s --list: %w", filepath.Join(o.bins, "busybox"), err)
	}
	o.applets = strings.Fields(string(list))
	return writeImages(o)
}

// testImageSpecs are the images the [Conformance] tests run, under the
// names and tags of e2e.test --list-images. Each follows its upstream
// Dockerfile (kubernetes test/images/<name>), on Debian instead of Alpine.
func testImageSpecs(o imageOptions) []imageSpec {
	bin := func(n string) string { return filepath.Join(o.bins, n) }
	agnhost := e2eRegistry + "agnhost:2.63.0"
	porter := filepath.Join(o.testImages, "agnhost", "porter")
	webserver := func(ref, picture string) imageSpec {
		html := filepath.Join(o.testImages, picture, "html")
		return imageSpec{refs: []string{ref}, from: agnhost, cmd: []string{"test-webserver"}, files: []file{
			{path: picture + ".jpg", src: filepath.Join(html, picture+".jpg"), mode: 0o644},
			{path: "data.json", src: filepath.Join(html, "data.json"), mode: 0o644},
		}}
	}
	nginx := func(ref string) imageSpec {
		return imageSpec{refs: []string{ref}, cmd: []string{"nginx", "-g", "daemon off;"}, ports: []string{"80/tcp"},
			stopSignal: "SIGQUIT", files: []file{
				{path: "etc/nginx/nginx.conf", data: []byte(nginxConf), mode: 0o644},
				{path: "usr/share/nginx/html", dir: true, mode: 0o755},
				{path: "usr/share/nginx/html/index.html", data: []byte(nginxIndex), mode: 0o644},
			}}
	}
	return []imageSpec{
		{
			refs:       []string{agnhost, e2eRegistry + "agnhost:2.55"},
			entrypoint: []string{"/agnhost"}, cmd: []string{"pause"},
			ports: []string{"80/tcp", "8080/tcp", "8081/tcp", "9376/tcp", "5000/tcp"},
			files: []file{
				{path: "agnhost", src: bin("agnhost"), mode: 0o755},
				{path: "agnhost-2", link: "agnhost"},
				{path: "coredns", src: bin("coredns"), mode: 0o755},
				{path: "uploads", dir: true, mode: 0o755},
				{path: "localhost.crt", src: filepath.Join(porter, "localhost.crt"), mode: 0o644},
				{path: "localhost.key", src: filepath.Join(porter, "localhost.key"), mode: 0o600},
				// adduser -u 1000 user-defined-in-image; addgroup -g 50000.
				{path: "etc/passwd", data: appendLine(o.rootfs, "etc/passwd", "user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh"), mode: 0o644},
				{path: "etc/group", data: appendLine(o.rootfs, "etc/group",
					"user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image"), mode: 0o644},
			},
		},
		webserver(e2eRegistry+"kitten:1.8", "kitten"),
		webserver(e2eRegistry+"nautilus:1.8", "nautilus"),
		busybox(o),
		nginx(e2eRegistry + "nginx:1.15-4"),
		nginx(e2eRegistry + "nginx:1.27-0"),
		{refs: []string{e2eRegistry + "glibc-dns-testing:2.0.0"}, cmd: []string{"bash"},
			files: []file{{path: "coredns", src: bin("coredns"), mode: 0o755}}},
		{refs: []string{e2eRegistry + "nonewprivs:1.4"}, cmd: []string{"nnp"},
			files: []file{{path: "usr/local/bin/nnp", src: bin("nnp"), mode: 0o4755}}},
		{refs: []string{e2eRegistry + "nonroot:1.5"}, user: "1234", cmd: []string{"bash"}},
		{refs: []string{e2eRegistry + "perl:5.26"}, cmd: []string{"perl"}},
		{refs: []string{e2eRegistry + "sample-apiserver:1.29.2"}, entrypoint: []string{"/sample-apiserver"},
			files: []file{{path: "sample-apiserver", src: bin("sample-apiserver"), mode: 0o755}}},
		{refs: []string{k8sRegistry + "etcd:3.6.8-0"}, cmd: []string{"/usr/local/bin/etcd"},
			files: []file{{path: "usr/local/bin/etcd", src: bin("etcd"), mode: 0o755}}},
		{refs: []string{k8sRegistry + "pause:3.10.2"}, bare: true, entrypoint: []string{"/pause"},
			files: []file{{path: "pause", src: bin("pause"), mode: 0o755}}},
	}
}

// busybox is the busybox image as upstream's is: busybox alone (built
// from upstream's source: Debian's drops environment variables whose names
// hold "-", which tests pass on through sh), every applet a /bin link,
// root and nobody.
func busybox(o imageOptions) imageSpec {
	s := imageSpec{refs: []string{e2eRegistry + "busybox:1.37.0-1", e2eRegistry + "busybox:1.36.1-1"}, bare: true, cmd: []string{"sh"},
		files: []file{
			{path: "bin/busybox", src: filepath.Join(o.bins, "busybox"), mode: 0o755},
			{path: "etc/passwd", data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n"), mode: 0o644},
			{path: "etc/group", data: []byte("root:x:0:\nnobody:x:65534:\n"), mode: 0o644},
			{path: "tmp", dir: true, mode: 0o1777},
		}}
	for _, d := range []string{"bin", "dev", "etc", "home", "proc", "root", "sys", "usr", "usr/sbin", "var"} {
		s.files = append(s.files, file{path: d, dir: true, mode: 0o755})
	}
	for _, a := range o.applets {
		if a != "busybox" {
			s.files = append(s.files, file{path: "bin/" + a, link: "busybox"})
		}
	}
	return s
}

// The official nginx image's behaviour: port 80, /usr/share/nginx/html,
// logs to the container's output.
const nginxConf = `worker_processes 1;
error_log /dev/stderr notice;
pid /run/nginx.pid;
events { worker_connections 1024; }
http {
    include /etc/nginx/mime.types;
    access_log /dev/stdout;
    server {
        listen 80;
        root /usr/share/nginx/html;
        index index.html;
    }
}
`

const nginxIndex = "<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n<body><h1>Welcome to nginx!</h1></body></html>\n"

// appendLine is the rootfs file rel with lines appended.
func appendLine(rootfs, rel, lines string) []byte {
	data, _ := os.ReadFile(filepath.Join(rootfs, rel))
	return append(data, []byte(lines+"\n")...)
}

// writeImages writes one docker archive holding every image: the Debian
// layer is stored once, and each node imports the archive once.
func writeImages(o imageOptions) error {
	base, err := dirLayer(o.rootfs)
	if err != nil {
		return fmt.Errorf("layer from %s: %w", o.rootfs, err)
	}
	built := map[string]v1.Image{}
	refs := map[name.Reference]v1.Image{}
	for _, s := range testImageSpecs(o) {
		img, err := buildImage(s, base, built)
		if err != nil {
			return fmt.Errorf("%s: %w", s.refs[0], err)
		}
		for _, r := range s.refs {
			tag, err := name.NewTag(r)
			if err != nil {
				return err
			}
			built[r] = img
			refs[tag] = img
		}
	}
	tmp := o.out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := tarball.MultiRefWrite(refs, f); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, o.out)
}

func buildImage(s imageSpec, base v1.Layer, built map[string]v1.Image) (v1.Image, error) {
	img := empty.Image
	var err error
	switch {
	case s.from != "":
		if img = built[s.from]; img == nil {
			return nil, fmt.Errorf("%s must come before it", s.from)
		}
	case !s.bare:
		if img, err = mutate.AppendLayers(img, base); err != nil {
			return nil, err
		}
	}
	if len(s.files) > 0 {
		own, err := filesLayer(s.files)
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, own); err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goarch()
	c := &cf.Config
	if len(c.Env) == 0 {
		c.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	if s.entrypoint != nil {
		c.Entrypoint = s.entrypoint
	}
	if s.cmd != nil {
		c.Cmd = s.cmd
	}
	if s.user != "" {
		c.User = s.user
	}
	if s.stopSignal != "" {
		c.StopSignal = s.stopSignal
	}
	if len(s.ports) > 0 {
		c.ExposedPorts = map[string]struct{}{}
		for _, p := range s.ports {
			c.ExposedPorts[p] = struct{}{}
		}
	}
	return mutate.ConfigFile(img, cf)
}

// dirLayer is a layer of the tree under root, as debootstrap made it
// (owners, modes, symlinks and hard links kept). It is written to a
// temporary file once, so each image reuses the same bytes and digest.
func dirLayer(root string) (v1.Layer, error) {
	f, err := os.CreateTemp("", "conformance-base-*.tar")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name()) // open until the process ends
	tw := tar.NewWriter(f)
	inodes := map[uint64]string{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		// The image runtime provides these; what debootstrap left there
		// (device nodes, a mounted /proc) is not image content.
		if top := strings.SplitN(rel, string(filepath.Separator), 2)[0]; top == "dev" || top == "proc" || top == "sys" {
			if d.IsDir() && rel == top {
				return writeDirEntry(tw, rel)
			}
			return filepath.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return nil // sockets and devices: skipped
		}
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		if ino, nlink := inode(info); info.Mode().IsRegular() && nlink > 1 {
			if first, ok := inodes[ino]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
				return tw.WriteHeader(hdr)
			}
			inodes[ino] = hdr.Name
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, src)
			src.Close()
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(io.NewSectionReader(f, 0, 1<<62)), nil
	})
}

// inode is a file's inode number and link count.
func inode(info fs.FileInfo) (uint64, uint64) {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Ino, uint64(st.Nlink)
	}
	return 0, 1
}

// goarch is the images' architecture: this machine's.
func goarch() string { return runtime.GOARCH }

func writeDirEntry(tw *tar.Writer, rel string) error {
	return tw.WriteHeader(&tar.Header{Name: filepath.ToSlash(rel) + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)})
}

// filesLayer is a layer of an image's own files, in path order, owned by
// root.
func filesLayer(files []file) (v1.Layer, error) {
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Name: f.path, Mode: f.mode, ModTime: time.Unix(0, 0)}
		switch {
		case f.dir:
			hdr.Typeflag, hdr.Name = tar.TypeDir, f.path+"/"
		case f.link != "":
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, f.link, 0o777
		default:
			data := f.data
			if f.src != "" {
				var err error
				if data, err = os.ReadFile(f.src); err != nil {
					return nil, err
				}
			}
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(data))
			if err := tw.WriteHeader(hdr); err != nil {
				return nil, err
			}
			if _, err := tw.Write(data); err != nil {
				return nil, err
			}
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
}
