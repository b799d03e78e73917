// Package agent is the composition root of the agent role: it prepares the
// node's certificates and configuration files, then lists the node's
// components in start order: containerd, image import, kubelet, pod network.
package agent

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kedge-dev/kedge/pkg/agent/apiproxy"
	"github.com/kedge-dev/kedge/pkg/agent/cni"
	"github.com/kedge-dev/kedge/pkg/agent/containerd"
	"github.com/kedge-dev/kedge/pkg/agent/flannel"
	"github.com/kedge-dev/kedge/pkg/agent/hostinfo"
	"github.com/kedge-dev/kedge/pkg/agent/images"
	"github.com/kedge-dev/kedge/pkg/agent/kubelet"
	"github.com/kedge-dev/kedge/pkg/agent/kubeproxy"
	"github.com/kedge-dev/kedge/pkg/agent/loadbalancer"
	"github.com/kedge-dev/kedge/pkg/agent/registries"
	"github.com/kedge-dev/kedge/pkg/autonomy"
	"github.com/kedge-dev/kedge/pkg/component"
	"github.com/kedge-dev/kedge/pkg/config"
	"github.com/kedge-dev/kedge/pkg/controlplane"
	"github.com/kedge-dev/kedge/pkg/datadir"
	"github.com/kedge-dev/kedge/pkg/join"
	"github.com/kedge-dev/kedge/pkg/netpol"
	"github.com/kedge-dev/kedge/pkg/payload"
	"github.com/kedge-dev/kedge/pkg/pki"
	"github.com/kedge-dev/kedge/pkg/servicelb"
	"github.com/kedge-dev/kedge/pkg/storage"
)

// Credentials are the CAs the agent trusts and what issues its node
// certificates.
type Credentials struct {
	ServerCACert string
	ClientCACert string
	Issuer       Issuer
}

// Issuer makes sure certPath/keyPath hold a valid node certificate of a
// kind (join.Kind*): signed locally beside a server, or by the server for
// an agent that joined with a token (join.Remote).
type Issuer interface {
	Issue(kind, certPath, keyPath string, sans []string) error
}

// LocalCredentials are the credentials of an agent that shares a server's
// data dir: it signs with the server's own CAs.
func LocalCredentials(f pki.Files, nodeName string) Credentials {
	return Credentials{ServerCACert: f.ServerCACert, ClientCACert: f.ClientCACert, Issuer: localIssuer{files: f, node: nodeName}}
}

type localIssuer struct {
	files pki.Files
	node  string
}

func (l localIssuer) Issue(kind, certPath, keyPath string, sans []string) error {
	leaf, client, err := join.LeafFor(kind, l.node, sans)
	if err != nil {
		return err
	}
	if client {
		return pki.IssueClientCert(l.files.ClientCACert, l.files.ClientCAKey, certPath, keyPath, leaf.CommonName, leaf.Orgs)
	}
	return pki.IssueServingCert(l.files.ServerCACert, l.files.ServerCAKey, certPath, keyPath, leaf.CommonName, leaf.SANs)
}

// Options configure the agent.
type Options struct {
	Config    config.Config
	ServerURL string
	// LoadBalance puts the agent's load balancer between the node's
	// components and the servers (kedge agent, and a server's own agent
	// when there can be more than one server); a single server's own
	// agent talks to its API directly.
	LoadBalance bool
	Creds       Credentials
	Log         *slog.Logger

	// apiCA verifies the API the node's components talk to: the servers'
	// CA, or the node's API cache's own.
	apiCA string
	cache *apiproxy.Proxy
}

// Paths of the agent's files under the data dir.
type paths struct{ root, run string }

func (p paths) etcContainerd() string { return filepath.Join(p.root, "etc", "containerd") }
func (p paths) certsD() string        { return filepath.Join(p.etcContainerd(), "certs.d") }
func (p paths) cniConf() string       { return filepath.Join(p.root, "etc", "cni", "net.d") }
func (p paths) tls() string           { return filepath.Join(p.root, "tls") }
func (p paths) kubeconfig() string    { return filepath.Join(p.root, "kubelet.kubeconfig") }
func (p paths) proxyKubeconfig() string {
	return filepath.Join(p.root, "kubeproxy.kubeconfig")
}
func (p paths) kubeletConfig() string { return filepath.Join(p.root, "kubelet.yaml") }
func (p paths) socket() string        { return filepath.Join(p.run, "containerd", "containerd.sock") }

