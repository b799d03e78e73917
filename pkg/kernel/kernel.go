// Package kernel checks that the running kernel has what a kedge node's
// containers and networking need (namespaces, cgroups, overlayfs, bridge,
// veth, VXLAN, netfilter), from the kernel's build configuration, before
// anything is written or started: a kernel that lacks one fails with the
// feature's name instead of a pod network that never comes up.
// kedge check-config prints the same report.
package kernel

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ConfigEnv names a kernel configuration file to check instead of the
// running kernel's (/proc/config.gz, /boot/config-<release>).
const ConfigEnv = "KEDGE_KERNEL_CONFIG"

// Feature is one thing kedge needs from the kernel: any one of its
// options (CONFIG_ names without the prefix) provides it.
type Feature struct {
	Name string
	For  string   // what needs it
	Any  []Option // one suffices
}

// Option is a kernel config option and the module that holds it when it
// is built as one.
type Option struct{ Config, Module string }

// Needed lists what a node with the given flannel backend needs, and
// with NetworkPolicy enforcement when networkPolicy is set.
func Needed(flannelBackend string, networkPolicy bool) []Feature {
	one := func(name, why, config, module string) Feature {
		return Feature{Name: name, For: why, Any: []Option{{config, module}}}
	}
	f := []Feature{
		one("network namespaces", "pods", "NET_NS", ""),
		one("PID namespaces", "pods", "PID_NS", ""),
		one("cgroups", "pods' resources", "CGROUPS", ""),
		one("overlay filesystem", "containerd's image snapshots", "OVERLAY_FS", "overlay"),
		one("bridge", "the pod network on a node", "BRIDGE", "bridge"),
		one("veth", "the pod network on a node", "VETH", "veth"),
		one("netfilter", "Services and the pod network's NAT", "NETFILTER", ""),
		one("connection tracking", "Services", "NF_CONNTRACK", "nf_conntrack"),
		one("NAT", "Services and pod egress", "NF_NAT", "nf_nat"),
		{Name: "iptables (legacy or nf_tables)", For: "kube-proxy and flannel", Any: []Option{{"IP_NF_IPTABLES", "ip_tables"}, {"NFT_COMPAT", "nft_compat"}}},
		{Name: "iptables MASQUERADE", For: "pod egress", Any: []Option{{"NETFILTER_XT_TARGET_MASQUERADE", "xt_MASQUERADE"}, {"IP_NF_TARGET_MASQUERADE", "ipt_MASQUERADE"}}},
		one("iptables conntrack match", "kube-proxy", "NETFILTER_XT_MATCH_CONNTRACK", "xt_conntrack"),
		one("iptables comment match", "kube-proxy", "NETFILTER_XT_MATCH_COMMENT", "xt_comment"),
		one("iptables mark", "kube-proxy", "NETFILTER_XT_MARK", "xt_mark"),
		one("iptables addrtype match", "kube-proxy", "NETFILTER_XT_MATCH_ADDRTYPE", "xt_addrtype"),
		one("iptables multiport match", "kube-proxy", "NETFILTER_XT_MATCH_MULTIPORT", "xt_multiport"),
		one("bridge netfilter", "Services between pods of one node", "BRIDGE_NETFILTER", "br_netfilter"),
	}
	if networkPolicy {
		f = append(f,
			one("netlink queue", "NetworkPolicy: the policy engine reads new connections from it", "NETFILTER_NETLINK_QUEUE", "nfnetlink_queue"),
			one("iptables NFQUEUE target", "NetworkPolicy", "NETFILTER_XT_TARGET_NFQUEUE", "xt_NFQUEUE"),
			one("iptables owner match", "NetworkPolicy: the host's own probes pass", "NETFILTER_XT_MATCH_OWNER", "xt_owner"),
			Feature{Name: "iptables mangle table", For: "NetworkPolicy", Any: []Option{{"IP_NF_MANGLE", "iptable_mangle"}, {"NFT_COMPAT", "nft_compat"}}},
		)
	}
	if flannelBackend == "wireguard-native" {
		f = append(f, one("WireGuard", "--flannel-backend wireguard-native: the encrypted pod network between nodes", "WIREGUARD", "wireguard"))
	}
	if flannelBackend == "vxlan" {
		f = append(f, one("VXLAN", "--flannel-backend vxlan: the pod network between nodes", "VXLAN", "vxlan"))
	}
	return f
}

// Status is what the check found for a feature.
type Status int

const (
	Present Status = iota
	Missing
	Unknown // no kernel configuration to read, and no sign of the module
)

func (s Status) String() string {
	return [...]string{"ok", "missing", "unknown"}[s]
}

// Result is one feature's outcome, with how it was found.
type Result struct {
	Feature
	Status Status
	How    string // "CONFIG_VXLAN=y", "module vxlan", ...
}

// Report is the outcome of a check.
type Report struct {
	Source  string // the kernel configuration read, or "" if none was found
	Results []Result
}

// Checker reads a kernel's configuration and modules. Its zero value
// checks the running kernel.
type Checker struct {
	// Config is the configuration file to read; default: $KEDGE_KERNEL_CONFIG,
	// else the running kernel's /proc/config.gz or /boot/config-<release>,
	// completed by its loaded and installed modules. A named file decides
	// alone (a module it lists counts as there).
	Config string
	// Root prefixes /sys/module and /lib/modules (tests).
	Root string
}

// Check checks features.
func (c Checker) Check(features []Feature) (Report, error) {
	release := kernelRelease()
	config, source, err := c.readConfig(release)
	if err != nil {
		return Report{}, err
	}
	return c.evaluate(config, source, c.explicit(), release, features), nil
}

