// Package memlimit gives kedge's process a soft memory limit sized from
// the machine it runs on. Without one, the Go runtime lets the heap grow
// to twice what is live before it collects, and on a 1 GB board that is
// memory the workloads need. GOMEMLIMIT, when set, is the user's choice
// and wins (GOMEMLIMIT=off: no limit).
package memlimit

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
)

const (
	// Share: kedge's heap aims to stay within a quarter of the memory
	// the process may use.
	Share = 4
	// Floor is the lowest limit set: kedge's live heap is about 130 MiB
	// at idle, and below this the collector would run all the time.
	Floor = 256 << 20
)

// For returns the soft limit for total bytes of usable memory.
func For(total int64) int64 { return max(total/Share, Floor) }

// Apply sets the soft limit unless GOMEMLIMIT is set, and logs it.
func Apply(log *slog.Logger) {
	if v, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		log.Info("soft memory limit set by GOMEMLIMIT", "GOMEMLIMIT", v)
		return
	}
	total, err := Usable(os.DirFS("/"))
	if err != nil {
		log.Warn("no soft memory limit: the machine's memory is unknown", "err", err)
		return
	}
	limit := For(total)
	debug.SetMemoryLimit(limit)
	log.Info("soft memory limit", "limit", mib(limit), "usable", mib(total), "change with", "GOMEMLIMIT")
}

// Usable is the memory the process may use: the machine's (MemTotal in
// /proc/meminfo), or its memory cgroup's limit when that is lower (cgroup
// v2 memory.max, v1 memory.limit_in_bytes). root is the filesystem's
// root ("/" but in tests).
func Usable(root fs.FS) (int64, error) {
	total, err := memTotal(root)
	if err != nil {
		return 0, err
	}
	cg, err := fs.ReadFile(root, "proc/self/cgroup")
	if err != nil {
		return total, nil // no cgroups: the machine's memory
	}
	for _, line := range strings.Split(string(cg), "\n") {
		// hierarchy-ID:controllers:path
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var file string
		switch {
		case parts[0] == "0" && parts[1] == "":
			file = path.Join("sys/fs/cgroup", parts[2], "memory.max")
		case slices.Contains(strings.Split(parts[1], ","), "memory"):
			file = path.Join("sys/fs/cgroup/memory", parts[2], "memory.limit_in_bytes")
		default:
			continue
		}
		if limit, ok := readLimit(root, file); ok && limit < total {
			total = limit
		}
	}
	return total, nil
}

func memTotal(root fs.FS) (int64, error) {
	data, err := fs.ReadFile(root, "proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		// MemTotal:        1015152 kB
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "MemTotal:" && f[2] == "kB" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || kb <= 0 {
				return 0, fmt.Errorf("/proc/meminfo: bad MemTotal %q", f[1])
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("/proc/meminfo has no MemTotal")
}

// readLimit reads a cgroup memory limit; "max" (v2) and a missing file
// are no limit.
func readLimit(root fs.FS, file string) (int64, bool) {
	data, err := fs.ReadFile(root, file)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

func mib(n int64) string { return strconv.FormatInt(n>>20, 10) + "MiB" }
