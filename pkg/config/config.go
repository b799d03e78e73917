// Package config owns kedge's typed configuration: its defaults, the flags
// that set it (whose long names are also the config-file keys and, upper
// cased with a KEDGE_ prefix, the environment variables), loading the config
// file, and validation. A Config is complete and frozen once Load returns.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/robfig/cron/v3"
	"github.com/spf13/pflag"
)

// Defaults shared with the rest of kedge.
const (
	DefaultDataDir         = "/var/lib/kedge"
	DefaultConfigFile      = "/etc/kedge/config.yaml"
	DefaultKubeconfig      = "/etc/kedge/kedge.yaml"
	DefaultKubeconfigMode  = "0600"
	DefaultHTTPSListenPort = 6443
	DefaultClusterCIDR     = "10.42.0.0/16"
	DefaultServiceCIDR     = "10.43.0.0/16"
	DefaultClusterDNS      = "10.43.0.10"
	DefaultClusterDomain   = "cluster.local"
	DefaultRunDir          = "/run/kedge"
	// DefaultContainerdSocket is where kedge's containerd listens.
	DefaultContainerdSocket = DefaultRunDir + "/containerd/containerd.sock"
	DefaultRegistriesFile   = "/etc/kedge/registries.yaml"
	DefaultLBServerPort     = 6444
	DefaultSnapshotCron     = "0 */12 * * *"
)

// Config is the whole configuration of a kedge server.
type Config struct {
	ConfigFile string

	DataDir           string
	HTTPSListenPort   int
	BindAddress       string
	AdvertiseAddress  string
	TLSSAN            []string
	ClusterCIDR       string
	ServiceCIDR       string
	ClusterDNS        string
	ClusterDomain     string
	DatastoreEndpoint string
	Token             string
	AgentToken        string
	// SecretsEncryption encrypts Secrets at rest in a new cluster.
	SecretsEncryption bool
	// PodSecurityAdmissionConfigFile replaces kedge's PodSecurity
	// defaults (baseline enforced).
	PodSecurityAdmissionConfigFile string
	// AuditLogPath turns on the apiserver's audit log.
	AuditLogPath        string
	WriteKubeconfig     string
	WriteKubeconfigMode string
	DisableAgent        bool
	Disable             []string
	// DisableHelmController turns off the HelmChart controller.
	DisableHelmController bool

	// ClusterInit starts a cluster on embedded etcd; Server (in Agent) on
	// a server joins the etcd cluster of that server.
	ClusterInit              bool
	ClusterReset             bool
	ClusterResetRestorePath  string
	EtcdDisableSnapshots     bool
	EtcdSnapshotScheduleCron string
	EtcdSnapshotRetention    int
	EtcdSnapshotDir          string

	KubeAPIServerArgs         []string
	KubeControllerManagerArgs []string
	KubeSchedulerArgs         []string

	Verbosity int
	LogJSON   bool

	Agent
}

// Agent is the configuration of the agent, the node part of a server and
// the whole of "kedge agent".
type Agent struct {
	// Server is the URL of the server to join ("kedge agent" only).
	Server         string
	RunDir         string
	NodeName       string
	NodeIP         string
	NodeLabels     []string
	NodeTaints     []string
	KubeletArgs    []string
	KubeProxyArgs  []string
	FlannelBackend string
	FlannelIface   string
	// FlannelIPv6Masq masquerades IPv6 pod traffic leaving the cluster.
	FlannelIPv6Masq  bool
	DisableKubeProxy bool
	// DisableNetworkPolicy turns off NetworkPolicy enforcement.
	DisableNetworkPolicy bool
	// PreferBundledBin puts the networking tools kedge carries ahead of
	// the host's on PATH.
	PreferBundledBin bool
	PauseImage       string
	PrivateRegistry  string
	// DefaultLocalStoragePath holds the node's local-path volumes.
	DefaultLocalStoragePath string
	// LBServerPort is the agent's local load balancer to the servers.
	LBServerPort int
	// WithNodeID appends the node's stable random ID to its name.
	WithNodeID bool
	// ProtectKernelDefaults is the kubelet's protect-kernel-defaults.
	ProtectKernelDefaults bool
	// Autonomy keeps an agent's pods running and serving while no server
	// answers (kedge agent --autonomy).
	Autonomy bool
}

