// Package server is the composition root of the server role: it prepares
// the data dir, PKI, token and kubeconfigs, then lists the components in
// start order and hands them to the runner.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	utilnet "k8s.io/apimachinery/pkg/util/net"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/kedge-dev/kedge/pkg/agent"
	"github.com/kedge-dev/kedge/pkg/bootstrap"
	"github.com/kedge-dev/kedge/pkg/component"
	"github.com/kedge-dev/kedge/pkg/config"
	"github.com/kedge-dev/kedge/pkg/controller"
	"github.com/kedge-dev/kedge/pkg/controlplane"
	"github.com/kedge-dev/kedge/pkg/datadir"
	"github.com/kedge-dev/kedge/pkg/etcd"
	"github.com/kedge-dev/kedge/pkg/frontend"
	"github.com/kedge-dev/kedge/pkg/join"
	"github.com/kedge-dev/kedge/pkg/kernel"
	"github.com/kedge-dev/kedge/pkg/leader"
	"github.com/kedge-dev/kedge/pkg/pki"
	"github.com/kedge-dev/kedge/pkg/sdnotify"
	"github.com/kedge-dev/kedge/pkg/secretsencrypt"
)

// Run runs a server until ctx is done or a component fails.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	begin := time.Now()
	layout := datadir.Layout{Root: cfg.DataDir}

	// Claim the API port before writing anything, so a second server on
	// the same port fails at once and leaves no trace.
	addr := net.JoinHostPort(cfg.BindAddress, strconv.Itoa(cfg.HTTPSListenPort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("port %d on %s is already in use (another kedge or API server?); free it or choose another with --https-listen-port", cfg.HTTPSListenPort, cfg.BindAddress)
		}
		return fmt.Errorf("listen on %s (--bind-address, --https-listen-port): %w", addr, err)
	}
	// The apiserver serves on the listener once it runs, and closes it as
	// it stops; closing it under one that did not stop in time would make
	// it panic, so the way out closes it only when none serves on it.
	var apiserver *lazyAPIServer
	defer func() {
		if apiserver == nil || !apiserver.Serving() {
			ln.Close()
		}
	}()

	if err := controlplane.CheckUserArgs(cfg); err != nil {
		return err
	}
	if !cfg.DisableAgent {
		if err := kernel.Require(kernel.Needed(cfg.FlannelBackend, !cfg.DisableNetworkPolicy)); err != nil {
			return err
		}
	}
	st, err := planStore(cfg, layout)
	if err != nil {
		return err
	}
	if cfg.ClusterResetRestorePath != "" {
		if err := etcd.Check(cfg.ClusterResetRestorePath, log); err != nil {
			return err
		}
	}
	if err := layout.EnsureServer(); err != nil {
		return err
	}
	removePID, err := datadir.WritePIDFile(cfg.RunDir, "kedge")
	if err != nil {
		return err
	}
	defer removePID()

	advertise, err := advertiseAddress(cfg)
	if err != nil {
		return err
	}
	nodeName := agent.NodeName(cfg)
	hostname, _ := os.Hostname()
	pkiOptions := pki.Options{
		Dir:           layout.TLSDir(),
		Hostname:      hostname,
		SANs:          append([]string{advertise.String()}, cfg.TLSSAN...),
		ServiceIP:     cfg.ServiceIP(),
		ClusterDomain: cfg.ClusterDomain,
	}
	var tlsFiles pki.Files
	ensure := func() error {
		f, err := pki.Ensure(pkiOptions)
		if err != nil {
			return fmt.Errorf("certificates in %s: %w", layout.TLSDir(), err)
		}
		tlsFiles = f
		return nil
	}
	var remote *join.Remote
	if st.join {
		t, err := join.Parse(cfg.Token)
		if err != nil {
			return fmt.Errorf("--token: %w", err)
		}
		remote = &join.Remote{Server: cfg.Server, Token: t, NodeName: nodeName, Dir: filepath.Join(layout.Server(), "join"), Log: log}
	}
	if err := shareBootstrap(ctx, cfg, layout, st, remote, ensure, log); err != nil {
		return err
	}
	serverCA, err := pki.ReadCA(tlsFiles.ServerCACert)
	if err != nil {
		return err
	}
	_, tokenErr := os.Stat(layout.TokenFile())
	newCluster := os.IsNotExist(tokenErr) && !st.join && !sqliteHasData(layout.DBFile())
	if _, err := join.EnsureServerToken(layout.TokenFile(), serverCA, cfg.Token); err != nil {
		return err
	}
	if err := ensureEncryption(cfg, layout, st, newCluster, log); err != nil {
		return err
	}
	if err := join.EnsureAgentToken(layout.AgentTokenFile(), serverCA, cfg.AgentToken); err != nil {
		return err
	}
	if cfg.ClusterReset {
		return resetCluster(ctx, cfg, layout, tlsFiles, nodeName, advertise.String(), log)
	}

	apiURL := "https://" + net.JoinHostPort(loopbackFor(cfg.BindAddress), strconv.Itoa(cfg.HTTPSListenPort))
	if err := writeKubeconfigs(cfg, layout, tlsFiles, apiURL); err != nil {
		return err
	}
	ds, err := datastoreComponents(ctx, cfg, layout, st, tlsFiles, remote, nodeName, advertise.String(), log)
	if err != nil {
		return err
	}
	endpoints, etcdTLS := ds.endpoints, ds.etcdTLS
	ha := st.mode != storeSQLite
	psa, audit, err := controlplane.Policies(cfg, layout.CredDir())
	if err != nil {
		return fmt.Errorf("--pod-security-admission-config-file, --audit-log-path: %w", err)
	}
	probe, err := controlplane.NewProbeClient(apiURL, tlsFiles.ServerCACert, tlsFiles.SupervisorCert, tlsFiles.SupervisorKey)
	if err != nil {
		return err
	}
	params := controlplane.Params{
		Config:               cfg,
		TLS:                  tlsFiles,
		EtcdTLS:              etcdTLS,
		AdvertiseAddress:     advertise.String(),
		EncryptionConfig:     secretsencrypt.File(layout.Server()),
		PodSecurityConfig:    psa,
		AuditPolicy:          audit,
		ControllerKubeconfig: credPath(layout, "controller"),
		SchedulerKubeconfig:  credPath(layout, "scheduler"),
	}
	supervisor, err := clientcmd.BuildConfigFromFlags("", credPath(layout, "supervisor"))
	if err != nil {
		return err
	}
	store := &join.Store{Config: supervisor}
	auth := &join.Authenticator{ServerTokenFile: layout.TokenFile(), AgentTokenFile: layout.AgentTokenFile(), Store: store}
	joinMux := http.NewServeMux()
	joinMux.Handle(join.SignPath, &join.Signer{Auth: auth, TLS: tlsFiles, Passwords: store})
	joinMux.Handle(bootstrap.Path, &bootstrap.Handler{Auth: auth, Dir: layout.TLSDir()})
	if st.mode == storeEtcd {
		joinMux.Handle(etcd.JoinPath, &etcd.JoinHandler{Auth: auth, Client: func() (*clientv3.Client, error) {
			return etcd.NewClient(tlsFiles, endpoints())
		}})
	}
	// The apiserver's flags need the datastore's endpoints, known once it
	// started.
	apiserver = &lazyAPIServer{
		APIServer: controlplane.APIServer{
			Listener: ln,
			Wrap:     frontend.Wrap(frontend.Options{ServerCAFile: tlsFiles.ServerCACert, Join: joinMux, StaticDir: filepath.Dir(layout.StaticChartsDir())}),
			Probe:    probe,
			Log:      log.With("component", "kube-apiserver"),
		},
		params:    params,
		endpoints: endpoints,
		overrides: ds.overrides,
	}
	kcmArgs, err := controlplane.ControllerManagerArgs(params)
	if err != nil {
		return fmt.Errorf("--kube-controller-manager-arg: %w", err)
	}
	schedArgs, err := controlplane.SchedulerArgs(params)
	if err != nil {
		return fmt.Errorf("--kube-scheduler-arg: %w", err)
	}
	components := ds.components
	if ha {
		secret, err := secretsencrypt.SealSecret(tlsFiles.ServiceAccountKey)
		if err != nil {
			return err
		}
		legacy, err := secretsencrypt.SealSecret(tlsFiles.ServerCAKey)
		if err != nil {
			return err
		}
		components = append(components, &secretsencrypt.Sync{Client: func() (*clientv3.Client, error) {
			return datastoreClient(tlsFiles, endpoints(), etcdTLS)
		}, ServerDir: layout.Server(), Secret: secret, Legacy: legacy, Log: log.With("component", "secrets-encryption")})
	}
	controllers := []component.Component{
		&controlplane.ControllerManager{Args: kcmArgs, Log: log.With("component", "kube-controller-manager")},
		&controlplane.Scheduler{Args: schedArgs, Log: log.With("component", "kube-scheduler")},
	}
	if ha {
		// Upstream's own election ends the process when the component
		// stops or loses its Lease; kedge's stops and restarts it instead.
		for i, c := range controllers {
			controllers[i] = &leader.Elected{Config: supervisor, Lease: c.Name(), Identity: nodeName,
				Components: []component.Component{c}, Log: log.With("component", "leader")}
		}
	}
	plat, err := platform(cfg, layout, tlsFiles, supervisor, apiURL, apiserver, advertise.String(), ha, log)
	if err != nil {
		return err
	}
	runner := component.NewRunner(log)
	components = append(components, apiserver)
	if !cfg.DisableAgent {
		// The node's components need their RBAC before they start.
		components = append(components, plat.nodeRBAC)
	}
	// The controller manager and the scheduler come up while the rest
	// starts: the server's own node needs only node IPAM, for its lease.
	controlPlane := component.NewAhead(runner, controllers...)
	components = append(components, controlPlane)
	components = append(components, &pki.Renewer{Ensure: ensure, Dirs: []string{layout.TLSDir()}, Log: log.With("component", "certificates")})
	if !cfg.DisableAgent {
		components = append(components, &join.LocalNode{Store: store, Node: nodeName, AgentDir: layout.Agent()})
	}
	components = append(components, plat.informers)
	if st.mode == storeEtcd {
		components = append(components, etcdComponents(cfg, tlsFiles, nodeName, plat.informers, log)...)
	}
	// The server's own node comes before the cluster-wide controllers,
	// which it does not need: its way to Ready is the shortest.
	if !cfg.DisableAgent {
		// With more than one server, the server's own node reaches the
		// API through the load balancer too, so it fails over as agents
		// do; a single SQLite server has no other to fail over to.
		node, err := agent.Components(agent.Options{
			Config:      cfg,
			ServerURL:   apiURL,
			LoadBalance: ha,
			Creds:       agent.LocalCredentials(tlsFiles, nodeName),
			Log:         log,
		})
		if err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		components = append(components, node.Components...)
		// The runtime and its images need no API server: they come up
		// while the control plane starts.
		components = append([]component.Component{node.Runtime}, components...)
	}
	components = append(components, controlPlane.Joined())
	components = append(components, plat.controllers...)

	return runner.Run(ctx, components, func() {
		log.Info("kedge server is ready",
			"api", "https://"+net.JoinHostPort(advertise.String(), strconv.Itoa(cfg.HTTPSListenPort)),
			"kubeconfig", cfg.WriteKubeconfig,
			"datastore", st.describe(cfg),
			"took", time.Since(begin).Round(time.Millisecond))
		sdnotify.ReadyUntil(ctx, log)
	})
}

