package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	isandbox "github.com/kedge-dev/kedge/tests/internal/sandbox"
)

// The network every sandbox gets besides loopback: a veth pair with both
// ends inside it, so the node has an address and a default route that
// leads nowhere outside the namespace.
const (
	nodeIP   = "10.251.0.1"
	nodeName = "bench-node"
)

// sandbox is what one run of one system lives in: a network namespace
// with the node's veth, a temporary directory (its run dir a tmpfs, where
// kedge's Events and Leases reach no disk, as on a real system, while the
// idle writes are counted) and a kubelet cgroup root, all named after this
// process and the run: kedge-bench-<pid>-<run>.
type sandbox struct {
	*isandbox.Sandbox
	netnsPath string
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
	// ProfileDir receives kedge's profiles of the idle group.
	ProfileDir string `json:"profileDir,omitempty"`
	// Kubemark, ScaleNodes and ScalePods are the scale group's.
	Kubemark   string `json:"kubemark,omitempty"`
	ScaleNodes int    `json:"scaleNodes,omitempty"`
	ScalePods  int    `json:"scalePods,omitempty"`
	// ChurnFor is how long the churn group runs.
	ChurnFor time.Duration `json:"churnFor,omitempty"`
}

// sandboxSeq numbers the sandboxes; the churns make two at once.
var sandboxSeq atomic.Int64

func newSandbox(workDir string) (*sandbox, error) {
	sb, err := isandbox.New(workDir, fmt.Sprintf("kedge-bench-%d-%d", os.Getpid(), sandboxSeq.Add(1)))
	if err != nil {
		return nil, err
	}
	s := &sandbox{Sandbox: sb, netnsPath: "/run/netns/" + sb.Name}
	steps := [][]string{
		{"-n", s.Name, "link", "add", "bench0", "type", "veth", "peer", "name", "bench1"},
		{"-n", s.Name, "addr", "add", nodeIP + "/24", "dev", "bench0"},
		{"-n", s.Name, "link", "set", "bench0", "up"},
		{"-n", s.Name, "link", "set", "bench1", "up"},
		{"-n", s.Name, "route", "add", "default", "dev", "bench0"},
	}
	for _, st := range steps {
		if err := isandbox.IP(st...); err != nil {
			s.cleanup(false)
			return nil, err
		}
	}
	return s, nil
}

// runSandboxed runs one child in a fresh sandbox and removes the sandbox.
func runSandboxed(ctx context.Context, o options, sys string, runNo int, groups []string, variant string) (*runResult, error) {
	s, err := newSandbox(o.workDir)
	if err != nil {
		return nil, err
	}
	defer s.cleanup(o.keep)
	switch sys {
	case systemKedgeHA:
		err = s.addLAN(3)
	case systemKedgeNet:
		err = s.addLAN(2)
	}
	if err != nil {
		return nil, err
	}
	spec := childSpec{System: sys, Run: runNo, Dir: s.Dir, CgroupRoot: "/" + s.Name, Groups: groups,
		Kedge: o.kedge, BaselineDir: o.baselineDir, ImagesDir: o.imagesDir, Kubectl: o.kubectl,
		Variant: variant, AddonsArchive: o.addonsArchive, Sandbox: s.Name, ChurnFor: o.churnFor,
		Kubemark: o.kubemark, ScaleNodes: o.scaleNodes, ScalePods: o.scalePods,
		ProfileDir: filepath.Dir(o.jsonOut)}
	data, _ := json.Marshal(spec)
	specFile := filepath.Join(s.Dir, "spec.json")
	if err := os.WriteFile(specFile, data, 0o600); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logFile := filepath.Join(s.Dir, "child.log")
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
	data, err = os.ReadFile(filepath.Join(s.Dir, "result.json"))
	if err == nil {
		err = json.Unmarshal(data, &r)
	}
	if err != nil {
		return nil, fmt.Errorf("result: %v; child log:\n%s", err, tail(logFile, 40))
	}
	return &r, nil
}

// cleanup removes the sandbox (see isandbox.Sandbox.Remove), then the
// pod log directories and CNI cache files of its pods, which the child
// listed in the sandbox directory before it stopped.
func (s *sandbox) cleanup(keep bool) {
	uids := readLines(filepath.Join(s.Dir, "pod-uids.txt"))
	ids := readLines(filepath.Join(s.Dir, "container-ids.txt"))
	s.Remove(keep, logf)
	isandbox.RemovePodFiles(uids, ids)
}

func readLines(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" {
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