// FlannelBackends are the values of --flannel-backend (k3s's names).
var FlannelBackends = []string{"vxlan", "host-gw", "wireguard-native", "none"}

// KnownAddons are the add-ons kedge deploys, by the names --disable takes.
var KnownAddons = []string{"coredns", "servicelb", "local-storage", "metrics-server", "ingress"}

// addonAliases are the names k3s users know for kedge's add-ons.
var addonAliases = map[string]string{"traefik": "ingress"}

// Disabled reports whether --disable names the add-on.
func (c *Config) Disabled(addon string) bool {
	for _, d := range c.Disable {
		if d == addon || addonAliases[d] == addon {
			return true
		}
	}
	return false
}

// SnapshotDir is --etcd-snapshot-dir, else <data-dir>/server/db/snapshots.
func (c *Config) SnapshotDir() string {
	if c.EtcdSnapshotDir != "" {
		return c.EtcdSnapshotDir
	}
	return filepath.Join(c.DataDir, "server", "db", "snapshots")
}

// LocalStoragePath is --default-local-storage-path, else <data-dir>/storage.
func (c *Config) LocalStoragePath() string {
	if c.DefaultLocalStoragePath != "" {
		return c.DefaultLocalStoragePath
	}
	return filepath.Join(c.DataDir, "storage")
}

// TLSCipherSuites are the TLS 1.2 cipher suites kedge's servers (API,
// kubelet) accept: the CIS benchmark's list. TLS 1.3 suites are fixed.
const TLSCipherSuites = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305,TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"

// DefaultPauseImage is the pause image kedge carries inside its binary.
const DefaultPauseImage = "kedge.local/pause:3.10"

// CoreDNSImage is the CoreDNS image kedge carries inside its binary.
const CoreDNSImage = "kedge.local/coredns:1.15.0"

// TraefikImage is the Ingress controller's image, shipped in the optional
// kedge-addons-<arch>.tar.zst archive (scripts/addon-images).
const TraefikImage = "kedge.local/traefik:3.7.13"

