package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	isandbox "github.com/kedge-dev/kedge/tests/internal/sandbox"
)

const (
	systemKedge    = "kedge"
	systemBaseline = "baseline"
	// idleAfter is when, after exec, the idle footprint is taken.
	idleAfter  = 2 * time.Minute
	idleWindow = 60 * time.Second
)

// system is one thing under test, started inside the sandbox.
type system interface {
	// prepare does what precedes exec and is not timed (the baseline's
	// certificates and image preload, as kubeadm init does before it
	// starts anything).
	prepare(ctx context.Context) error
	start() error
	// kubeconfig of a cluster admin; may appear only after start.
	kubeconfig() string
	// afterReady runs once the API is ready (the baseline's add-ons).
	afterReady(ctx context.Context) error
	// processes are the control plane and agent processes measured idle.
	processes() []proc
	stop()
	logs() []string
}

// proc is a process of a system, by name.
type proc struct {
	name string
	pid  int
}

func runChild(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: bench child SPEC.json")
	}
	data, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	var spec childSpec
	if err := json.Unmarshal(data, &spec); err != nil {
		return err
	}
	var sys system
	switch spec.System {
	case systemKedge:
		sys = &kedgeSystem{spec: spec}
	case systemBaseline:
		sys = &baselineSystem{spec: spec}
	case systemKedgeHA:
		sys = &kedgeHASystem{spec: spec}
	case systemKedgeNet:
		sys = &kedgeNetSystem{spec: spec}
	default:
		return fmt.Errorf("unknown system %q", spec.System)
	}
	res := &runResult{System: spec.System, Run: spec.Run, Values: map[string]float64{}, Raw: map[string]any{}}
	err = measureRun(ctx, spec, sys, res)
	if err != nil {
		for _, l := range sys.logs() {
			fmt.Fprintf(os.Stderr, "--- %s (tail) ---\n%s\n", l, tail(l, 30))
		}
		return err
	}
	data, _ = json.MarshalIndent(res, "", "  ")
	return os.WriteFile(filepath.Join(spec.Dir, "result.json"), data, 0o644)
}

func measureRun(ctx context.Context, spec childSpec, sys system, res *runResult) error {
	if err := sys.prepare(ctx); err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	t0 := time.Now()
	if err := sys.start(); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	var client *kubernetes.Clientset
	defer func() {
		if client != nil {
			recordPods(client, spec.Dir)
		}
		recordContainers(spec.Dir)
		sys.stop()
	}()
	step := func(what string, timeout time.Duration, f func(context.Context) error) (float64, error) {
		c, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := f(c); err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		d := time.Since(t0).Seconds()
		logf("%s run %d: %s after %.2fs", spec.System, spec.Run, what, d)
		return d, nil
	}
	var err error
	if res.Values["start_readyz"], err = step("/readyz", 4*time.Minute, func(c context.Context) error {
		client, err = waitReadyz(c, sys.kubeconfig())
		return err
	}); err != nil {
		return err
	}
	if err := sys.afterReady(ctx); err != nil {
		return err
	}
	if spec.System == systemKedgeHA || controlPlaneOnly(spec.Variant) {
		// Control plane only: no node to wait for.
		return measureGroups(ctx, spec, sys, fastClient(sys.kubeconfig()), t0, res)
	}
	if res.Values["start_node"], err = step("node Ready", 4*time.Minute, func(c context.Context) error {
		return waitNodeReady(c, client)
	}); err != nil {
		return err
	}
	if spec.Variant != "" {
		// An add-ons run: its add-on may have no pod at all.
		return measureGroups(ctx, spec, sys, fastClient(sys.kubeconfig()), t0, res)
	}
	if res.Values["start_system"], err = step("kube-system pods Ready", 4*time.Minute, func(c context.Context) error {
		return waitSystemPods(c, client)
	}); err != nil {
		return err
	}
	if k, ok := sys.(*kedgeSystem); ok {
		if steps, err := k.trace(t0, res.Values); err == nil {
			res.Raw["start_trace"] = steps
		} else {
			res.Notes = append(res.Notes, "no start trace: "+err.Error())
		}
	}
	client = fastClient(sys.kubeconfig())
	return measureGroups(ctx, spec, sys, client, t0, res)
}

