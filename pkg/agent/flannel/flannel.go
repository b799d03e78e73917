// Package flannel runs flannel in-process with its Kubernetes subnet
// manager (the node's pod CIDR from the controller manager, flannel's
// annotations on the Node) and the VXLAN or host-gw backend, so pods on
// different nodes reach each other. It writes subnet.env; the CNI config is
// kedge's own (pkg/agent/cni), rendered from that lease.
package flannel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/flannel-io/flannel/pkg/backend"
	"github.com/flannel-io/flannel/pkg/ip"
	"github.com/flannel-io/flannel/pkg/ipmatch"
	"github.com/flannel-io/flannel/pkg/subnet/kube"
	"github.com/flannel-io/flannel/pkg/trafficmngr/iptables"

	"github.com/kedge-dev/kedge/pkg/component"
	"github.com/kedge-dev/kedge/pkg/config"

	// Backends register themselves at init.
	_ "github.com/flannel-io/flannel/pkg/backend/hostgw"
	_ "github.com/flannel-io/flannel/pkg/backend/vxlan"
	_ "github.com/flannel-io/flannel/pkg/backend/wireguard"
)

// backendConfig is flannel's Backend section for a --flannel-backend.
// wireguard-native is flannel's in-kernel WireGuard backend: each node's
// key pair is made on first start, the public key published in the Node's
// flannel annotations, and traffic to each peer node sent encrypted on
// UDP 51820 (51821 for IPv6).
func backendConfig(name string) map[string]any {
	if name == "wireguard-native" {
		return map[string]any{"Type": "wireguard", "Mode": "separate", "PersistentKeepaliveInterval": 25}
	}
	return map[string]any{"Type": name}
}

// Flannel is the flannel component.
type Flannel struct {
	Kubeconfig string
	NodeName   string
	// ClusterCIDR is --cluster-cidr: one CIDR, or an IPv4 and an IPv6 one.
	ClusterCIDR string
	// IPv6Masq masquerades IPv6 pod traffic leaving the cluster network
	// (--flannel-ipv6-masq; IPv4 is always masqueraded).
	IPv6Masq bool
	Backend  string
	// Iface is the interface flannel sends on; empty: the default route's.
	Iface string
	// Dir holds net-conf.json and subnet.env.
	Dir string
	// KeyFile holds the node's WireGuard private key (wireguard-native).
	KeyFile string
	Log     *slog.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup
	ready  chan struct{}
	mu     sync.Mutex
	err    error // fatal once ready is closed, else why it is not ready yet
}

