// Package cni writes the node's CNI configuration once the controller
// manager has assigned the node its pod CIDR: a bridge with host-local IPAM
// on that CIDR, plus portmap (hostPort) and bandwidth. Until it is written
// the runtime reports NetworkReady=false and the node stays NotReady.
package cni

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// FileName is the conflist kedge writes.
const FileName = "10-kedge.conflist"

// Writer is the CNI config component.
type Writer struct {
	Client   kubernetes.Interface
	NodeName string
	ConfDir  string
	// IPAMDir keeps host-local's allocations (in the data dir, so pod IPs
	// survive a reboot of the runtime dir).
	IPAMDir string
	// Bridge is the name of the node's pod bridge.
	Bridge string
	// SubnetFile, if set, is flannel's subnet.env: the config waits for it
	// and takes its MTU; flannel then masquerades, not the bridge.
	SubnetFile string
	// Families are the IP families of this node's --cluster-cidr (4, 6):
	// a pod CIDR of another family means the node was started with
	// another --cluster-cidr than the server's.
	Families []int
	Log      *slog.Logger

	written string
}

func (w *Writer) Name() string { return "cni" }

func (w *Writer) Start(context.Context) error { return os.MkdirAll(w.ConfDir, 0o755) }

// Ready writes the conflist once the node has a pod CIDR.
func (w *Writer) Ready(ctx context.Context) error {
	if w.written != "" {
		return nil
	}
	node, err := w.Client.CoreV1().Nodes().Get(ctx, w.NodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get node %s: %w", w.NodeName, err)
	}
	cidrs := node.Spec.PodCIDRs
	if len(cidrs) == 0 && node.Spec.PodCIDR != "" {
		cidrs = []string{node.Spec.PodCIDR}
	}
	if len(cidrs) == 0 {
		return fmt.Errorf("node %s has no pod CIDR yet (assigned by the controller manager's node IPAM)", w.NodeName)
	}
	for _, c := range cidrs {
		family := 4
		if isIPv6(c) {
			family = 6
		}
		if len(w.Families) > 0 && !slices.Contains(w.Families, family) {
			return fmt.Errorf("the cluster gave node %s the IPv%d pod CIDR %s, but this node's --cluster-cidr has no IPv%d range: start it with the server's --cluster-cidr", w.NodeName, family, c, family)
		}
	}
	ipMasq, mtu := true, 0
	if w.SubnetFile != "" {
		env, err := readSubnetEnv(w.SubnetFile)
		if err != nil {
			return fmt.Errorf("flannel's %s: %w", w.SubnetFile, err)
		}
		ipMasq = false
		mtu, _ = strconv.Atoi(env["FLANNEL_MTU"])
	}
	data, err := Render(w.Bridge, cidrs, w.IPAMDir, ipMasq, mtu)
	if err != nil {
		return err
	}
	path := filepath.Join(w.ConfDir, FileName)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	w.written = path
	w.Log.Info("pod network configured", "podCIDRs", cidrs, "conflist", path)
	return nil
}

func (w *Writer) Stop() error { return nil }

// readSubnetEnv reads flannel's KEY=value subnet file.
func readSubnetEnv(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			env[k] = v
		}
	}
	return env, nil
}

// Render returns the conflist for the given pod CIDRs. ipMasq makes the
// bridge masquerade traffic leaving the node's pod subnet (without flannel);
// mtu 0 keeps the interface default.
func Render(bridge string, podCIDRs []string, ipamDir string, ipMasq bool, mtu int) ([]byte, error) {
	var ranges [][]map[string]string
	routes := []map[string]string{}
	for _, c := range podCIDRs {
		ranges = append(ranges, []map[string]string{{"subnet": c}})
		dst := "0.0.0.0/0"
		if isIPv6(c) {
			dst = "::/0"
		}
		routes = append(routes, map[string]string{"dst": dst})
	}
	br := map[string]any{
		"type":        "bridge",
		"bridge":      bridge,
		"isGateway":   true,
		"ipMasq":      ipMasq,
		"hairpinMode": true,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  ranges,
			"routes":  routes,
			"dataDir": ipamDir,
		},
	}
	if mtu > 0 {
		br["mtu"] = mtu
	}
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "kedge",
		"plugins": []any{
			br,
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true},
			map[string]any{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

func isIPv6(cidr string) bool {
	for _, ch := range cidr {
		if ch == ':' {
			return true
		}
	}
	return false
}
