// Package kubeproxy runs the upstream kube-proxy in-process (iptables mode
// by default, nftables selectable with --kube-proxy-arg proxy-mode=nftables)
// so Services reach their endpoints, and sets the host sysctls it needs.
package kubeproxy

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	proxyapp "k8s.io/kubernetes/cmd/kube-proxy/app"

	"github.com/kedge-dev/kedge/pkg/component"
	"github.com/kedge-dev/kedge/pkg/controlplane"
)

// HealthzAddress is where kube-proxy serves its health endpoint.
const HealthzAddress = "127.0.0.1:10256"

// Proxy is the kube-proxy component.
type Proxy struct {
	Args controlplane.Args
	Log  *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}
}

// DefaultArgs are kedge's kube-proxy flags, before the user's
// --kube-proxy-arg.
func DefaultArgs(kubeconfig, nodeName, clusterCIDR string) controlplane.Args {
	return controlplane.Args{
		"kubeconfig":           kubeconfig,
		"hostname-override":    nodeName,
		"cluster-cidr":         clusterCIDR,
		"proxy-mode":           "iptables",
		"healthz-bind-address": HealthzAddress,
		"metrics-bind-address": "127.0.0.1:10249",
		// Leave the host's conntrack sysctls alone: small and
		// containerised hosts often may not change them.
		"conntrack-max-per-core":            "0",
		"conntrack-tcp-timeout-established": "0s",
		"conntrack-tcp-timeout-close-wait":  "0s",
	}
}

func (p *Proxy) Name() string { return "kube-proxy" }

func (p *Proxy) Start(ctx context.Context) error {
	ensureSysctls(p.Log)
	opts := proxyapp.NewOptions()
	fs := pflag.NewFlagSet("kube-proxy", pflag.ContinueOnError)
	opts.AddFlags(fs)
	fs.SetOutput(nopWriter{})
	if err := fs.Parse(p.Args.List()); err != nil {
		return fmt.Errorf("kube-proxy flags (set with --kube-proxy-arg): %w", err)
	}
	if err := opts.Complete(fs); err != nil {
		return fmt.Errorf("kube-proxy (set with --kube-proxy-arg): %w", err)
	}
	if err := opts.Validate(); err != nil {
		return fmt.Errorf("kube-proxy (set with --kube-proxy-arg): %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	p.cancel, p.done = cancel, make(chan struct{})
	go func() {
		defer close(p.done)
		err := opts.Run(runCtx)
		if runCtx.Err() == nil {
			component.Fail(ctx, fmt.Errorf("kube-proxy exited: %w", err))
		}
	}()
	return nil
}

// Ready is kube-proxy's own health check: 200 once its rules are synced.
func (p *Proxy) Ready(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+HealthzAddress+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("kube-proxy healthz: %s", resp.Status)
	}
	return nil
}

func (p *Proxy) Stop() error {
	if p.cancel != nil {
		p.cancel()
	}
	// kube-proxy's rules stay in place for running pods, as upstream.
	return nil
}

type nopWriter struct{}

func (nopWriter) Write(b []byte) (int, error) { return len(b), nil }

// ensureSysctls turns on forwarding and bridge netfilter, which Services on
// a bridged pod network need.
func ensureSysctls(log *slog.Logger) {
	for _, path := range []string{
		"/proc/sys/net/ipv4/ip_forward",
		"/proc/sys/net/bridge/bridge-nf-call-iptables",
		"/proc/sys/net/bridge/bridge-nf-call-ip6tables",
	} {
		cur, err := os.ReadFile(path)
		if err != nil {
			log.Warn("cannot read sysctl; Services may not work (is the br_netfilter module loaded?)", "path", path, "err", err)
			continue
		}
		if strings.TrimSpace(string(cur)) == "1" {
			continue
		}
		if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
			log.Warn("cannot set sysctl", "path", path, "err", err)
		}
	}
}