func (s store) describe(cfg config.Config) string {
	switch s.mode {
	case storeEtcd:
		return "embedded etcd"
	case storeExternal:
		scheme, _, _ := strings.Cut(cfg.DatastoreEndpoint, "://")
		return scheme + " (external)"
	}
	return "sqlite"
}

// ensureEncryption makes a new cluster encrypt Secrets at rest, unless
// --secrets-encryption=false.
func ensureEncryption(cfg config.Config, l datadir.Layout, st store, newCluster bool, log *slog.Logger) error {
	_, exists, err := secretsencrypt.Load(l.Server())
	if err != nil || exists {
		return err
	}
	switch {
	case newCluster && cfg.SecretsEncryption:
		// With more than one server, the first one's configuration is
		// shared (secretsencrypt.Sync) and replaces this one.
		c, err := secretsencrypt.New()
		if err != nil {
			return err
		}
		if err := secretsencrypt.Save(l.Server(), c); err != nil {
			return err
		}
		log.Info("Secrets are encrypted at rest", "config", secretsencrypt.File(l.Server()))
	case !newCluster && cfg.SecretsEncryption && st.mode == storeSQLite:
		log.Info("Secrets of this cluster are not encrypted at rest (it was made before kedge encrypted them): kedge secrets-encrypt enable, restart, then kedge secrets-encrypt reencrypt")
	}
	return nil
}