// measureGroups measures the run's figure groups in order.
func measureGroups(ctx context.Context, spec childSpec, sys system, client *kubernetes.Clientset, t0 time.Time, res *runResult) error {
	var err error
	for _, g := range spec.Groups {
		logf("%s run %d: %s", spec.System, spec.Run, g)
		switch g {
		case groupIdle:
			if err = measureIdle(ctx, sys, spec.Dir, t0, res); err == nil && spec.System == systemKedge {
				err = profileIdle(ctx, client, spec, res)
			}
		case groupAPI:
			err = profiled(ctx, client, spec, res, g, 5, func() error { return measureAPI(ctx, client, res) })
		case groupPods:
			err = measurePods(ctx, client, res)
		case groupBurst:
			err = profiled(ctx, client, spec, res, g, 60, func() error { return measureBurst(ctx, client, res) })
		case groupScale:
			err = profiled(ctx, client, spec, res, g, 120, func() error {
				return measureScale(ctx, spec, sys, client, sys.kubeconfig(), res)
			})
		case groupChurn:
			var files storeFiles
			if files, err = storeOf(sys); err == nil {
				err = measureChurn(ctx, client, files, spec.ChurnFor, res)
			}
		case groupAddons:
			err = measureAddonIdle(ctx, spec, sys, client, t0, res)
		case groupNet:
			err = measureThroughput(ctx, spec, res)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", g, err)
		}
	}
	return nil
}

// waitReadyz polls /readyz with the admin kubeconfig until it answers ok.
func waitReadyz(ctx context.Context, kubeconfig string) (*kubernetes.Clientset, error) {
	var last error
	for {
		if _, err := os.Stat(kubeconfig); err == nil {
			if cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig); err == nil {
				cfg.Timeout = 2 * time.Second
				if c, err := kubernetes.NewForConfig(cfg); err == nil {
					body, err := c.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
					if err == nil && strings.TrimSpace(string(body)) == "ok" {
						cfg.Timeout = 0
						return kubernetes.NewForConfigOrDie(cfg), nil
					}
					last = err
				}
			}
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return nil, fmt.Errorf("%w (last: %v)", err, last)
		}
	}
}

func waitNodeReady(ctx context.Context, c *kubernetes.Clientset) error {
	for {
		nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err == nil {
			for _, n := range nodes.Items {
				for _, cond := range n.Status.Conditions {
					if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
						return nil
					}
				}
			}
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// waitSystemPods waits until kube-system has pods and all are Ready.
func waitSystemPods(ctx context.Context, c *kubernetes.Clientset) error {
	for {
		pods, err := c.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
		if err == nil && len(pods.Items) > 0 && allReady(pods.Items) {
			return nil
		}
		if err := sleepCtx(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

func allReady(pods []corev1.Pod) bool {
	for _, p := range pods {
		ready := false
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		if !ready {
			return false
		}
	}
	return true
}

// fastClient is an admin client without client-side rate limits, so the
// API figures measure the server.
func fastClient(kubeconfig string) *kubernetes.Clientset {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		panic(err)
	}
	cfg.QPS, cfg.Burst = 1e6, 1e6
	return kubernetes.NewForConfigOrDie(cfg)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// recordPods writes every pod's UID for the parent's cleanup of
// /var/log/pods.
func recordPods(c *kubernetes.Clientset, dir string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pods, err := c.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	var b strings.Builder
	for _, p := range pods.Items {
		b.WriteString(string(p.UID) + "\n")
	}
	os.WriteFile(filepath.Join(dir, "pod-uids.txt"), []byte(b.String()), 0o644)
}

// recordContainers writes the IDs of the containers the shims run (their
// task directories in containerd's state dir) for the parent's cleanup of
// the CNI result cache.
func recordContainers(dir string) {
	ids := isandbox.ContainerIDs(filepath.Join(dir, "run"))
	more, _ := filepath.Glob(filepath.Join(dir, "*", "run")) // other nodes'
	for _, d := range more {
		ids = append(ids, isandbox.ContainerIDs(d)...)
	}
	os.WriteFile(filepath.Join(dir, "container-ids.txt"), []byte(strings.Join(ids, "\n")+"\n"), 0o644)
}

// startProc starts a process of a system in its own process group (so a
// Ctrl-C reaches only the bench, which stops it), logging to logFile.
func startProc(name, logFile string, env []string, bin string, args ...string) (*exec.Cmd, error) {
	if err := os.MkdirAll(filepath.Dir(logFile), 0o755); err != nil {
		return nil, err
	}
	log, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "=== %s %s\n", bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		cmd.Wait()
		log.Close()
	}()
	return cmd, nil
}

// stopProcs sends SIGTERM to every process, then SIGKILL to those still
// running after timeout.
func stopProcs(timeout time.Duration, cmds ...*exec.Cmd) {
	for _, c := range cmds {
		if c != nil && c.Process != nil {
			c.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(timeout)
	for _, c := range cmds {
		if c == nil || c.Process == nil {
			continue
		}
		for alive(c.Process.Pid) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		c.Process.Kill()
	}
}

// alive reports whether pid runs (a zombie counts as gone).
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && len(s) > i+2 && s[i+2] != 'Z'
}

// cleanEnv is the environment without KEDGE_*, KUBECONFIG and
// NOTIFY_SOCKET, so the caller's settings cannot leak into a system.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, "KEDGE_") || strings.HasPrefix(e, "KUBECONFIG=") || strings.HasPrefix(e, "NOTIFY_SOCKET=") {
			continue
		}
		env = append(env, e)
	}
	return append(env, extra...)
}