// NodeName is --node-name, else the host name in lower case; with
// --with-node-id, followed by the node's stable ID (<data-dir>/agent/node-id).
func NodeName(c config.Config) string {
	name := c.NodeName
	if name == "" {
		h, _ := os.Hostname()
		name = strings.ToLower(h)
	}
	if c.WithNodeID {
		if id, err := join.NodeID(datadir.Layout{Root: c.DataDir}.Agent()); err == nil {
			name += "-" + id
		}
	}
	return name
}

// NodeIP is the node's primary address: the first of --node-ip, else the
// address of the default route's interface.
func NodeIP(c config.Config) string { return NodeIPs(c)[0] }

// NodeIPs are --node-ip's addresses (two on a dual-stack node), else the
// address of the default route's interface.
func NodeIPs(c config.Config) []string {
	if c.NodeIP != "" {
		if ips, err := config.ParseIPs(c.NodeIP); err == nil {
			var out []string
			for _, ip := range ips {
				out = append(out, ip.String())
			}
			return out
		}
	}
	if ip, err := utilnet.ResolveBindAddress(nil); err == nil && ip != nil {
		return []string{ip.String()}
	}
	return []string{"127.0.0.1"}
}

// Node is what a node runs.
type Node struct {
	// Runtime starts the container runtime and imports the images in the
	// background. It needs nothing else, so it goes first, before any
	// component the node waits for (a server's control plane too).
	Runtime component.Component
	// Components come after it, in start order.
	Components []component.Component
}

// All is the node's components in start order, Runtime first.
func (n Node) All() []component.Component {
	return append([]component.Component{n.Runtime}, n.Components...)
}