func (c Checker) evaluate(config map[string]string, source string, explicit bool, release string, features []Feature) Report {
	r := Report{Source: source}
	for _, f := range features {
		if explicit {
			r.Results = append(r.Results, checkConfigOnly(f, config))
			continue
		}
		r.Results = append(r.Results, c.check(f, config, source != "", release))
	}
	return r
}

// explicit: a configuration file was named, which may describe another
// kernel than the running one: it alone decides.
func (c Checker) explicit() bool { return c.Config != "" || os.Getenv(ConfigEnv) != "" }

func checkConfigOnly(f Feature, config map[string]string) Result {
	res := Result{Feature: f, Status: Missing}
	for _, o := range f.Any {
		switch v := config[o.Config]; v {
		case "y", "m":
			return Result{Feature: f, Status: Present, How: "CONFIG_" + o.Config + "=" + v}
		}
		if res.How == "" {
			res.How = "CONFIG_" + o.Config + " is not set"
		}
	}
	return res
}

func (c Checker) check(f Feature, config map[string]string, haveConfig bool, release string) Result {
	res := Result{Feature: f, Status: Missing}
	for _, o := range f.Any {
		switch v := config[o.Config]; {
		case v == "y":
			return Result{Feature: f, Status: Present, How: "CONFIG_" + o.Config + "=y"}
		case o.Module != "" && c.loaded(o.Module):
			return Result{Feature: f, Status: Present, How: "module " + o.Module + " loaded"}
		case v == "m" && c.installed(o.Module, release):
			return Result{Feature: f, Status: Present, How: "module " + o.Module}
		case v == "m":
			res.How = "CONFIG_" + o.Config + "=m, but module " + o.Module + " is not installed"
		case !haveConfig:
			res.Status, res.How = Unknown, "no kernel configuration to read"
		default:
			if res.How == "" {
				res.How = "CONFIG_" + o.Config + " is not set"
			}
		}
	}
	return res
}

// Failed lists the features found missing.
func (r Report) Failed() []Result {
	var out []Result
	for _, res := range r.Results {
		if res.Status == Missing {
			out = append(out, res)
		}
	}
	return out
}

// Err is an error naming every missing feature, or nil.
func (r Report) Err() error {
	failed := r.Failed()
	if len(failed) == 0 {
		return nil
	}
	names := make([]string, len(failed))
	for i, f := range failed {
		names[i] = fmt.Sprintf("%s (for %s: %s)", f.Name, f.For, f.How)
	}
	return fmt.Errorf("this kernel lacks what a kedge node needs: %s; run kedge check-config for the whole report", strings.Join(names, "; "))
}

// Write prints the report as a table.
func (r Report) Write(w io.Writer) {
	src := r.Source
	if src == "" {
		src = "none found (set " + ConfigEnv + " to the kernel's config file)"
	}
	fmt.Fprintf(w, "kernel %s, configuration: %s\n", kernelRelease(), src)
	for _, res := range r.Results {
		fmt.Fprintf(w, "%-8s %-32s %s (%s)\n", res.Status, res.Name, res.How, res.For)
	}
}

// Require checks the running kernel for features and returns the error
// of anything missing; features it cannot tell about pass.
func Require(features []Feature) error {
	r, err := Checker{}.Check(features)
	if err != nil {
		return err
	}
	return r.Err()
}

func (c Checker) readConfig(release string) (map[string]string, string, error) {
	candidates := []string{"/proc/config.gz", "/boot/config-" + release, filepath.Join(c.Root, "lib/modules", release, "config")}
	explicit := c.Config
	if explicit == "" {
		explicit = os.Getenv(ConfigEnv)
	}
	if explicit != "" {
		candidates = []string{explicit}
	}
	for _, p := range candidates {
		config, err := c.readConfigFile(p)
		if errors.Is(err, os.ErrNotExist) && explicit == "" {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("kernel configuration: %w", err)
		}
		return config, p, nil
	}
	return nil, "", nil
}

// readConfigFile reads a kernel configuration, gzipped or not.
func (Checker) readConfigFile(p string) (map[string]string, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	if bytes.HasPrefix(data, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if data, err = io.ReadAll(zr); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	return parseConfig(data), nil
}

// parseConfig reads CONFIG_X=v lines; "# CONFIG_X is not set" is absence.
func parseConfig(data []byte) map[string]string {
	m := map[string]string{}
	s := bufio.NewScanner(bytes.NewReader(data))
	for s.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(s.Text()), "=")
		if ok && strings.HasPrefix(k, "CONFIG_") {
			m[strings.TrimPrefix(k, "CONFIG_")] = strings.Trim(v, `"`)
		}
	}
	return m
}

func (c Checker) loaded(module string) bool {
	_, err := os.Stat(filepath.Join(c.Root, "/sys/module", module))
	return err == nil
}

// installed reports whether modules.dep of release lists module (its
// file name uses - or _ alike).
func (c Checker) installed(module, release string) bool {
	data, err := os.ReadFile(filepath.Join(c.Root, "lib/modules", release, "modules.dep"))
	if err != nil {
		return false
	}
	norm := func(s string) string { return strings.ReplaceAll(s, "-", "_") }
	want := norm(module) + ".ko"
	for line := range strings.SplitSeq(string(data), "\n") {
		path, _, _ := strings.Cut(line, ":")
		base := norm(filepath.Base(path))
		if base == want || strings.HasPrefix(base, want+".") {
			return true
		}
	}
	return false
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}
