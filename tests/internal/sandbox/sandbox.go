// Package sandbox gives a benchmark or test run of kedge a place of its
// own on the host: network namespaces, a directory whose run dir is a
// tmpfs, and a kubelet cgroup root. Remove takes all of it away again,
// with every process started inside, found by namespace and cgroup, never
// by name.
package sandbox

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kedge-dev/kedge/tests/internal/cgroup"
)

// Sandbox is one run's namespaces, directory and cgroups, all named after
// it so that nothing else on the host is touched.
type Sandbox struct {
	// Name is the first network namespace's and the cgroup's name.
	Name string
	Dir  string
	// Namespaces are the network namespaces made, Name first.
	Namespaces []string
	CgroupDirs []string
}

// New makes the namespace name (with loopback up), a directory for it
// under workDir with a tmpfs at Dir/run, as /run is on Debian and
// Raspberry Pi OS, and the cgroup name in every hierarchy, because the
// kubelet wants its cgroup root to exist.
func New(workDir, name string) (*Sandbox, error) {
	s := &Sandbox{Name: name}
	dir, err := os.MkdirTemp(workDir, name+"-")
	if err != nil {
		return nil, err
	}
	s.Dir = dir
	if err := s.AddNetns(name); err != nil {
		s.Remove(false, discard)
		return nil, err
	}
	run := filepath.Join(dir, "run")
	if err := os.Mkdir(run, 0o755); err != nil {
		s.Remove(false, discard)
		return nil, err
	}
	if err := syscall.Mount("tmpfs", run, "tmpfs", 0, "mode=0755,size=1g"); err != nil {
		s.Remove(false, discard)
		return nil, fmt.Errorf("a tmpfs on %s: %w", run, err)
	}
	s.CgroupDirs = cgroup.Create(name)
	return s, nil
}

func discard(string, ...any) {}

// AddNetns makes one more network namespace of the sandbox, loopback up.
func (s *Sandbox) AddNetns(ns string) error {
	if err := IP("netns", "add", ns); err != nil {
		return err
	}
	s.Namespaces = append(s.Namespaces, ns)
	return IP("-n", ns, "link", "set", "lo", "up")
}

// IP runs ip(8) with args.
func IP(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Remove kills every process of the sandbox, unmounts what they left
// under its directory, removes the cgroups and the namespaces, then the
// directory unless keep is set. logf reports what could not be removed.
func (s *Sandbox) Remove(keep bool, logf func(string, ...any)) {
	for i := 0; i < 20; i++ {
		pids := s.Processes()
		if len(pids) == 0 {
			break
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if pids := s.Processes(); len(pids) > 0 {
		logf("cleanup %s: processes still alive: %v", s.Name, pids)
	}
	s.unmountAll()
	for _, d := range cgroup.Remove(s.CgroupDirs, 15*time.Second) {
		logf("cleanup: cgroup %s could not be removed", d)
	}
	for _, ns := range s.Namespaces {
		if err := IP("netns", "delete", ns); err != nil {
			logf("cleanup %s: %v", ns, err)
		}
	}
	if keep {
		logf("kept %s", s.Dir)
		return
	}
	if err := os.RemoveAll(s.Dir); err != nil {
		logf("cleanup %s: %v", s.Dir, err)
	}
}

// Processes are the PIDs in the sandbox's network namespaces or cgroups,
// with all their descendants.
func (s *Sandbox) Processes() []int {
	var roots []int
	want := map[string]bool{}
	for _, ns := range s.Namespaces {
		var st syscall.Stat_t
		if err := syscall.Stat("/run/netns/"+ns, &st); err == nil {
			want[fmt.Sprintf("net:[%d]", st.Ino)] = true
		}
	}
	if len(want) > 0 {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			if link, err := os.Readlink(filepath.Join("/proc", e.Name(), "ns", "net")); err == nil && want[link] {
				roots = append(roots, pid)
			}
		}
	}
	for _, d := range s.CgroupDirs {
		filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() || e.Name() != "cgroup.procs" {
				return nil
			}
			data, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil {
					roots = append(roots, pid)
				}
			}
			return nil
		})
	}
	return descendants(roots)
}

// descendants returns roots and every process below them, from one scan
// of /proc.
func descendants(roots []int) []int {
	if len(roots) == 0 {
		return nil
	}
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid := parentOf(pid); ppid > 0 {
			children[ppid] = append(children[ppid], pid)
		}
	}
	seen := map[int]bool{}
	queue := append([]int(nil), roots...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] || p == os.Getpid() || p <= 1 {
			continue
		}
		seen[p] = true
		queue = append(queue, children[p]...)
	}
	var out []int
	for p := range seen {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

// parentOf reads the PPID from /proc/PID/stat ("pid (comm) state ppid").
func parentOf(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// unmountAll unmounts everything under the sandbox directory, deepest
// first (kubelet volumes, overlay rootfs, pod network namespaces, shm, the
// run dir's tmpfs).
func (s *Sandbox) unmountAll() {
	for i := 0; i < 3; i++ {
		data, err := os.ReadFile("/proc/self/mounts")
		if err != nil {
			return
		}
		var mounts []string
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			m := unescapeMount(f[1])
			if m == s.Dir || strings.HasPrefix(m, s.Dir+"/") {
				mounts = append(mounts, m)
			}
		}
		if len(mounts) == 0 {
			return
		}
		sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
		for _, m := range mounts {
			if err := syscall.Unmount(m, 0); err != nil {
				_ = syscall.Unmount(m, syscall.MNT_DETACH)
			}
		}
	}
}

// unescapeMount undoes /proc/mounts' octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// RemovePodFiles removes what the kubelet and the CNI library keep outside
// a sandbox's directory for the pods (UIDs) and containers (IDs) given:
// /var/log/pods/<ns>_<pod>_<uid>, the /var/log/containers links into them,
// and the /var/lib/cni/results files of the containers.
func RemovePodFiles(uids, ids []string) {
	var removed []string
	for _, uid := range uids {
		if !plainID(uid) {
			continue
		}
		dirs, _ := filepath.Glob("/var/log/pods/*_" + uid)
		for _, d := range dirs {
			if os.RemoveAll(d) == nil {
				removed = append(removed, d)
			}
		}
	}
	links, _ := filepath.Glob("/var/log/containers/*.log")
	for _, l := range links {
		target, err := os.Readlink(l)
		if err != nil {
			continue
		}
		for _, d := range removed {
			if strings.HasPrefix(target, d+"/") {
				os.Remove(l)
			}
		}
	}
	for _, id := range ids {
		if !plainID(id) {
			continue
		}
		files, _ := filepath.Glob("/var/lib/cni/results/*-" + id + "-*")
		for _, f := range files {
			os.Remove(f)
		}
	}
}

// plainID guards the globs above: only plain IDs.
func plainID(s string) bool { return s != "" && !strings.ContainsAny(s, "/*?[") }

// ContainerIDs are the IDs of the containers a kedge run dir's shims run
// (their task directories in containerd's state dir).
func ContainerIDs(runDir string) []string {
	tasks, _ := filepath.Glob(filepath.Join(runDir, "containerd", "state", "io.containerd.runtime.v2.task", "*", "*"))
	var ids []string
	for _, t := range tasks {
		ids = append(ids, filepath.Base(t))
	}
	return ids
}