// AddAgentFlags registers the agent's flags on fs, bound to a.
func (a *Agent) AddAgentFlags(fs *pflag.FlagSet) {
	fs.StringVar(&a.RunDir, "run-dir", DefaultRunDir, "runtime directory (sockets, PID files); containerd listens in <run-dir>/containerd")
	fs.StringVar(&a.NodeName, "node-name", "", "name of this node (default: the host name, lower case)")
	fs.StringVar(&a.NodeIP, "node-ip", "", "IP address the node registers with; an IPv4 and an IPv6 one, comma-separated, on a dual-stack node (default: the address of the default route's interface)")
	fs.StringArrayVar(&a.NodeLabels, "node-label", nil, "label to register the node with, key=value (repeatable)")
	fs.StringArrayVar(&a.NodeTaints, "node-taint", nil, "taint to register the node with, key=value:Effect (repeatable)")
	fs.StringArrayVar(&a.KubeletArgs, "kubelet-arg", nil, "extra kubelet flag as key=value (repeatable; overrides kedge's default)")
	fs.StringVar(&a.FlannelBackend, "flannel-backend", "vxlan", "pod network between nodes: vxlan, host-gw, wireguard-native (encrypted), or none (bring your own CNI)")
	fs.StringVar(&a.FlannelIface, "flannel-iface", "", "interface flannel uses between nodes (default: the default route's)")
	fs.BoolVar(&a.FlannelIPv6Masq, "flannel-ipv6-masq", false, "masquerade IPv6 pod traffic leaving the cluster network (IPv4 always is)")
	fs.StringArrayVar(&a.KubeProxyArgs, "kube-proxy-arg", nil, "extra kube-proxy flag as key=value (repeatable; e.g. proxy-mode=nftables)")
	fs.BoolVar(&a.DisableKubeProxy, "disable-kube-proxy", false, "do not run kube-proxy (bring your own Service proxy)")
	fs.BoolVar(&a.DisableNetworkPolicy, "disable-network-policy", false, "do not enforce NetworkPolicy on this node (bring your own policy engine)")
	fs.BoolVar(&a.PreferBundledBin, "prefer-bundled-bin", true, "use the iptables, ip6tables, nft and conntrack kedge carries rather than the host's (false: the host's first, kedge's where the host has none)")
	fs.StringVar(&a.PauseImage, "pause-image", DefaultPauseImage, "sandbox (pause) image; the default ships inside kedge")
	fs.StringVar(&a.PrivateRegistry, "private-registry", DefaultRegistriesFile, "registry configuration (mirrors, auth, TLS), as in k3s's registries.yaml")
	fs.StringVar(&a.DefaultLocalStoragePath, "default-local-storage-path", "", "directory holding this node's local-path volumes (default: <data-dir>/storage)")
	fs.BoolVar(&a.ProtectKernelDefaults, "protect-kernel-defaults", false, "make the kubelet fail on kernel settings it would otherwise change (CIS 4.2.6; set vm.overcommit_memory=1, kernel.panic=10, kernel.panic_on_oops=1 first)")
	fs.BoolVar(&a.WithNodeID, "with-node-id", false, "append a stable random ID to the node name (for machines cloned from one SD-card image)")
	fs.IntVar(&a.LBServerPort, "lb-server-port", DefaultLBServerPort, "loopback port of the agent's load balancer to the servers (the node's components reach the API there)")
}

// containerdLongestSocket is the longest socket path containerd makes in
// the run dir, and maxSocketPath the most containerd accepts for one.
const (
	containerdLongestSocket = "containerd/containerd.sock.ttrpc"
	maxSocketPath           = 104
)

// ValidateAgent checks the agent settings of `kedge agent`.
func (a *Agent) ValidateAgent() error { return a.validateAgent(true) }

// validateAgent checks the agent settings; the run dir's socket paths
// only matter where containerd runs (not with --disable-agent).
func (a *Agent) validateAgent(runsContainerd bool) error {
	var errs []error
	if a.NodeIP != "" {
		if _, err := ParseIPs(a.NodeIP); err != nil {
			errs = append(errs, fmt.Errorf("--node-ip: %w", err))
		}
	}
	if !filepath.IsAbs(a.RunDir) {
		errs = append(errs, fmt.Errorf("--run-dir: %q must be an absolute path", a.RunDir))
	} else if sock := filepath.Join(a.RunDir, containerdLongestSocket); runsContainerd && len(sock) > maxSocketPath {
		errs = append(errs, fmt.Errorf("--run-dir: %q is too long: containerd's socket %s would be %d bytes, over the %d a Unix socket path may have (at most %d for the run dir)",
			a.RunDir, sock, len(sock), maxSocketPath, maxSocketPath-len(containerdLongestSocket)-1))
	}
	for _, l := range a.NodeLabels {
		if k, _, ok := strings.Cut(l, "="); !ok || k == "" {
			errs = append(errs, fmt.Errorf("--node-label: %q is not of the form key=value", l))
		}
	}
	for _, t := range a.NodeTaints {
		kv, effect, ok := strings.Cut(t, ":")
		if !ok || kv == "" || (effect != "NoSchedule" && effect != "PreferNoSchedule" && effect != "NoExecute") {
			errs = append(errs, fmt.Errorf("--node-taint: %q is not of the form key=value:NoSchedule|PreferNoSchedule|NoExecute", t))
		}
	}
	for _, arg := range a.KubeletArgs {
		if _, _, err := SplitArg(arg); err != nil {
			errs = append(errs, fmt.Errorf("--kubelet-arg: %w", err))
		}
	}
	if a.LBServerPort < 0 || a.LBServerPort > 65535 {
		errs = append(errs, fmt.Errorf("--lb-server-port: %d is not a port (1-65535; 0 picks a free one)", a.LBServerPort))
	}
	if a.DefaultLocalStoragePath != "" && !filepath.IsAbs(a.DefaultLocalStoragePath) {
		errs = append(errs, fmt.Errorf("--default-local-storage-path: %q must be an absolute path", a.DefaultLocalStoragePath))
	}
	if !slices.Contains(FlannelBackends, a.FlannelBackend) {
		errs = append(errs, fmt.Errorf("--flannel-backend: %q is not one of %s", a.FlannelBackend, strings.Join(FlannelBackends, ", ")))
	}
	for _, arg := range a.KubeProxyArgs {
		if _, _, err := SplitArg(arg); err != nil {
			errs = append(errs, fmt.Errorf("--kube-proxy-arg: %w", err))
		}
	}
	return errors.Join(errs...)
}

