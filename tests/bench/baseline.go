package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"text/template"
	"time"

	"github.com/kedge-dev/kedge/manifests"
	"github.com/kedge-dev/kedge/pkg/addons"
	"github.com/kedge-dev/kedge/pkg/agent/cni"
	"github.com/kedge-dev/kedge/pkg/agent/containerd"
	"github.com/kedge-dev/kedge/pkg/agent/hostinfo"
	"github.com/kedge-dev/kedge/pkg/agent/kubelet"
	"github.com/kedge-dev/kedge/pkg/payload"
	"github.com/kedge-dev/kedge/pkg/pki"
)

// Cluster values shared by both systems (kedge's defaults).
const (
	clusterCIDR  = "10.42.0.0/16"
	podCIDR      = "10.42.0.0/24" // the first node CIDR the controller manager hands out
	serviceCIDR  = "10.43.0.0/16"
	serviceIP    = "10.43.0.1"
	clusterDNS   = "10.43.0.10"
	pauseImage   = "kedge.local/pause:3.10"
	corednsImage = "kedge.local/coredns:1.15.0"
)

// baselineSystem is upstream Kubernetes as a kubeadm node runs it, but as
// plain processes: etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler with kubeadm's flags, kubelet, kube-proxy and containerd
// with the same runc, shim and CNI plugins kedge carries, and CoreDNS from
// kedge's manifest with the same image.
type baselineSystem struct {
	spec  childSpec
	files pki.Files
	bin   string // runc, shim, CNI plugins
	cmds  []*exec.Cmd
	names []string
}

func (b *baselineSystem) path(p ...string) string {
	return filepath.Join(append([]string{b.spec.Dir}, p...)...)
}
func (b *baselineSystem) kubeconfig() string { return b.path("kubeconfigs", "admin.conf") }
func (b *baselineSystem) socket() string     { return b.path("run", "containerd", "containerd.sock") }
func (b *baselineSystem) exe(name string) string {
	return filepath.Join(b.spec.BaselineDir, name)
}