// Components prepares the node and returns its components.
func Components(o Options) (Node, error) {
	c := o.Config
	layout := datadir.Layout{Root: c.DataDir}
	p := paths{root: layout.Agent(), run: c.RunDir}
	// Extracted by the runtime's first component, unpack.
	binDir, err := payload.BinDir(c.DataDir)
	if err != nil {
		return Node{}, err
	}
	facts := hostinfo.Detect()
	name, ips := NodeName(c), NodeIPs(c)
	ip := ips[0]
	var lb *loadbalancer.LB
	if o.LoadBalance {
		u, err := url.Parse(o.ServerURL)
		if err != nil || u.Host == "" {
			return Node{}, fmt.Errorf("--server %q: not a URL", o.ServerURL)
		}
		if lb, err = loadbalancer.New(c.LBServerPort, u.Host, filepath.Join(p.root, "etc", "servers.json"), o.Log.With("component", "loadbalancer")); err != nil {
			return Node{}, err
		}
		o.ServerURL = lb.URL()
	}
	o.apiCA = o.Creds.ServerCACert
	if c.Autonomy && lb != nil {
		cachePort := 0
		if c.LBServerPort != 0 {
			cachePort = c.LBServerPort + 1
		}
		if o.cache, err = apiproxy.New(apiproxy.Options{
			Port: cachePort, Upstream: lb.URL(), ServerCA: o.Creds.ServerCACert, ClientCA: o.Creds.ClientCACert,
			TLSDir: p.tls(), CacheDir: filepath.Join(p.root, "cache"), Log: o.Log.With("component", "api-cache"),
		}); err != nil {
			return Node{}, err
		}
		o.ServerURL, o.apiCA = o.cache.URL(), o.cache.CACert()
	}
	o.Log.Info("agent", "node", name, "nodeIP", ip, "cgroupV2", facts.CgroupV2, "cgroupDriver", facts.CgroupDriver(), "restrictOOMScoreAdj", !facts.CanLowerOOMScoreAdj, "bin", binDir)

	for _, d := range []string{p.root, p.tls(), layout.ImagesDir(), filepath.Join(c.RunDir, "containerd"), filepath.Join(p.root, "pod-manifests")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return Node{}, fmt.Errorf("create %s: %w", d, err)
		}
	}
	clientCert, clientKey := filepath.Join(p.tls(), "client-kubelet.crt"), filepath.Join(p.tls(), "client-kubelet.key")
	hostname, _ := os.Hostname()
	servingCert, servingKey := filepath.Join(p.tls(), "serving-kubelet.crt"), filepath.Join(p.tls(), "serving-kubelet.key")
	// issueKubelet (re)issues the kubelet's certificates that need it: at
	// start, and daily while running (pki.Renewer).
	issueKubelet := func() error {
		if err := o.Creds.Issuer.Issue(join.KindKubelet, clientCert, clientKey, nil); err != nil {
			return fmt.Errorf("kubelet client certificate: %w", err)
		}
		if err := o.Creds.Issuer.Issue(join.KindKubeletServing, servingCert, servingKey, append([]string{name, hostname, "localhost", "127.0.0.1"}, ips...)); err != nil {
			return fmt.Errorf("kubelet serving certificate: %w", err)
		}
		return nil
	}
	if err := issueKubelet(); err != nil {
		return Node{}, err
	}
	if err := writeKubeconfig(o, p.kubeconfig(), clientCert, clientKey); err != nil {
		return Node{}, err
	}
	// kube-proxy, flannel and servicelb each act under an identity of their
	// own, granted what they need by built-in roles or manifests/rbac.yaml.
	if _, err := issueKubeconfig(o, p, join.KindKubeProxy, p.proxyKubeconfig()); err != nil {
		return Node{}, err
	}
	flannelKC, err := issueKubeconfig(o, p, join.KindFlannel, filepath.Join(p.root, "flannel.kubeconfig"))
	if err != nil {
		return Node{}, err
	}
	lbKC, err := issueKubeconfig(o, p, join.KindServiceLB, filepath.Join(p.root, "servicelb.kubeconfig"))
	if err != nil {
		return Node{}, err
	}
	proxyArgs := kubeproxy.DefaultArgs(p.proxyKubeconfig(), name, c.ClusterCIDR)
	if c.ClusterCIDR == "" {
		// A lone agent does not know the cluster CIDR: traffic from this
		// node's pod CIDR is local.
		delete(proxyArgs, "cluster-cidr")
		proxyArgs["detect-local-mode"] = "NodeCIDR"
	}
	if err := proxyArgs.Override(c.KubeProxyArgs); err != nil {
		return Node{}, fmt.Errorf("--kube-proxy-arg: %w", err)
	}

	if err := registries.Render(c.PrivateRegistry, p.certsD()); err != nil {
		return Node{}, err
	}
	ctrdConfig, err := containerd.Render(p.etcContainerd(), containerd.ConfigData{
		Root:                filepath.Join(p.root, "containerd"),
		State:               filepath.Join(c.RunDir, "containerd", "state"),
		Socket:              p.socket(),
		BinDir:              binDir,
		CNIConfDir:          p.cniConf(),
		RegistryConfigDir:   p.certsD(),
		PauseImage:          c.PauseImage,
		SystemdCgroup:       facts.SystemdCgroups,
		RestrictOOMScoreAdj: !facts.CanLowerOOMScoreAdj,
		ImportsGlob:         filepath.Join(p.etcContainerd(), "config.toml.d", "*.toml"),
	})
	if err != nil {
		return Node{}, err
	}

	kport, hport := 10250, 10248
	kargs := controlplane.Args{
		"kubeconfig":        p.kubeconfig(),
		"hostname-override": name,
		"node-ip":           strings.Join(ips, ","),
		"root-dir":          kubelet.RootDir(c.DataDir),
	}
	labels := c.NodeLabels
	if o.cache != nil {
		labels = append(slices.Clone(labels), autonomy.Label+"=true")
	}
	if len(labels) > 0 {
		kargs["node-labels"] = strings.Join(labels, ",")
	}
	if len(c.NodeTaints) > 0 {
		kargs["register-with-taints"] = strings.Join(c.NodeTaints, ",")
	}
	if err := kargs.Override(c.KubeletArgs); err != nil {
		return Node{}, fmt.Errorf("--kubelet-arg: %w", err)
	}
	if v, ok := kargs["healthz-port"]; ok {
		hport, _ = strconv.Atoi(v)
	}
	if v, ok := kargs["port"]; ok {
		kport, _ = strconv.Atoi(v)
	}
	if err := kubelet.WriteConfig(p.kubeletConfig(), kubelet.ConfigData{
		ClientCAFile:          o.Creds.ClientCACert,
		TLSCertFile:           servingCert,
		TLSKeyFile:            servingKey,
		CgroupDriver:          facts.CgroupDriver(),
		CgroupV1:              !facts.CgroupV2,
		ClusterDNS:            c.ClusterDNSIP(),
		ClusterDomain:         c.ClusterDomain,
		RuntimeEndpoint:       "unix://" + p.socket(),
		StaticPodPath:         filepath.Join(p.root, "pod-manifests"),
		ResolvConf:            kubelet.ResolvConf(),
		HealthzPort:           hport,
		Port:                  kport,
		ProtectKernelDefaults: c.ProtectKernelDefaults,
	}); err != nil {
		return Node{}, err
	}
	// Report bad --kubelet-arg values now, before anything starts.
	if _, err := kubelet.Build(p.kubeletConfig(), kargs); err != nil {
		return Node{}, err
	}

	restCfg, err := clientcmd.BuildConfigFromFlags("", p.kubeconfig())
	if err != nil {
		return Node{}, err
	}
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return Node{}, err
	}
	builtin := map[string]func() (io.ReadCloser, error){}
	for _, name := range []string{"pause.tar", "coredns.tar"} {
		if f, err := payload.OpenImage(name); err == nil {
			f.Close()
			builtin[name] = func() (io.ReadCloser, error) { return payload.OpenImage(name) }
		}
	}
	var components []component.Component
	if lb != nil {
		proxyConfig, err := clientcmd.BuildConfigFromFlags("", p.proxyKubeconfig())
		if err != nil {
			return Node{}, err
		}
		components = append(components, lb)
		if o.cache != nil {
			components = append(components, o.cache, &autonomy.NodeLabel{Client: client, Node: name, Log: o.Log.With("component", "autonomy")})
		}
		components = append(components, &loadbalancer.Watcher{LB: lb, Config: proxyConfig, Log: o.Log.With("component", "loadbalancer")})
	}
	// The container runtime and the images need no API server: they start
	// ahead, meanwhile, and the kubelet waits for them.
	runtime := component.NewAhead(component.NewRunner(o.Log),
		&unpack{dataDir: c.DataDir, preferBundled: c.PreferBundledBin, removePolicies: c.DisableNetworkPolicy, log: o.Log},
		containerd.New(containerd.Options{
			ConfigFile: ctrdConfig,
			Socket:     p.socket(),
			BinDir:     binDir,
			LogFile:    filepath.Join(p.root, "containerd", "containerd.log"),
			PIDFile:    filepath.Join(c.RunDir, "containerd", "containerd.pid"),
			Log:        o.Log.With("component", "containerd"),
		}),
		&images.Importer{Socket: p.socket(), Dir: layout.ImagesDir(), Builtin: builtin, Interval: 2 * time.Second, Log: o.Log.With("component", "images")})
	components = append(components, runtime.Joined())
	kubeletC := &kubelet.Kubelet{ConfigFile: p.kubeletConfig(), Args: kargs, HealthzURL: "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(hport)) + "/healthz", Log: o.Log.With("component", "kubelet")}
	writer := &cni.Writer{Client: client, NodeName: name, ConfDir: p.cniConf(), IPAMDir: filepath.Join(p.root, "cni", "ipam"), Bridge: "cni0", Families: families(c.ClusterCIDR), Log: o.Log.With("component", "cni")}
	if c.FlannelBackend != "none" {
		fl := &flannel.Flannel{
			Kubeconfig:  flannelKC,
			NodeName:    name,
			ClusterCIDR: c.ClusterCIDR,
			IPv6Masq:    c.FlannelIPv6Masq,
			KeyFile:     filepath.Join(p.root, "etc", "flannel", "wireguard.key"),
			Backend:     c.FlannelBackend,
			Iface:       c.FlannelIface,
			Dir:         filepath.Join(c.RunDir, "flannel"),
			Log:         o.Log.With("component", "flannel"),
		}
		writer.SubnetFile = fl.SubnetFile()
		// flannel's first second goes to syncing its Node informer; it
		// spends it while the kubelet starts and registers the node, whose
		// pod CIDR its lease is.
		network := component.NewAhead(component.NewRunner(o.Log), fl)
		components = append(components, network, kubeletC, network.Joined())
	} else {
		components = append(components, kubeletC)
	}
	components = append(components, writer)
	if !c.DisableKubeProxy {
		components = append(components, &kubeproxy.Proxy{Args: proxyArgs, Log: o.Log.With("component", "kube-proxy")})
	}
	if !c.DisableNetworkPolicy {
		npKC, err := issueKubeconfig(o, p, join.KindNetworkPolicy, filepath.Join(p.root, "network-policy.kubeconfig"))
		if err != nil {
			return Node{}, err
		}
		npConfig, err := clientcmd.BuildConfigFromFlags("", npKC)
		if err != nil {
			return Node{}, err
		}
		components = append(components, &netpol.Enforcer{Config: npConfig, NodeName: name, Log: o.Log.With("component", "network-policy")})
	}
	if o.cache != nil {
		podsPort := 0
		if c.LBServerPort != 0 {
			podsPort = c.LBServerPort + 2
		}
		components = append(components, &apiproxy.PodAccess{
			Proxy: o.cache, Client: client, NodeIP: ip, Port: podsPort, ClusterDomain: c.ClusterDomain,
			CertFile: filepath.Join(p.tls(), "serving-apicache-pods.crt"), KeyFile: filepath.Join(p.tls(), "serving-apicache-pods.key"),
			Issue: func(cert, key string, sans []string) error {
				return o.Creds.Issuer.Issue(join.KindKubeletServing, cert, key, sans)
			},
			Log: o.Log.With("component", "api-cache"),
		})
	}
	lbConfig, err := clientcmd.BuildConfigFromFlags("", lbKC)
	if err != nil {
		return Node{}, err
	}
	components = append(components, &servicelb.Speaker{Config: lbConfig, NodeName: name, Log: o.Log.With("component", "servicelb")})
	if !c.Disabled("local-storage") {
		storageKC, err := issueKubeconfig(o, p, join.KindLocalStorage, filepath.Join(p.root, "local-storage.kubeconfig"))
		if err != nil {
			return Node{}, err
		}
		storageConfig, err := clientcmd.BuildConfigFromFlags("", storageKC)
		if err != nil {
			return Node{}, err
		}
		components = append(components, &storage.Provisioner{Config: storageConfig, NodeName: name, Dir: c.LocalStoragePath(), Log: o.Log.With("component", "local-storage")})
	}
	components = append(components, &pki.Renewer{Ensure: issueKubelet, Dirs: []string{p.tls()}, Log: o.Log.With("component", "certificates")})
	return Node{Runtime: runtime, Components: components}, nil
}