// AddServerFlags registers every server flag on fs, bound to c, with its
// default. Flag names are the config-file keys.
func (c *Config) AddServerFlags(fs *pflag.FlagSet) {
	c.AddNodeFlags(fs)
	fs.IntVar(&c.HTTPSListenPort, "https-listen-port", DefaultHTTPSListenPort, "port of the Kubernetes API and of kedge's join endpoints")
	fs.StringVar(&c.BindAddress, "bind-address", "0.0.0.0", "address the API listens on")
	fs.StringVar(&c.AdvertiseAddress, "advertise-address", "", "address the API advertises to the cluster (default: the node's primary address)")
	fs.StringSliceVar(&c.TLSSAN, "tls-san", nil, "extra host names or IPs in the API serving certificate (repeatable)")
	fs.StringVar(&c.ServiceCIDR, "service-cidr", DefaultServiceCIDR, "service ClusterIP CIDR; two, comma-separated, for dual-stack (10.43.0.0/16,fd43::/112)")
	fs.StringVar(&c.DatastoreEndpoint, "datastore-endpoint", "", "kine datastore endpoint (sqlite://, mysql://, postgres://, nats://, ...); default: SQLite in the data dir")
	fs.StringVarP(&c.Token, "token", "t", "", "shared secret agents use to join (default: generated and stored in <data-dir>/server/token)")
	fs.StringVar(&c.PodSecurityAdmissionConfigFile, "pod-security-admission-config-file", "", "AdmissionConfiguration for PodSecurity (default: kedge's, enforcing baseline outside kube-system)")
	fs.StringVar(&c.AuditLogPath, "audit-log-path", "", "write the apiserver's audit log there (metadata of every request; rotated at 100 MB, 10 files, 30 days)")
	fs.BoolVar(&c.SecretsEncryption, "secrets-encryption", true, "encrypt Secrets at rest (AES-CBC; on by default for new clusters; see kedge secrets-encrypt)")
	fs.StringVar(&c.AgentToken, "agent-token", "", "a token for agents only, so they never hold the server token (stored in <data-dir>/server/agent-token; default: agents use the server token)")
	fs.StringVarP(&c.WriteKubeconfig, "write-kubeconfig", "o", DefaultKubeconfig, "where to write the admin kubeconfig")
	fs.StringVar(&c.WriteKubeconfigMode, "write-kubeconfig-mode", DefaultKubeconfigMode, "file mode of the admin kubeconfig, in octal (e.g. 0644)")
	fs.BoolVar(&c.DisableAgent, "disable-agent", false, "run the control plane only, without an agent on this node")
	fs.StringSliceVar(&c.Disable, "disable", nil, "do not deploy these add-ons, and remove them if deployed (repeatable): "+strings.Join(KnownAddons, ", ")+" (traefik is another name for ingress)")
	fs.BoolVar(&c.DisableHelmController, "disable-helm-controller", false, "do not run the HelmChart controller (helm.cattle.io/v1 HelmChart objects are then left alone)")
	fs.StringVarP(&c.Server, "server", "s", "", "URL of a server to join (https://SERVER:6443, with --token): this server becomes a member of its embedded etcd cluster")
	fs.BoolVar(&c.ClusterInit, "cluster-init", false, "run embedded etcd instead of SQLite, so other servers can join (--server); an existing SQLite database is moved into etcd")
	fs.BoolVar(&c.ClusterReset, "cluster-reset", false, "make this server's etcd a cluster of one member (with --cluster-reset-restore-path: from a snapshot), then exit")
	fs.StringVar(&c.ClusterResetRestorePath, "cluster-reset-restore-path", "", "etcd snapshot file to restore with --cluster-reset")
	fs.BoolVar(&c.EtcdDisableSnapshots, "etcd-disable-snapshots", false, "take no scheduled etcd snapshots")
	fs.StringVar(&c.EtcdSnapshotScheduleCron, "etcd-snapshot-schedule-cron", DefaultSnapshotCron, "when to take etcd snapshots, in cron syntax")
	fs.IntVar(&c.EtcdSnapshotRetention, "etcd-snapshot-retention", 5, "how many scheduled etcd snapshots to keep")
	fs.StringVar(&c.EtcdSnapshotDir, "etcd-snapshot-dir", "", "where etcd snapshots go (default: <data-dir>/server/db/snapshots)")
	fs.StringArrayVar(&c.KubeAPIServerArgs, "kube-apiserver-arg", nil, "extra kube-apiserver flag as key=value (repeatable; overrides kedge's default)")
	fs.StringArrayVar(&c.KubeControllerManagerArgs, "kube-controller-manager-arg", nil, "extra kube-controller-manager flag as key=value (repeatable)")
	fs.StringArrayVar(&c.KubeSchedulerArgs, "kube-scheduler-arg", nil, "extra kube-scheduler flag as key=value (repeatable)")
}

