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
	for _, p := range []struct{ name, path, param, value string }{
		{"cpu", "/debug/pprof/profile", "seconds", "30"},
		{"heap", "/debug/pprof/heap", "gc", "1"},
	} {
		data, err := c.CoreV1().RESTClient().Get().AbsPath(p.path).Param(p.param, p.value).
			Timeout(time.Minute).DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("%s profile: %w", p.name, err)
		}
		if err := saveProfile(spec, groupIdle, p.name, data, res); err != nil {
			return err
		}
	}
	return nil
}

// profiled runs a group's measuring, f, while the kedge process records a
// CPU profile of the first seconds of it, and saves the profile next to the
// JSON. Sampling a hundred times a second costs the process about 1 % of
// its CPU: the figures and the profile come from the same run. The
// baseline, several processes, is not profiled.
func profiled(ctx context.Context, c *kubernetes.Clientset, spec childSpec, res *runResult, group string, seconds int, f func() error) error {
	if spec.System != systemKedge {
		return f()
	}
	type profile struct {
		data []byte
		err  error
	}
	got := make(chan profile, 1)
	go func() {
		data, err := c.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", strconv.Itoa(seconds)).
			Timeout(time.Duration(seconds)*time.Second + time.Minute).DoRaw(ctx)
		got <- profile{data, err}
	}()
	if err := f(); err != nil {
		return err
	}
	p := <-got
	if p.err != nil {
		return fmt.Errorf("cpu profile: %w", p.err)
	}
	return saveProfile(spec, group, "cpu", p.data, res)
}

// saveProfile writes <system>-run<N>-<group>-<kind>.pprof next to the
// JSON and names it in the raw results, under profiles.
func saveProfile(spec childSpec, group, kind string, data []byte, res *runResult) error {
	file := filepath.Join(spec.ProfileDir, fmt.Sprintf("%s-run%d-%s-%s.pprof", spec.System, spec.Run, group, kind))
	if err := os.WriteFile(file, data, 0o644); err != nil {
		return err
	}
	saved, _ := res.Raw["profiles"].(map[string]string)
	if saved == nil {
		saved = map[string]string{}
		res.Raw["profiles"] = saved
	}
	saved[group+"-"+kind] = file
	return nil
}
