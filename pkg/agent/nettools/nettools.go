// Package nettools gives the node the networking tools kube-proxy,
// flannel, the CNI portmap plugin and the NetworkPolicy chain run:
// iptables, ip6tables and their -save and -restore, nft and conntrack.
//
// kedge carries Debian's builds of them for its architecture, with every
// library they load down to libc and the dynamic loader (nettools.tar in
// the payload, made by scripts/payload). Setup unpacks them next to the
// payload's bin directory and writes small sh wrappers that run each tool
// through the carried loader, so a host without these packages, or with
// another libc, runs kedge as it is. The wrappers go first on kedge's
// PATH, which its in-process components and containerd's children
// inherit; with --prefer-bundled-bin=false they go last, after the
// host's own.
//
// iptables has two kernel back ends. The wrappers use the one the host's
// rules already live in (legacy when only legacy tables hold rules, else
// nf_tables), as k3s does, so kedge's rules never land beside the host's
// in the other back end.
package nettools

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Archive is the tools' tar in the payload's bin directory.
const Archive = "nettools.tar"

// Tools are the commands the wrappers provide.
var Tools = []string{
	"iptables", "iptables-save", "iptables-restore",
	"ip6tables", "ip6tables-save", "ip6tables-restore",
	"nft", "conntrack",
}

// Setup unpacks the tools carried in binDir (once per payload), writes
// their wrappers and puts them on PATH: first when prefer, else last. It
// returns the wrappers' directory, or "" when this kedge carries no tools
// (a development build without them).
func Setup(binDir string, prefer bool, log *slog.Logger) (string, error) {
	archive := filepath.Join(binDir, Archive)
	if _, err := os.Stat(archive); errors.Is(err, fs.ErrNotExist) {
		log.Info("this kedge carries no networking tools; using the host's iptables, nft and conntrack")
		return "", nil
	}
	root := filepath.Join(filepath.Dir(binDir), "nettools")
	if err := unpackOnce(archive, root); err != nil {
		return "", fmt.Errorf("networking tools: %w", err)
	}
	mode := Mode(root)
	sbin := filepath.Join(root, "sbin")
	if err := writeWrappers(root, sbin, mode); err != nil {
		return "", fmt.Errorf("networking tools: %w", err)
	}
	os.Setenv("PATH", withDir(os.Getenv("PATH"), sbin, prefer))
	log.Info("networking tools", "dir", sbin, "iptablesMode", mode, "preferBundled", prefer)
	return sbin, nil
}

// withDir is path with dir first (prefer) or last, and nowhere else.
func withDir(path, dir string, prefer bool) string {
	var parts []string
	for _, p := range filepath.SplitList(path) {
		if p != dir && p != "" {
			parts = append(parts, p)
		}
	}
	if prefer {
		parts = append([]string{dir}, parts...)
	} else {
		parts = append(parts, dir)
	}
	return strings.Join(parts, string(filepath.ListSeparator))
}

// unpackOnce extracts archive into root unless an earlier start did:
// into a temporary directory renamed into place, so a crash leaves either
// nothing or everything.
func unpackOnce(archive, root string) error {
	if _, err := os.Stat(filepath.Join(root, "lib", "ld.so")); err == nil {
		return nil
	}
	tmp, err := os.MkdirTemp(filepath.Dir(root), ".nettools-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", archive, err)
		}
		name := filepath.Clean(hdr.Name)
		if hdr.Typeflag != tar.TypeReg || !filepath.IsLocal(name) {
			return fmt.Errorf("%s: unexpected entry %q", archive, hdr.Name)
		}
		dst := filepath.Join(tmp, name)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fs.FileMode(hdr.Mode).Perm())
		if err != nil {
			return err
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(tmp, "lib", "ld.so")); err != nil {
		return fmt.Errorf("%s has no lib/ld.so", archive)
	}
	os.RemoveAll(root) // a partial tree from an older kedge
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, root)
}

// Mode is the iptables back end the host's rules live in: "legacy" when
// the legacy tables hold rules and nf_tables' hold none, else "nft".
func Mode(root string) string {
	if rules(root, "iptables-legacy-save") > 0 && rules(root, "iptables-nft-save") == 0 {
		return "legacy"
	}
	return "nft"
}

// rules counts the rules iptables-save (argv0 names the back end) prints.
func rules(root, argv0 string) int {
	multi := "xtables-nft-multi"
	if strings.Contains(argv0, "legacy") {
		multi = "xtables-legacy-multi"
	}
	cmd := exec.Command(filepath.Join(root, "lib", "ld.so"), "--library-path", filepath.Join(root, "lib"),
		"--argv0", argv0, filepath.Join(root, "bin", multi))
	cmd.Env = append(os.Environ(), "XTABLES_LIBDIR="+filepath.Join(root, "xtables"))
	out, err := cmd.Output()
	if err != nil {
		return 0
	}
	return strings.Count(string(out), "\n-A ")
}

// writeWrappers writes one sh script per tool into sbin, each running
// the carried binary through the carried loader.
func writeWrappers(root, sbin, mode string) error {
	if err := os.MkdirAll(sbin, 0o755); err != nil {
		return err
	}
	for _, tool := range Tools {
		data := wrapper(root, tool, mode)
		file := filepath.Join(sbin, tool)
		if old, err := os.ReadFile(file); err == nil && string(old) == data {
			continue
		}
		tmp := file + ".tmp"
		if err := os.WriteFile(tmp, []byte(data), 0o755); err != nil {
			return err
		}
		if err := os.Rename(tmp, file); err != nil {
			return err
		}
	}
	return nil
}

// wrapper is the sh script that runs tool from root.
func wrapper(root, tool, mode string) string {
	bin, argv0 := tool, tool
	if strings.HasPrefix(tool, "ip") {
		bin = "xtables-" + mode + "-multi" // it acts as the tool argv0 names
	}
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	return "#!/bin/sh\n# kedge's " + tool + " (pkg/agent/nettools): Debian's build, run through the loader kedge carries.\n" +
		"XTABLES_LIBDIR=" + q(filepath.Join(root, "xtables")) + "\nexport XTABLES_LIBDIR\n" +
		"exec " + q(filepath.Join(root, "lib", "ld.so")) + " --library-path " + q(filepath.Join(root, "lib")) +
		" --argv0 " + q(argv0) + " " + q(filepath.Join(root, "bin", bin)) + ` "$@"` + "\n"
}