// datastoreClient is an etcd API client of the running datastore: the
// embedded etcd (with kedge's client certificate) or kine's socket.
func datastoreClient(f pki.Files, endpoints []string, etcdTLS bool) (*clientv3.Client, error) {
	if etcdTLS {
		return etcd.NewClient(f, endpoints)
	}
	return clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// writeKubeconfigs writes the control plane's and the admin's kubeconfigs.
func writeKubeconfigs(cfg config.Config, layout datadir.Layout, f pki.Files, apiURL string) error {
	kubeconfigs := map[string]pki.Kubeconfig{
		"controller": {Server: apiURL, CACert: f.ServerCACert, CertFile: f.ControllerCert, KeyFile: f.ControllerKey},
		"scheduler":  {Server: apiURL, CACert: f.ServerCACert, CertFile: f.SchedulerCert, KeyFile: f.SchedulerKey},
		"supervisor": {Server: apiURL, CACert: f.ServerCACert, CertFile: f.SupervisorCert, KeyFile: f.SupervisorKey},
	}
	for name, k := range kubeconfigs {
		if err := pki.WriteKubeconfig(credPath(layout, name), 0o600, k); err != nil {
			return err
		}
	}
	mode, _ := cfg.KubeconfigMode()
	admin := pki.Kubeconfig{Server: apiURL, CACert: f.ServerCACert, CertFile: f.AdminCert, KeyFile: f.AdminKey, Embed: true}
	if err := pki.WriteKubeconfig(cfg.WriteKubeconfig, mode, admin); err != nil {
		return fmt.Errorf("--write-kubeconfig: %w", err)
	}
	return nil
}

// etcdComponents are the embedded etcd's helpers: node labels and member
// removal, and scheduled snapshots.
func etcdComponents(cfg config.Config, f pki.Files, nodeName string, informers component.Component, log *slog.Logger) []component.Component {
	shared := informers.(*controller.InformersComponent).Informers()
	comps := []component.Component{&etcd.MemberController{Informers: shared, NodeName: nodeName, TLS: f, Log: log.With("component", "etcd")}}
	if !cfg.EtcdDisableSnapshots {
		comps = append(comps, &etcd.Snapshotter{Cron: cfg.EtcdSnapshotScheduleCron, Retention: cfg.EtcdSnapshotRetention, Dir: cfg.SnapshotDir(), Node: nodeName, TLS: f, Log: log.With("component", "etcd")})
	}
	return comps
}

// lazyAPIServer renders the apiserver's flags at Start, after the
// datastore.
type lazyAPIServer struct {
	controlplane.APIServer
	params    controlplane.Params
	endpoints func() []string
	overrides func() []string
}

func (l *lazyAPIServer) Start(ctx context.Context) error {
	l.params.EtcdEndpoints = l.endpoints()
	l.params.EtcdOverrides = l.overrides()
	args, err := controlplane.APIServerArgs(l.params)
	if err != nil {
		return fmt.Errorf("--kube-apiserver-arg: %w", err)
	}
	l.Args = args
	return l.APIServer.Start(ctx)
}

func credPath(l datadir.Layout, name string) string {
	return filepath.Join(l.CredDir(), name+".kubeconfig")
}

// loopbackFor returns the address local clients use to reach an API bound
// to bind: loopback when it listens everywhere, else the bound address.
func loopbackFor(bind string) string {
	ip := net.ParseIP(bind)
	switch {
	case ip == nil || ip.IsUnspecified() && ip.To4() != nil:
		return "127.0.0.1"
	case ip.IsUnspecified():
		return "::1"
	}
	return bind
}

// advertiseAddress is --advertise-address, else the bind address, else
// the node IP of the service CIDR's family, else the address of the
// interface holding the default route, else loopback.
func advertiseAddress(cfg config.Config) (net.IP, error) {
	if cfg.AdvertiseAddress != "" {
		return net.ParseIP(cfg.AdvertiseAddress), nil
	}
	if ip := net.ParseIP(cfg.BindAddress); ip != nil && !ip.IsUnspecified() {
		return ip, nil
	}
	// The kubernetes Service's endpoint must be of the service CIDR's
	// (first) family: the node's address of that family, if it has one.
	if services, err := config.ParseCIDRs(cfg.ServiceCIDR); err == nil && cfg.NodeIP != "" {
		ips, _ := config.ParseIPs(cfg.NodeIP)
		for _, ip := range ips {
			if ip.Is4() == services[0].Addr().Is4() {
				return net.IP(ip.AsSlice()), nil
			}
		}
	}
	ip, err := utilnet.ResolveBindAddress(nil)
	if err != nil || ip == nil {
		return net.ParseIP("127.0.0.1"), nil
	}
	return ip, nil
}