// families are the IP families (4, 6) of cidrs.
func families(cidrs string) []int {
	prefixes, _ := config.ParseCIDRs(cidrs)
	var out []int
	for _, p := range prefixes {
		if p.Addr().Is4() {
			out = append(out, 4)
		} else {
			out = append(out, 6)
		}
	}
	return out
}

// issueKubeconfig gives one of the agent's own components an identity of
// its kind: a client certificate client-<kind>.crt and the kubeconfig file.
func issueKubeconfig(o Options, p paths, name, file string) (string, error) {
	cert, key := filepath.Join(p.tls(), "client-"+name+".crt"), filepath.Join(p.tls(), "client-"+name+".key")
	if err := o.Creds.Issuer.Issue(name, cert, key, nil); err != nil {
		return "", fmt.Errorf("%s client certificate: %w", name, err)
	}
	return file, writeKubeconfig(o, file, cert, key)
}

// writeKubeconfig writes a node component's kubeconfig for the API it
// talks to, and makes its certificate known to the node's API cache.
func writeKubeconfig(o Options, file, cert, key string) error {
	if o.cache != nil {
		o.cache.AddIdentity(cert, key)
	}
	return pki.WriteKubeconfig(file, 0o600, pki.Kubeconfig{Server: o.ServerURL, CACert: o.apiCA, CertFile: cert, KeyFile: key})
}
