package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
)

// kedgeSystem is `kedge server` with its agent, as a user starts it, with
// every path in the sandbox.
type kedgeSystem struct {
	spec childSpec
	cmd  *exec.Cmd
}

func (k *kedgeSystem) dataDir() string { return filepath.Join(k.spec.Dir, "data") }
func (k *kedgeSystem) runDir() string  { return filepath.Join(k.spec.Dir, "run") }
func (k *kedgeSystem) logFile() string { return filepath.Join(k.spec.Dir, "kedge.log") }
func (k *kedgeSystem) kubeconfig() string {
	return filepath.Join(k.spec.Dir, "kubeconfig.yaml")
}

// prepare puts the test image in the air-gap directory, which kedge
// imports at start (its own pause and CoreDNS images it carries).
func (k *kedgeSystem) prepare(context.Context) error {
	if err := os.WriteFile(filepath.Join(k.spec.Dir, "config.yaml"), nil, 0o600); err != nil {
		return err
	}
	if k.spec.Variant == "ingress" {
		if k.spec.AddonsArchive == "" {
			return fmt.Errorf("the Traefik figure needs the add-on archive: pass -addons (scripts/bench builds it)")
		}
		if err := copyFile(k.spec.AddonsArchive, filepath.Join(k.dataDir(), "agent", "images", "kedge-addons.tar.zst")); err != nil {
			return err
		}
	}
	return copyFile(filepath.Join(k.spec.ImagesDir, "hello-v1.tar"), filepath.Join(k.dataDir(), "agent", "images", "hello-v1.tar"))
}

func (k *kedgeSystem) start() error {
	args := []string{"server",
		"--config", filepath.Join(k.spec.Dir, "config.yaml"),
		"--data-dir", k.dataDir(),
		"--run-dir", k.runDir(),
		"--write-kubeconfig", k.kubeconfig(),
		"--node-name", nodeName,
		"--node-ip", nodeIP,
		"--advertise-address", nodeIP,
		"--kubelet-arg", "cgroup-root=" + k.spec.CgroupRoot,
		"--kubelet-arg", "max-pods=250",
		// The apiserver's /debug/pprof profiles the whole process (it is
		// one): profileIdle reads it. Unused, it costs nothing.
		"--kube-apiserver-arg", "profiling=true"}
	switch k.spec.Variant {
	case "":
	case variantScale, variantChurn:
		args = append(args, "--disable-agent")
	default:
		args = append(args, addonArgs(k.spec.Variant)...)
	}
	var err error
	k.cmd, err = startProc("kedge", k.logFile(), cleanEnv(), k.spec.Kedge, args...)
	return err
}

func (k *kedgeSystem) afterReady(context.Context) error { return nil }

// trace is the start's milestones from kedge's log, with what the bench
// itself saw (values: the run's start_* figures so far).
func (k *kedgeSystem) trace(t0 time.Time, values map[string]float64) ([]traceStep, error) {
	steps, err := startTrace(k.logFile(), t0)
	if err != nil {
		return nil, err
	}
	for key, step := range map[string]string{"start_readyz": "/readyz answers (bench)", "start_node": "node Ready (bench)", "start_system": "kube-system pods Ready (bench)"} {
		if v, ok := values[key]; ok {
			steps = append(steps, traceStep{Step: step, At: v})
		}
	}
	sort.SliceStable(steps, func(i, j int) bool { return steps[i].At < steps[j].At })
	return steps, nil
}

// processes: kedge and the containerd it runs as a child.
func (k *kedgeSystem) processes() []proc {
	ps := []proc{{"kedge", k.cmd.Process.Pid}}
	if data, err := os.ReadFile(filepath.Join(k.runDir(), "containerd", "containerd.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil {
			ps = append(ps, proc{"containerd", pid})
		}
	}
	return ps
}

// stop stops kedge as a user does, by SIGTERM; the sandbox cleanup kills
// the pods' shims, as kedge-killall.sh would.
func (k *kedgeSystem) stop() { stopProcs(90*time.Second, k.cmd) }

func (k *kedgeSystem) logs() []string {
	return []string{k.logFile(), filepath.Join(k.dataDir(), "agent", "containerd", "containerd.log")}
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o644)
}

// profileIdle saves a 30-second CPU profile and a heap profile of the idle
// kedge process next to the JSON, taken after the idle window so they do
// not weigh on its figures, and names them in the raw results.
func profileIdle(ctx context.Context, c *kubernetes.Clientset, spec childSpec, res *runResult) error {
	saved := map[string]string{}
	for _, p := range []struct{ name, path, param, value string }{
		{"cpu", "/debug/pprof/profile", "seconds", "30"},
		{"heap", "/debug/pprof/heap", "gc", "1"},
	} {
		data, err := c.CoreV1().RESTClient().Get().AbsPath(p.path).Param(p.param, p.value).
			Timeout(time.Minute).DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("%s profile: %w", p.name, err)
		}
		file := filepath.Join(spec.ProfileDir, fmt.Sprintf("%s-run%d-idle-%s.pprof", spec.System, spec.Run, p.name))
		if err := os.WriteFile(file, data, 0o644); err != nil {
			return err
		}
		saved[p.name] = file
	}
	res.Raw["idle_profiles"] = saved
	return nil
}