// prepare does what kubeadm init and a node's setup do before the
// components start: certificates, kubeconfigs, configuration files, the
// CNI config, and images already in containerd (kubeadm pulls them first).
func (b *baselineSystem) prepare(ctx context.Context) error {
	var err error
	b.files, err = pki.Ensure(pki.Options{Dir: b.path("pki"), Hostname: nodeName,
		SANs: []string{nodeIP}, ServiceIP: net.ParseIP(serviceIP)})
	if err != nil {
		return err
	}
	f := b.files
	tls := b.path("pki")
	issue := []struct{ cert, cn string }{
		{"kubelet-client", "system:node:" + nodeName},
		{"kube-proxy", "system:kube-proxy"},
	}
	for _, i := range issue {
		var orgs []string
		if i.cert == "kubelet-client" {
			orgs = []string{"system:nodes"}
		}
		if err := pki.IssueClientCert(f.ClientCACert, f.ClientCAKey, filepath.Join(tls, i.cert+".crt"), filepath.Join(tls, i.cert+".key"), i.cn, orgs); err != nil {
			return err
		}
	}
	if err := pki.IssueServingCert(f.ServerCACert, f.ServerCAKey, filepath.Join(tls, "kubelet.crt"), filepath.Join(tls, "kubelet.key"), nodeName, []string{nodeName, nodeIP, "localhost", "127.0.0.1"}); err != nil {
		return err
	}
	server := "https://127.0.0.1:6443"
	for name, cred := range map[string][2]string{
		"admin.conf":              {f.AdminCert, f.AdminKey},
		"controller-manager.conf": {f.ControllerCert, f.ControllerKey},
		"scheduler.conf":          {f.SchedulerCert, f.SchedulerKey},
		"kubelet.conf":            {filepath.Join(tls, "kubelet-client.crt"), filepath.Join(tls, "kubelet-client.key")},
		"kube-proxy.conf":         {filepath.Join(tls, "kube-proxy.crt"), filepath.Join(tls, "kube-proxy.key")},
	} {
		if err := pki.WriteKubeconfig(b.path("kubeconfigs", name), 0o600, pki.Kubeconfig{Server: server, CACert: f.ServerCACert, CertFile: cred[0], KeyFile: cred[1]}); err != nil {
			return err
		}
	}
	if b.bin, err = payload.Extract(b.path("payload")); err != nil {
		return fmt.Errorf("runc, shim and CNI plugins: %w", err)
	}
	facts := hostinfo.Detect()
	if _, err := containerd.Render(b.path("etc", "containerd"), containerd.ConfigData{
		Root:                b.path("containerd"),
		State:               b.path("run", "containerd", "state"),
		Socket:              b.socket(),
		BinDir:              b.bin,
		CNIConfDir:          b.path("etc", "cni", "net.d"),
		RegistryConfigDir:   b.path("etc", "containerd", "certs.d"),
		PauseImage:          pauseImage,
		SystemdCgroup:       facts.SystemdCgroups,
		RestrictOOMScoreAdj: !facts.CanLowerOOMScoreAdj,
		ImportsGlob:         b.path("etc", "containerd", "config.toml.d", "*.toml"),
	}); err != nil {
		return err
	}
	// A static bridge network for the node's pod CIDR: the same plugins
	// kedge configures, without flannel (one node needs no overlay).
	conf, err := cni.Render("cni0", []string{podCIDR}, b.path("cni", "ipam"), true, 0)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(b.path("etc", "cni", "net.d"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(b.path("etc", "cni", "net.d", "10-bridge.conflist"), conf, 0o644); err != nil {
		return err
	}
	driver := "cgroupfs"
	if facts.SystemdCgroups {
		driver = "systemd"
	}
	if err := os.MkdirAll(b.path("manifests"), 0o755); err != nil {
		return err
	}
	// The same KubeletConfiguration kedge writes, so both kubelets run
	// with the same settings.
	if err := kubelet.WriteConfig(b.path("kubelet-config.yaml"), kubelet.ConfigData{
		ClientCAFile: f.ClientCACert, TLSCertFile: filepath.Join(tls, "kubelet.crt"), TLSKeyFile: filepath.Join(tls, "kubelet.key"),
		CgroupDriver: driver, CgroupV1: !facts.CgroupV2, ClusterDNS: clusterDNS, ClusterDomain: "cluster.local",
		RuntimeEndpoint: "unix://" + b.socket(), StaticPodPath: b.path("manifests"), ResolvConf: "/etc/resolv.conf",
		HealthzPort: 10248, Port: 10250,
	}); err != nil {
		return err
	}
	return b.preloadImages(ctx)
}

// preloadImages imports the pause, CoreDNS and test images into
// containerd, started just for that and stopped again.
func (b *baselineSystem) preloadImages(ctx context.Context) error {
	ctrd, err := b.startContainerd()
	if err != nil {
		return err
	}
	defer stopProcs(30*time.Second, ctrd)
	for deadline := time.Now().Add(time.Minute); ; {
		if _, err := os.Stat(b.socket()); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd socket %s did not appear", b.socket())
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	archives := []string{filepath.Join(b.spec.ImagesDir, "hello-v1.tar")}
	for _, name := range []string{"pause.tar", "coredns.tar"} {
		data, ok := payload.Image(name)
		if !ok {
			return fmt.Errorf("image %s is not in this build (run scripts/build first)", name)
		}
		p := b.path(name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return err
		}
		archives = append(archives, p)
	}
	for _, a := range archives {
		out, err := exec.CommandContext(ctx, b.spec.Kedge, "ctr", "--address", b.socket(), "-n", "k8s.io", "images", "import", a).CombinedOutput()
		if err != nil {
			return fmt.Errorf("import %s: %v: %s", a, err, out)
		}
	}
	return nil
}

func (b *baselineSystem) startContainerd() (*exec.Cmd, error) {
	env := cleanEnv("PATH=" + b.bin + ":" + os.Getenv("PATH"))
	return startProc("containerd", b.path("logs", "containerd.log"), env, b.exe("containerd"),
		"--config", b.path("etc", "containerd", "config.toml"))
}

// start starts every component at once, as systemd and the kubelet's
// static pods would; each retries until what it needs is up.
func (b *baselineSystem) start() error {
	f := b.files
	kc := func(n string) string { return b.path("kubeconfigs", n) }
	issuer := "https://kubernetes.default.svc.cluster.local"
	procs := []struct {
		name string
		args []string
	}{
		{"etcd", []string{"--name", nodeName, "--data-dir", b.path("etcd"),
			"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
			"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
			"--initial-cluster", nodeName + "=http://127.0.0.1:2380", "--listen-metrics-urls", "http://127.0.0.1:2381",
			"--snapshot-count", "10000"}},
		{"containerd", nil},
		// kubeadm's kube-apiserver flags.
		{"kube-apiserver", []string{"--advertise-address", nodeIP, "--allow-privileged=true",
			"--authorization-mode", "Node,RBAC", "--client-ca-file", f.ClientCACert,
			"--enable-admission-plugins", "NodeRestriction", "--enable-bootstrap-token-auth=true",
			"--etcd-servers", "http://127.0.0.1:2379",
			"--kubelet-client-certificate", f.APIServerKubeletCert, "--kubelet-client-key", f.APIServerKubeletKey,
			"--kubelet-preferred-address-types", "InternalIP,ExternalIP,Hostname",
			"--proxy-client-cert-file", f.AuthProxyCert, "--proxy-client-key-file", f.AuthProxyKey,
			"--requestheader-allowed-names", "system:auth-proxy", "--requestheader-client-ca-file", f.RequestHeaderCACert,
			"--requestheader-extra-headers-prefix", "X-Remote-Extra-", "--requestheader-group-headers", "X-Remote-Group",
			"--requestheader-username-headers", "X-Remote-User", "--secure-port", "6443",
			"--service-account-issuer", issuer, "--service-account-key-file", f.ServiceAccountKey,
			"--service-account-signing-key-file", f.ServiceAccountKey, "--service-cluster-ip-range", serviceCIDR,
			"--tls-cert-file", f.ServingCert, "--tls-private-key-file", f.ServingKey}},
		// kubeadm's kube-controller-manager flags (leader election on).
		{"kube-controller-manager", []string{"--allocate-node-cidrs=true",
			"--authentication-kubeconfig", kc("controller-manager.conf"), "--authorization-kubeconfig", kc("controller-manager.conf"),
			"--bind-address", "127.0.0.1", "--client-ca-file", f.ClientCACert, "--cluster-cidr", clusterCIDR,
			"--cluster-name", "kubernetes", "--cluster-signing-cert-file", f.ClientCACert, "--cluster-signing-key-file", f.ClientCAKey,
			"--controllers", "*,bootstrapsigner,tokencleaner", "--kubeconfig", kc("controller-manager.conf"),
			"--leader-elect=true", "--requestheader-client-ca-file", f.RequestHeaderCACert, "--root-ca-file", f.ServerCACert,
			"--service-account-private-key-file", f.ServiceAccountKey, "--service-cluster-ip-range", serviceCIDR,
			"--use-service-account-credentials=true"}},
		// kubeadm's kube-scheduler flags.
		{"kube-scheduler", []string{"--authentication-kubeconfig", kc("scheduler.conf"),
			"--authorization-kubeconfig", kc("scheduler.conf"), "--bind-address", "127.0.0.1",
			"--kubeconfig", kc("scheduler.conf"), "--leader-elect=true"}},
		{"kubelet", []string{"--config", b.path("kubelet-config.yaml"), "--kubeconfig", kc("kubelet.conf"),
			"--hostname-override", nodeName, "--node-ip", nodeIP, "--root-dir", b.path("kubelet"),
			"--cgroup-root", b.spec.CgroupRoot, "--max-pods", "250"}},
		// kube-proxy as kubeadm's DaemonSet runs it, but as a process: there
		// is no kube-proxy image here. Same flags as kedge's in-process one.
		{"kube-proxy", []string{"--kubeconfig", kc("kube-proxy.conf"), "--hostname-override", nodeName,
			"--cluster-cidr", clusterCIDR, "--proxy-mode", "iptables",
			"--healthz-bind-address", "127.0.0.1:10256", "--metrics-bind-address", "127.0.0.1:10249",
			"--conntrack-max-per-core", "0", "--conntrack-tcp-timeout-established", "0s", "--conntrack-tcp-timeout-close-wait", "0s"}},
	}
	for _, p := range procs {
		if controlPlaneOnly(b.spec.Variant) && (p.name == "containerd" || p.name == "kubelet" || p.name == "kube-proxy") {
			continue // the control plane alone
		}
		var cmd *exec.Cmd
		var err error
		if p.name == "containerd" {
			cmd, err = b.startContainerd()
		} else {
			cmd, err = startProc(p.name, b.path("logs", p.name+".log"), cleanEnv(), b.exe(p.name), p.args...)
		}
		if err != nil {
			return err
		}
		b.cmds = append(b.cmds, cmd)
		b.names = append(b.names, p.name)
	}
	return nil
}

// afterReady applies CoreDNS, as kubeadm's addon phase does once the
// control plane is up: kedge's manifest, rendered with the same values.
func (b *baselineSystem) afterReady(ctx context.Context) error {
	text, err := manifests.FS.ReadFile("coredns.yaml")
	if err != nil {
		return err
	}
	tmpl, err := template.New("coredns").Option("missingkey=error").Parse(string(text))
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, addons.Values{ClusterDNS: clusterDNS, ClusterDomain: "cluster.local", CoreDNSImage: corednsImage}); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, b.spec.Kubectl, "kubectl", "--kubeconfig", b.kubeconfig(), "apply", "-f", "-")
	if filepath.Base(b.spec.Kubectl) == "kubectl" {
		cmd.Args = append(cmd.Args[:1], cmd.Args[2:]...)
	}
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apply CoreDNS: %v: %s", err, out)
	}
	return nil
}

func (b *baselineSystem) processes() []proc {
	var ps []proc
	for i, c := range b.cmds {
		ps = append(ps, proc{b.names[i], c.Process.Pid})
	}
	return ps
}

// stop stops the components in reverse order of their dependencies.
func (b *baselineSystem) stop() {
	for i := len(b.cmds) - 1; i >= 0; i-- {
		stopProcs(30*time.Second, b.cmds[i])
	}
}

func (b *baselineSystem) logs() []string {
	var l []string
	for _, n := range b.names {
		l = append(l, b.path("logs", n+".log"))
	}
	return l
}
