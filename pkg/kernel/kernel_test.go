package kernel

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConfig(t *testing.T, dir, text string, zip bool) string {
	t.Helper()
	p := filepath.Join(dir, "config")
	data := []byte(text)
	if zip {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		w.Write(data)
		w.Close()
		data = b.Bytes()
	}
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func status(t *testing.T, r Report, name string) Result {
	t.Helper()
	for _, res := range r.Results {
		if res.Name == name {
			return res
		}
	}
	t.Fatalf("no result for %s", name)
	return Result{}
}

func TestCheck(t *testing.T) {
	root := t.TempDir()
	release := kernelRelease()
	os.MkdirAll(filepath.Join(root, "lib/modules", release), 0o755)
	os.WriteFile(filepath.Join(root, "lib/modules", release, "modules.dep"), []byte("kernel/drivers/net/veth.ko.xz:\nkernel/net/bridge/br_netfilter.ko: kernel/net/bridge/bridge.ko\n"), 0o644)
	os.MkdirAll(filepath.Join(root, "sys/module/overlay"), 0o755)
	cfg := writeConfig(t, t.TempDir(), strings.Join([]string{
		"CONFIG_NET_NS=y", "CONFIG_BRIDGE=m", "CONFIG_VETH=m", "CONFIG_OVERLAY_FS=m",
		"CONFIG_BRIDGE_NETFILTER=m", "# CONFIG_VXLAN is not set", "CONFIG_NFT_COMPAT=y", "CONFIG_NF_NAT=m",
	}, "\n"), true)
	// The running kernel's configuration, completed by its modules.
	config, err := Checker{Config: cfg}.readConfigFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r := Checker{Root: root}.evaluate(config, cfg, false, release, Needed("vxlan", false))
	for name, want := range map[string]Status{
		"network namespaces":             Present, // =y
		"veth":                           Present, // =m, installed (compressed module)
		"bridge netfilter":               Present, // =m, installed
		"overlay filesystem":             Present, // loaded
		"iptables (legacy or nf_tables)": Present, // the second option
		"bridge":                         Missing, // =m, but no module file
		"VXLAN":                          Missing, // not set
		"NAT":                            Missing, // =m, no module
		"PID namespaces":                 Missing, // absent
	} {
		if got := status(t, r, name); got.Status != want {
			t.Errorf("%s: %s (%s), want %s", name, got.Status, got.How, want)
		}
	}
	err = r.Err()
	if err == nil || !strings.Contains(err.Error(), "VXLAN (for --flannel-backend vxlan") || !strings.Contains(err.Error(), "CONFIG_VXLAN is not set") {
		t.Fatalf("error: %v", err)
	}
	// host-gw needs no VXLAN.
	r, _ = Checker{Config: cfg}.Check(Needed("host-gw", false))
	for _, res := range r.Results {
		if res.Name == "VXLAN" {
			t.Fatal("VXLAN checked for host-gw")
		}
		if res.Name == "netlink queue" {
			t.Fatal("netlink queue checked with network policy off")
		}
	}
	// wireguard-native needs WireGuard (not set in this configuration).
	r, _ = Checker{Config: cfg}.Check(Needed("wireguard-native", false))
	if err := r.Err(); err == nil || !strings.Contains(err.Error(), "WireGuard (for --flannel-backend wireguard-native") {
		t.Fatalf("wireguard-native without WireGuard: %v", err)
	}
	// NetworkPolicy enforcement needs the netlink queue.
	r, _ = Checker{Config: cfg}.Check(Needed("host-gw", true))
	if err := r.Err(); err == nil || !strings.Contains(err.Error(), "netlink queue (for NetworkPolicy") {
		t.Fatalf("with network policy, no netlink queue: %v", err)
	}
}

func TestCheckWithoutConfig(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "sys/module/vxlan"), 0o755)
	c := Checker{Root: root}
	feats := []Feature{{Name: "VXLAN", Any: []Option{{"VXLAN", "vxlan"}}}, {Name: "veth", Any: []Option{{"VETH", "veth"}}}}
	got := map[string]Status{
		"VXLAN": c.check(feats[0], nil, false, "x").Status, // its module is loaded
		"veth":  c.check(feats[1], nil, false, "x").Status,
	}
	if got["VXLAN"] != Present || got["veth"] != Unknown {
		t.Fatalf("without a configuration: %v", got)
	}
	if (Report{Results: []Result{{Feature: feats[1], Status: Unknown}}}).Err() != nil {
		t.Fatal("unknown fails the check")
	}
}

// A named configuration decides alone: =m counts, /sys/module does not.
func TestExplicitConfig(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "sys/module/vxlan"), 0o755)
	cfg := writeConfig(t, t.TempDir(), "CONFIG_VETH=m\n# CONFIG_VXLAN is not set\n", false)
	r, err := Checker{Config: cfg, Root: root}.Check(Needed("vxlan", false))
	if err != nil {
		t.Fatal(err)
	}
	if s := status(t, r, "veth"); s.Status != Present {
		t.Errorf("veth =m: %s", s.Status)
	}
	if s := status(t, r, "VXLAN"); s.Status != Missing {
		t.Errorf("VXLAN not set but loaded here: %s", s.Status)
	}
}

func TestExplicitConfigMissing(t *testing.T) {
	if _, err := (Checker{Config: filepath.Join(t.TempDir(), "nope")}).Check(Needed("vxlan", false)); err == nil {
		t.Fatal("a missing explicit configuration file was ignored")
	}
}
