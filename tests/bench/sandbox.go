package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
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

// The network every sandbox gets besides loopback: a veth pair with both
// ends inside it, so the node has an address and a default route that
// leads nowhere outside the namespace.
const (
	nodeIP   = "10.251.0.1"
	nodeName = "bench-node"
)

// sandbox is what one run of one system lives in: a network namespace, a
// temporary directory and a kubelet cgroup root, all named after this
// process and the run so that nothing else on the host is touched.
type sandbox struct {
	name       string // netns and cgroup name: kedge-bench-<pid>-<run>
	dir        string
	netnsPath  string
	cgroupDirs []string
	// extra are more namespaces of the sandbox (the HA servers').
	extra []string
}

// childSpec is what the parent tells the child, through <dir>/spec.json.
type childSpec struct {
	System      string   `json:"system"`
	Run         int      `json:"run"`
	Dir         string   `json:"dir"`
	CgroupRoot  string   `json:"cgroupRoot"`
	Groups      []string `json:"groups"`
	Kedge       string   `json:"kedge"`
	BaselineDir string   `json:"baselineDir"`
	ImagesDir   string   `json:"imagesDir"`
	Kubectl     string   `json:"kubectl"`
	// Variant is the add-on kept on in an add-ons run ("none": all off).
	Variant string `json:"variant,omitempty"`
	// Sandbox is the sandbox's name (its network namespace).
	Sandbox string `json:"sandbox"`
	// AddonsArchive is put in kedge's images dir (Traefik).
	AddonsArchive string `json:"addonsArchive,omitempty"`
}

var sandboxSeq int

func newSandbox(workDir string) (*sandbox, error) {
	sandboxSeq++
	s := &sandbox{name: fmt.Sprintf("kedge-bench-%d-%d", os.Getpid(), sandboxSeq)}
	s.netnsPath = "/run/netns/" + s.name
	dir, err := os.MkdirTemp(workDir, s.name+"-")
	if err != nil {
		return nil, err
	}
	s.dir = dir
	steps := [][]string{
		{"netns", "add", s.name},
		{"-n", s.name, "link", "set", "lo", "up"},
		{"-n", s.name, "link", "add", "bench0", "type", "veth", "peer", "name", "bench1"},
		{"-n", s.name, "addr", "add", nodeIP + "/24", "dev", "bench0"},
		{"-n", s.name, "link", "set", "bench0", "up"},
		{"-n", s.name, "link", "set", "bench1", "up"},
		{"-n", s.name, "route", "add", "default", "dev", "bench0"},
	}
	for _, st := range steps {
		if out, err := exec.Command("ip", st...).CombinedOutput(); err != nil {
			s.cleanup(false)
			return nil, fmt.Errorf("ip %s: %v: %s", strings.Join(st, " "), err, out)
		}
	}
	// /run is a tmpfs on Debian and Raspberry Pi OS, so what a system
	// keeps in its run dir (sockets, containerd's state, kedge's Events
	// and Leases) reaches no disk there; nor does it here, where the
	// idle writes are counted.
	run := filepath.Join(dir, "run")
	if err := os.Mkdir(run, 0o755); err != nil {
		s.cleanup(false)
		return nil, err
	}
	if err := syscall.Mount("tmpfs", run, "tmpfs", 0, "mode=0755,size=1g"); err != nil {
		s.cleanup(false)
		return nil, fmt.Errorf("a tmpfs on %s: %w", run, err)
	}
	// The kubelet wants its cgroup root to exist, in every v1 hierarchy.
	s.cgroupDirs = cgroup.Create(s.name)
	return s, nil
}