// AddNodeFlags registers the flags every role has: config file, data dir,
// cluster DNS, logging, and the agent's flags.
func (c *Config) AddNodeFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&c.ConfigFile, "config", "c", DefaultConfigFile, "config file (keys are the long flag names); files in <config>.d/*.yaml are read after it")
	fs.StringVarP(&c.DataDir, "data-dir", "d", DefaultDataDir, "directory holding kedge's state (certificates, database, images)")
	fs.StringVar(&c.ClusterCIDR, "cluster-cidr", DefaultClusterCIDR, "pod network CIDR; two, comma-separated, for dual-stack (10.42.0.0/16,fd42::/56)")
	fs.StringVar(&c.ClusterDNS, "cluster-dns", "", "ClusterIP of the cluster DNS service (default: the tenth address of --service-cidr, "+DefaultClusterDNS+")")
	fs.StringVar(&c.ClusterDomain, "cluster-domain", DefaultClusterDomain, "cluster DNS domain")
	fs.IntVarP(&c.Verbosity, "v", "v", 0, "log verbosity (0-10), as in Kubernetes components")
	fs.BoolVar(&c.LogJSON, "log-json", false, "write logs as JSON lines")
	c.AddAgentFlags(fs)
}

// Validate checks c and returns every problem found, joined.
func (c *Config) Validate() error {
	var errs []error
	bad := func(flag, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flag, fmt.Sprintf(format, args...)))
	}
	if !filepath.IsAbs(c.DataDir) {
		bad("data-dir", "%q must be an absolute path", c.DataDir)
	}
	if c.HTTPSListenPort < 1 || c.HTTPSListenPort > 65535 {
		bad("https-listen-port", "%d is not a port (1-65535)", c.HTTPSListenPort)
	}
	if net.ParseIP(c.BindAddress) == nil {
		bad("bind-address", "%q is not an IP address", c.BindAddress)
	}
	if c.AdvertiseAddress != "" && net.ParseIP(c.AdvertiseAddress) == nil {
		bad("advertise-address", "%q is not an IP address", c.AdvertiseAddress)
	}
	clusters, err := ParseCIDRs(c.ClusterCIDR)
	if err != nil {
		bad("cluster-cidr", "%v (examples: %s; dual-stack %s,fd42::/56)", err, DefaultClusterCIDR, DefaultClusterCIDR)
	}
	services, serr := ParseCIDRs(c.ServiceCIDR)
	if serr != nil {
		bad("service-cidr", "%v (examples: %s; dual-stack %s,fd43::/112)", serr, DefaultServiceCIDR, DefaultServiceCIDR)
	}
	if err == nil && serr == nil {
		if len(clusters) != len(services) || clusters[0].Addr().Is4() != services[0].Addr().Is4() {
			bad("service-cidr", "%s and --cluster-cidr %s must have the same IP families in the same order", c.ServiceCIDR, c.ClusterCIDR)
		}
		for _, service := range services {
			for _, cluster := range clusters {
				if cluster.Overlaps(service) {
					bad("service-cidr", "%s overlaps --cluster-cidr %s; pods and services need separate ranges", service, cluster)
				}
			}
			if service.Addr().Is4() && service.Bits() < 12 {
				bad("service-cidr", "%s is too large (a /12 at most, as in Kubernetes)", service)
			}
			if service.Addr().Is6() && service.Bits() < 108 {
				bad("service-cidr", "%s is too large (a /108 at most for IPv6, as in Kubernetes)", service)
			}
		}
		if dns, err := netip.ParseAddr(c.ClusterDNSIP()); err != nil {
			bad("cluster-dns", "%q is not an IP address", c.ClusterDNS)
		} else if !slices.ContainsFunc(services, func(p netip.Prefix) bool { return p.Contains(dns) }) {
			bad("cluster-dns", "%s is outside --service-cidr %s", dns, c.ServiceCIDR)
		}
	}
	if c.ClusterDomain == "" || strings.ContainsAny(c.ClusterDomain, " /") {
		bad("cluster-domain", "%q is not a DNS domain", c.ClusterDomain)
	}
	if c.WriteKubeconfig == "" {
		bad("write-kubeconfig", "must not be empty")
	}
	if _, err := c.KubeconfigMode(); err != nil {
		bad("write-kubeconfig-mode", "%v", err)
	}
	for flag, args := range map[string][]string{
		"kube-apiserver-arg":          c.KubeAPIServerArgs,
		"kube-controller-manager-arg": c.KubeControllerManagerArgs,
		"kube-scheduler-arg":          c.KubeSchedulerArgs,
	} {
		for _, a := range args {
			if _, _, err := SplitArg(a); err != nil {
				bad(flag, "%v", err)
			}
		}
	}
	if c.DatastoreEndpoint != "" && (c.ClusterInit || c.Server != "") {
		bad("datastore-endpoint", "an external datastore and embedded etcd (--cluster-init, --server) exclude each other")
	}
	if c.Server != "" {
		if !strings.HasPrefix(c.Server, "https://") {
			bad("server", "%q must be the https:// URL of a kedge server (https://SERVER:6443)", c.Server)
		}
		if c.Token == "" {
			bad("token", "joining %s needs the cluster's token (the first server's <data-dir>/server/token)", c.Server)
		}
	}
	if c.ClusterResetRestorePath != "" && !c.ClusterReset {
		bad("cluster-reset-restore-path", "needs --cluster-reset")
	}
	if _, err := cron.ParseStandard(c.EtcdSnapshotScheduleCron); err != nil {
		bad("etcd-snapshot-schedule-cron", "%q is not a cron schedule (example: %q): %v", c.EtcdSnapshotScheduleCron, DefaultSnapshotCron, err)
	}
	if c.EtcdSnapshotRetention < 1 {
		bad("etcd-snapshot-retention", "%d: keep at least 1 snapshot", c.EtcdSnapshotRetention)
	}
	if c.EtcdSnapshotDir != "" && !filepath.IsAbs(c.EtcdSnapshotDir) {
		bad("etcd-snapshot-dir", "%q must be an absolute path", c.EtcdSnapshotDir)
	}
	for _, d := range c.Disable {
		if !slices.Contains(KnownAddons, d) && addonAliases[d] == "" {
			bad("disable", "unknown add-on %q (known: %s)", d, strings.Join(KnownAddons, ", "))
		}
	}
	if err := c.validateAgent(!c.DisableAgent); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// KubeconfigMode parses --write-kubeconfig-mode.
