// Command imagepack packs one static binary into a single-layer container
// image and writes it as a docker-archive tarball, the format accepted by
// `ctr images import` and the containerd client's Import. It lets kedge
// build its pause and test images offline, without a registry or Docker.
//
// Usage:
//
//	go run ./scripts/imagepack --binary PATH --ref NAME:TAG [--ref ...] --out FILE.tar \
//	    [--entrypoint /path/in/image] [--arch amd64] [--variant v7] \
//	    [--env K=V ...] [--port 8080 ...] [--busybox PATH]
//
// --busybox adds a static busybox as /bin/busybox with /bin symlinks for
// common applets (sh, cat, tar, ...) and sets PATH=/bin:/, so that
// `kubectl exec -- sh -c ...` and `kubectl cp` work in the image.
//
// The output is reproducible: the same binary and flags give the same
// image digest, because every timestamp in the image is the Unix epoch.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
)

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func main() {
	var (
		o                 options
		refs, envs, ports listFlag
		out               string
	)
	flag.StringVar(&o.binary, "binary", "", "static binary to pack (required)")
	flag.Var(&refs, "ref", "image reference NAME:TAG (repeatable, at least one)")
	flag.StringVar(&out, "out", "", "docker-archive tarball to write (required)")
	flag.StringVar(&o.entrypoint, "entrypoint", "", "path of the binary in the image (default /<basename of --binary>)")
	flag.StringVar(&o.arch, "arch", runtime.GOARCH, "image architecture (GOARCH spelling)")
	flag.StringVar(&o.variant, "variant", "", "architecture variant (default v7 for --arch arm)")
	flag.Var(&envs, "env", "environment variable K=V (repeatable; PATH=/, or PATH=/bin:/ with --busybox, is always set first)")
	flag.Var(&ports, "port", "exposed port, PORT or PORT/PROTO (repeatable)")
	flag.StringVar(&o.busybox, "busybox", "", "static busybox binary to add as /bin/busybox, with /bin symlinks for sh, cat, tar, ... (optional)")
	flag.Parse()

	o.refs, o.env, o.ports = refs, envs, ports
	if err := run(o, out); err != nil {
		fmt.Fprintf(os.Stderr, "imagepack: %v\n", err)
		os.Exit(1)
	}
}

func run(o options, out string) error {
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if out == "" {
		return fmt.Errorf("--out is required")
	}
	digest, err := pack(o, out)
	if err != nil {
		return err
	}
	fmt.Printf("%s %s %s\n", out, digest, strings.Join(o.refs, " "))
	return nil
}