// runSandboxed runs one child in a fresh sandbox and removes the sandbox.
func runSandboxed(ctx context.Context, o options, sys string, runNo int, groups []string, variant string) (*runResult, error) {
	s, err := newSandbox(o.workDir)
	if err != nil {
		return nil, err
	}
	defer s.cleanup(o.keep)
	if sys == systemKedgeHA {
		if err := s.addHANetwork(); err != nil {
			return nil, err
		}
	}
	spec := childSpec{System: sys, Run: runNo, Dir: s.dir, CgroupRoot: "/" + s.name, Groups: groups,
		Kedge: o.kedge, BaselineDir: o.baselineDir, ImagesDir: o.imagesDir, Kubectl: o.kubectl,
		Variant: variant, AddonsArchive: o.addonsArchive, Sandbox: s.name}
	data, _ := json.Marshal(spec)
	specFile := filepath.Join(s.dir, "spec.json")
	if err := os.WriteFile(specFile, data, 0o600); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logFile := filepath.Join(s.dir, "child.log")
	log, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	// nsenter, not ip netns exec: the latter remounts /sys, hiding the
	// host's cgroups from the kubelet.
	cmd := exec.Command("nsenter", "--net="+s.netnsPath, "--", self, "child", specFile)
	// The child's progress goes to the terminal too; its failure report
	// (component log tails) only to the file, shown below.
	cmd.Stdout, cmd.Stderr = log, io.MultiWriter(log, progressWriter{})
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		// Let the child stop its system, then the cleanup kills the rest.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err = <-done:
		case <-time.After(90 * time.Second):
			_ = cmd.Process.Kill()
			err = <-done
		}
		if err == nil {
			err = ctx.Err()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%v; child log %s ends:\n%s", err, logFile, tail(logFile, 40))
	}
	var r runResult
	data, err = os.ReadFile(filepath.Join(s.dir, "result.json"))
	if err == nil {
		err = json.Unmarshal(data, &r)
	}
	if err != nil {
		return nil, fmt.Errorf("result: %v; child log:\n%s", err, tail(logFile, 40))
	}
	return &r, nil
}

// cleanup kills every process of the sandbox (those in its network
// namespace or kubelet cgroup, and their descendants), unmounts what they
// left under its directory, removes the cgroups, the namespace, the pod
// log directories and CNI cache files of its pods, then the directory.
func (s *sandbox) cleanup(keep bool) {
	for i := 0; i < 20; i++ {
		pids := s.processes()
		if len(pids) == 0 {
			break
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if pids := s.processes(); len(pids) > 0 {
		logf("cleanup %s: processes still alive: %v", s.name, pids)
	}
	s.unmountAll()
	s.removePodFiles()
	for _, d := range cgroup.Remove(s.cgroupDirs, 15*time.Second) {
		logf("cleanup: cgroup %s could not be removed", d)
	}
	for _, ns := range append([]string{s.name}, s.extra...) {
		if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
			logf("cleanup %s: ip netns delete: %v: %s", ns, err, out)
		}
	}
	if keep {
		logf("kept %s", s.dir)
		return
	}
	if err := os.RemoveAll(s.dir); err != nil {
		logf("cleanup %s: %v", s.dir, err)
	}
}

// processes are the PIDs in the sandbox's network namespace or cgroups,
// with all their descendants.
func (s *sandbox) processes() []int {
	var roots []int
	want := map[string]bool{}
	for _, ns := range append([]string{s.name}, s.extra...) {
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
	for _, d := range s.cgroupDirs {
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
// first (kubelet volumes, overlay rootfs, pod network namespaces, shm).
func (s *sandbox) unmountAll() {
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
			if m == s.dir || strings.HasPrefix(m, s.dir+"/") {
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

// removePodFiles removes what the kubelet and the CNI library keep outside
// the sandbox directory: /var/log/pods/<ns>_<pod>_<uid>, the
// /var/log/containers links into them, and /var/lib/cni/results files of
// the sandbox's containers. The child lists the pod UIDs and container
// IDs in the sandbox directory before it stops.
func (s *sandbox) removePodFiles() {
	uids := readLines(filepath.Join(s.dir, "pod-uids.txt"))
	ids := readLines(filepath.Join(s.dir, "container-ids.txt"))
	if len(uids) == 0 && len(ids) == 0 {
		return
	}
	var removed []string
	for _, uid := range uids {
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
		files, _ := filepath.Glob("/var/lib/cni/results/*-" + id + "-*")
		for _, f := range files {
			os.Remove(f)
		}
	}
}

func readLines(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		// Guard the globs above: only plain IDs.
		if l = strings.TrimSpace(l); l != "" && !strings.ContainsAny(l, "/*?[") {
			out = append(out, l)
		}
	}
	return out
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// progressWriter passes the child's "bench:" progress lines to stderr.
type progressWriter struct{}

func (progressWriter) Write(p []byte) (int, error) {
	for _, l := range strings.SplitAfter(string(p), "\n") {
		if strings.Contains(l, " bench: ") {
			os.Stderr.WriteString(l)
		}
	}
	return len(p), nil
}
