// Command wrap makes a kedge release binary: the launcher executable,
// then kedge compressed with zstd, then a trailer (pkg/launcher.Wrap).
// Used by scripts/release.
//
//	wrap --launcher L --inner KEDGE --compressed KEDGE.zst --out OUT
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kedge-dev/kedge/pkg/launcher"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "wrap: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	l := flag.String("launcher", "", "the launcher executable")
	inner := flag.String("inner", "", "the kedge binary")
	comp := flag.String("compressed", "", "the kedge binary, zstd-compressed")
	out := flag.String("out", "", "the release binary to write")
	flag.Parse()
	if *l == "" || *inner == "" || *comp == "" || *out == "" || flag.NArg() != 0 {
		flag.Usage()
		return fmt.Errorf("--launcher, --inner, --compressed and --out are required")
	}
	var files []*os.File
	for _, p := range []string{*l, *inner, *comp} {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		files = append(files, f)
	}
	tmp, err := os.CreateTemp(filepath.Dir(*out), "."+filepath.Base(*out)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := launcher.Wrap(tmp, files[0], files[1], files[2]); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), *out)
}