func (c *Config) KubeconfigMode() (os.FileMode, error) {
	m, err := strconv.ParseUint(c.WriteKubeconfigMode, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("%q is not an octal file mode (example: 0644)", c.WriteKubeconfigMode)
	}
	return os.FileMode(m), nil
}

// ServiceIP returns the first address of the (first) service CIDR: the
// ClusterIP of the kubernetes Service. Valid only after Validate.
func (c *Config) ServiceIP() net.IP {
	p, _ := ParseCIDRs(c.ServiceCIDR)
	return net.IP(p[0].Addr().Next().AsSlice())
}

// ClusterDNSIP is --cluster-dns, else the tenth address of the first
// --service-cidr (10.43.0.10 by default), as in k3s.
func (c *Config) ClusterDNSIP() string {
	if c.ClusterDNS != "" {
		return c.ClusterDNS
	}
	service := c.ServiceCIDR
	if service == "" {
		service = DefaultServiceCIDR
	}
	p, err := ParseCIDRs(service)
	if err != nil {
		return ""
	}
	a := p[0].Addr()
	for range 10 {
		a = a.Next()
	}
	return a.String()
}

// ParseIPs parses an address, or two of different IP families separated
// by a comma (a dual-stack node's --node-ip).
func ParseIPs(s string) ([]netip.Addr, error) {
	parts := strings.Split(s, ",")
	if len(parts) > 2 {
		return nil, fmt.Errorf("%q has more than two addresses (one per IP family)", s)
	}
	var out []netip.Addr
	for _, part := range parts {
		a, err := netip.ParseAddr(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address", part)
		}
		out = append(out, a)
	}
	if len(out) == 2 && out[0].Is4() == out[1].Is4() {
		return nil, fmt.Errorf("%q: the two addresses must be one IPv4 and one IPv6", s)
	}
	return out, nil
}

// ParseCIDRs parses a CIDR, or two of different IP families separated by
// a comma (dual-stack; the first is the primary family).
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	parts := strings.Split(s, ",")
	if len(parts) > 2 {
		return nil, fmt.Errorf("%q has more than two CIDRs (one per IP family)", s)
	}
	var out []netip.Prefix
	for _, part := range parts {
		p, err := netip.ParsePrefix(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR", part)
		}
		if p.Masked() != p {
			return nil, fmt.Errorf("%q has host bits set; did you mean %s?", part, p.Masked())
		}
		out = append(out, p)
	}
	if len(out) == 2 && out[0].Addr().Is4() == out[1].Addr().Is4() {
		return nil, fmt.Errorf("%q: the two CIDRs must be one IPv4 and one IPv6", s)
	}
	return out, nil
}

// SplitArg splits a pass-through component argument "key=value" (a leading
// "--" is allowed) into its key and value.
func SplitArg(arg string) (string, string, error) {
	a := strings.TrimLeft(arg, "-")
	key, value, ok := strings.Cut(a, "=")
	if !ok || key == "" {
		return "", "", fmt.Errorf("%q is not of the form key=value", arg)
	}
	return key, value, nil
}
