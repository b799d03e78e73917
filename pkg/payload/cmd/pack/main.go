// Command pack writes kedge's payload archive (see payload.Pack) from the
// executables given. scripts/payload runs it.
//
// Usage: go run ./pkg/payload/cmd/pack --out payload.tar.zst FILE...
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kedge-dev/kedge/pkg/payload"
)

func main() {
	out := flag.String("out", "", "archive to write")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: pack --out ARCHIVE FILE...")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *out == "" || flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*out, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "pack:", err)
		os.Exit(1)
	}
}

func run(out string, paths []string) error {
	files := make([]payload.File, 0, len(paths))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files = append(files, payload.File{Name: filepath.Base(p), Data: data})
	}
	// Write next to out and rename, so out is never half written.
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := payload.Pack(tmp, files); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}
