package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	isandbox "github.com/kedge-dev/kedge/tests/internal/sandbox"
)

// systemKedgeHA is three kedge servers on embedded etcd, control plane
// only, each in a network namespace of its own (the sandbox's and two
// more) on a bridge inside the sandbox: the API figures of a highly
// available cluster, beside one server on SQLite.
const systemKedgeHA = "kedge-ha"

// lanIP is the address of machine i (from 1) on a sandbox's LAN.
func lanIP(i int) string { return fmt.Sprintf("10.251.1.%d", i) }

// lanNetns names the extra namespaces of a sandbox (machines 2 and up).
func lanNetns(sandbox string, i int) string { return fmt.Sprintf("%s-s%d", sandbox, i) }

// addLAN builds a LAN of machines: a bridge in the sandbox's namespace
// (machine 1 on it), and machines 2..n in namespaces of their own, joined
// to it by veth pairs (eth0 inside).
func (s *sandbox) addLAN(n int) error {
	steps := [][]string{
		{"-n", s.Name, "link", "add", "benchbr", "type", "bridge"},
		{"-n", s.Name, "addr", "add", lanIP(1) + "/24", "dev", "benchbr"},
		{"-n", s.Name, "link", "set", "benchbr", "up"},
	}
	for i := 2; i <= n; i++ {
		ns := lanNetns(s.Name, i)
		if err := s.AddNetns(ns); err != nil {
			return err
		}
		steps = append(steps,
			[]string{"-n", s.Name, "link", "add", "hav" + strconv.Itoa(i), "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"-n", s.Name, "link", "set", "hav" + strconv.Itoa(i), "master", "benchbr", "up"},
			[]string{"-n", ns, "addr", "add", lanIP(i) + "/24", "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
		)
	}
	for _, st := range steps {
		if err := isandbox.IP(st...); err != nil {
			return err
		}
	}
	return nil
}

// kedgeHASystem runs the three servers.
type kedgeHASystem struct {
	spec childSpec
	cmds []*exec.Cmd
}

func (k *kedgeHASystem) dir(i int) string { return filepath.Join(k.spec.Dir, "s"+strconv.Itoa(i)) }

func (k *kedgeHASystem) kubeconfig() string { return filepath.Join(k.dir(1), "kubeconfig.yaml") }

func (k *kedgeHASystem) prepare(context.Context) error {
	for i := 1; i <= 3; i++ {
		if err := os.MkdirAll(k.dir(i), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(k.dir(i), "config.yaml"), nil, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (k *kedgeHASystem) args(i int, extra ...string) []string {
	d := k.dir(i)
	return append([]string{"server", "--config", filepath.Join(d, "config.yaml"), "--data-dir", filepath.Join(d, "data"),
		"--run-dir", filepath.Join(d, "run"), "--write-kubeconfig", filepath.Join(d, "kubeconfig.yaml"),
		"--node-name", "s" + strconv.Itoa(i), "--advertise-address", lanIP(i), "--disable-agent"}, extra...)
}

// start starts server 1; afterReady joins the others once it serves.
func (k *kedgeHASystem) start() error {
	cmd, err := startProc("kedge-s1", filepath.Join(k.dir(1), "kedge.log"), cleanEnv(), k.spec.Kedge, k.args(1, "--cluster-init", "--token", "bench-ha")...)
	k.cmds = append(k.cmds, cmd)
	return err
}

func (k *kedgeHASystem) afterReady(ctx context.Context) error {
	data, err := os.ReadFile(filepath.Join(k.dir(1), "data", "server", "token"))
	if err != nil {
		return err
	}
	token := strings.TrimSpace(string(data))
	for i := 2; i <= 3; i++ {
		args := append([]string{"--net=/run/netns/" + lanNetns(k.spec.Sandbox, i), k.spec.Kedge},
			k.args(i, "--server", "https://"+lanIP(1)+":6443", "--token", token)...)
		cmd, err := startProc("kedge-s"+strconv.Itoa(i), filepath.Join(k.dir(i), "kedge.log"), cleanEnv(), "nsenter", args...)
		if err != nil {
			return err
		}
		k.cmds = append(k.cmds, cmd)
		kc := filepath.Join(k.dir(i), "kubeconfig.yaml")
		deadline := time.Now().Add(4 * time.Minute)
		for {
			if _, err := os.Stat(kc); err == nil {
				// Joined once its etcd member serves the apiserver.
				out, err := exec.CommandContext(ctx, "nsenter", "--net=/run/netns/"+lanNetns(k.spec.Sandbox, i), k.spec.Kedge, "kubectl",
					"--kubeconfig", kc, "get", "--raw", "/readyz").CombinedOutput()
				if err == nil && strings.TrimSpace(string(out)) == "ok" {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("server %d did not join within 4m", i)
			}
			if err := sleepCtx(ctx, time.Second); err != nil {
				return err
			}
		}
		logf("%s: server %d joined", systemKedgeHA, i)
	}
	return nil
}

func (k *kedgeHASystem) processes() []proc {
	var ps []proc
	for i, c := range k.cmds {
		ps = append(ps, proc{"kedge-s" + strconv.Itoa(i+1), c.Process.Pid})
	}
	return ps
}

func (k *kedgeHASystem) stop() { stopProcs(90*time.Second, k.cmds...) }

func (k *kedgeHASystem) logs() []string {
	return []string{filepath.Join(k.dir(1), "kedge.log"), filepath.Join(k.dir(2), "kedge.log"), filepath.Join(k.dir(3), "kedge.log")}
}

// measureHA runs the HA cluster once and records its API figures beside
// the single server's.
func measureHA(ctx context.Context, o options, res *results) error {
	logf("%s: 3 servers on embedded etcd: api", systemKedgeHA)
	r, err := runSandboxed(ctx, o, systemKedgeHA, 1, []string{groupAPI}, "")
	if err != nil {
		return fmt.Errorf("%s: %w", systemKedgeHA, err)
	}
	res.Runs = append(res.Runs, r)
	for _, k := range []string{"api_create_p50", "api_create_p99"} {
		if v, ok := r.Values[k]; ok {
			res.record(systemKedge, "ha_"+k, v)
		}
	}
	return nil
}

func init() {
	figures = append(figures,
		figure{"ha_api_create_p50", "API: ConfigMap create p50, 3 servers on embedded etcd", "ms"},
		figure{"ha_api_create_p99", "API: ConfigMap create p99, 3 servers on embedded etcd", "ms"})
}
