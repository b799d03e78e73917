// Package cgroup makes and removes the cgroup roots that test and
// benchmark kubelets run under (--cgroup-root), so kubelets sharing a host
// never manage each other's pods.
package cgroup

import (
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Hierarchies lists the cgroup v2 root, or every v1 hierarchy.
func Hierarchies() []string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{"/sys/fs/cgroup"}
	}
	var dirs []string
	all, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range all {
		if st, err := os.Stat(h); err == nil && st.IsDir() {
			dirs = append(dirs, h)
		}
	}
	return dirs
}

// Create makes cgroup name in every hierarchy and returns the directories
// it made (one that exists already is not returned, so not removed).
func Create(name string) []string {
	var dirs []string
	for _, h := range Hierarchies() {
		d := filepath.Join(h, name)
		if err := os.Mkdir(d, 0o755); err == nil {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// Remove removes dirs and their children depth first, retrying until
// timeout while killed processes leave them, and returns those left.
func Remove(dirs []string, timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	var left []string
	for _, d := range dirs {
		for {
			var all []string
			filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
				if err == nil && e.IsDir() {
					all = append(all, p)
				}
				return nil
			})
			for i := len(all) - 1; i >= 0; i-- {
				syscall.Rmdir(all[i])
			}
			if _, err := os.Stat(d); os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				left = append(left, d)
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return left
}