func (f *Flannel) setWaiting(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// SubnetFile is where flannel writes its lease (subnet.env).
func (f *Flannel) SubnetFile() string { return filepath.Join(f.Dir, "subnet.env") }

func (f *Flannel) Name() string { return "flannel" }

func (f *Flannel) Start(ctx context.Context) error {
	if err := os.MkdirAll(f.Dir, 0o755); err != nil {
		return err
	}
	netConf := filepath.Join(f.Dir, "net-conf.json")
	// flannel turns IPv4 on unless told otherwise (IPv6-only clusters).
	nc := map[string]any{"Backend": backendConfig(f.Backend), "EnableIPv4": false}
	cidrs, err := config.ParseCIDRs(f.ClusterCIDR)
	if err != nil {
		return fmt.Errorf("--cluster-cidr: %w", err)
	}
	for _, c := range cidrs {
		if c.Addr().Is4() {
			nc["EnableIPv4"], nc["Network"] = true, c.String()
		} else {
			nc["EnableIPv6"], nc["IPv6Network"] = true, c.String()
		}
	}
	conf, _ := json.Marshal(nc)
	if err := os.WriteFile(netConf, conf, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", netConf, err)
	}
	// flannel's Kubernetes subnet manager learns its node from NODE_NAME;
	// the WireGuard backend keeps the node's private key where
	// WIREGUARD_KEY_FILE says (KeyFile: in the data dir, so it survives a
	// reboot and the peers' configuration stays valid).
	os.Setenv("NODE_NAME", f.NodeName)
	if f.KeyFile != "" {
		if err := os.MkdirAll(filepath.Dir(f.KeyFile), 0o700); err != nil {
			return err
		}
		os.Setenv("WIREGUARD_KEY_FILE", f.KeyFile)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	f.cancel, f.ready = cancel, make(chan struct{})
	go func() {
		if err := f.run(runCtx); err != nil && runCtx.Err() == nil {
			f.setWaiting(err)
			close(f.ready)
			component.Fail(ctx, err)
		}
	}()
	return nil
}

func (f *Flannel) run(ctx context.Context) error {
	sm, err := kube.NewSubnetManager(ctx, "", f.Kubeconfig, "flannel.alpha.coreos.com", filepath.Join(f.Dir, "net-conf.json"), false)
	if err != nil {
		return fmt.Errorf("flannel subnet manager: %w", err)
	}
	config, err := sm.GetNetworkConfig(ctx)
	if err != nil {
		return fmt.Errorf("flannel network config: %w", err)
	}
	stack := 0 // flannel's ipmatch: 0 IPv4, 1 IPv6, 2 dual-stack
	switch {
	case config.EnableIPv4 && config.EnableIPv6:
		stack = 2
	case config.EnableIPv6:
		stack = 1
	}
	extIface, err := ipmatch.LookupExtIface(f.Iface, "", "", stack, ipmatch.PublicIPOpts{})
	if err != nil {
		return fmt.Errorf("flannel interface (--flannel-iface %q): %w", f.Iface, err)
	}
	be, err := backend.NewManager(ctx, sm, extIface).GetBackend(config.BackendType)
	if err != nil {
		return fmt.Errorf("flannel backend %q: %w", config.BackendType, err)
	}
	// The lease is the node's pod CIDR, which the controller manager
	// assigns shortly after the node registers: retry until it is there,
	// often at first (it is on the way to node Ready), then every 2 s.
	var bn backend.Network
	for wait := 100 * time.Millisecond; ; wait = min(wait+100*time.Millisecond, 2*time.Second) {
		bn, err = be.RegisterNetwork(ctx, &f.wg, config)
		if err == nil {
			break
		}
		f.setWaiting(fmt.Errorf("flannel network: %w", err))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	tm := &iptables.IPTablesManager{}
	if err := tm.Init(ctx); err != nil {
		return fmt.Errorf("flannel iptables: %w", err)
	}
	// Masquerade traffic leaving the cluster network, but not between pods;
	// IPv6 only when asked, since IPv6 pod addresses are often routable.
	masq6 := ip.IP6Net{}
	if f.IPv6Masq {
		masq6 = config.IPv6Network
	}
	// No previous network (flannel compares them, and an IPv6 one must
	// hold an address, zero, to compare).
	none6 := ip.IP6Net{IP: (*ip.IP6)(big.NewInt(0))}
	if err := tm.SetupAndEnsureMasqRules(ctx, config.Network, ip.IP4Net{}, ip.IP4Net{}, masq6, none6, none6, bn.Lease(), 60, false); err != nil {
		return fmt.Errorf("flannel masquerade rules: %w", err)
	}
	tm.SetupAndEnsureForwardRules(ctx, config.Network, config.IPv6Network, 60)
	if err := sm.HandleSubnetFile(f.SubnetFile(), config, true, bn.Lease().Subnet, bn.Lease().IPv6Subnet, bn.MTU()); err != nil {
		return fmt.Errorf("flannel subnet file: %w", err)
	}
	f.setWaiting(nil)
	f.Log.Info("flannel running", "backend", config.BackendType, "subnet", bn.Lease().Subnet.String(), "ipv6Subnet", bn.Lease().IPv6Subnet.String(), "iface", extIface.Iface.Name, "mtu", bn.MTU())
	close(f.ready)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		bn.Run(ctx)
	}()
	return nil
}

// Ready once the lease is written to subnet.env.
func (f *Flannel) Ready(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.ready:
		return f.err
	default:
		if f.err != nil {
			return f.err
		}
		return errors.New("flannel has no lease yet")
	}
}

// Stop leaves the VXLAN device and routes in place for running pods.
func (f *Flannel) Stop() error {
	if f.cancel == nil {
		return nil
	}
	f.cancel()
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	return nil
}
