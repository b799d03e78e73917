// Package server is the composition root of the server role: it prepares
// the data dir, PKI, token and kubeconfigs, then lists the components in
// start order and hands them to the runner.
package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	utilnet "k8s.io/apimachinery/pkg/util/net"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/kedge-dev/kedge/manifests"
	"github.com/kedge-dev/kedge/pkg/addons"
	"github.com/kedge-dev/kedge/pkg/agent"
	"github.com/kedge-dev/kedge/pkg/component"
	"github.com/kedge-dev/kedge/pkg/config"
	"github.com/kedge-dev/kedge/pkg/controller"
	"github.com/kedge-dev/kedge/pkg/controlplane"
	"github.com/kedge-dev/kedge/pkg/datadir"
	"github.com/kedge-dev/kedge/pkg/datastore"
	"github.com/kedge-dev/kedge/pkg/frontend"
	"github.com/kedge-dev/kedge/pkg/helmchart"
	"github.com/kedge-dev/kedge/pkg/ingress"
	"github.com/kedge-dev/kedge/pkg/join"
	"github.com/kedge-dev/kedge/pkg/metricsserver"
	"github.com/kedge-dev/kedge/pkg/pki"
	"github.com/kedge-dev/kedge/pkg/sdnotify"
	"github.com/kedge-dev/kedge/pkg/servicelb"
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
	defer ln.Close()

	if err := controlplane.CheckUserArgs(cfg); err != nil {
		return err
	}
	if cfg.DatastoreEndpoint == "" {
		if err := datastore.CheckSQLiteFile(layout.DBFile()); err != nil {
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
	hostname, _ := os.Hostname()
	sans := append([]string{advertise.String()}, cfg.TLSSAN...)
	tlsFiles, err := pki.Ensure(pki.Options{
		Dir:           layout.TLSDir(),
		Hostname:      hostname,
		SANs:          sans,
		ServiceIP:     cfg.ServiceIP(),
		ClusterDomain: cfg.ClusterDomain,
	})
	if err != nil {
		return fmt.Errorf("certificates in %s: %w", layout.TLSDir(), err)
	}
	caHash, err := pki.CAHash(tlsFiles.ServerCACert)
	if err != nil {
		return err
	}
	token, err := join.EnsureServerToken(layout.TokenFile(), caHash, cfg.Token)
	if err != nil {
		return err
	}

	apiURL := "https://" + net.JoinHostPort(loopbackFor(cfg.BindAddress), strconv.Itoa(cfg.HTTPSListenPort))
	kubeconfigs := map[string]pki.Kubeconfig{
		"controller": {Server: apiURL, CACert: tlsFiles.ServerCACert, CertFile: tlsFiles.ControllerCert, KeyFile: tlsFiles.ControllerKey},
		"scheduler":  {Server: apiURL, CACert: tlsFiles.ServerCACert, CertFile: tlsFiles.SchedulerCert, KeyFile: tlsFiles.SchedulerKey},
		"supervisor": {Server: apiURL, CACert: tlsFiles.ServerCACert, CertFile: tlsFiles.SupervisorCert, KeyFile: tlsFiles.SupervisorKey},
	}
	for name, k := range kubeconfigs {
		if err := pki.WriteKubeconfig(credPath(layout, name), 0o600, k); err != nil {
			return err
		}
	}
	mode, _ := cfg.KubeconfigMode()
	admin := pki.Kubeconfig{Server: apiURL, CACert: tlsFiles.ServerCACert, CertFile: tlsFiles.AdminCert, KeyFile: tlsFiles.AdminKey, Embed: true}
	if err := pki.WriteKubeconfig(cfg.WriteKubeconfig, mode, admin); err != nil {
		return fmt.Errorf("--write-kubeconfig: %w", err)
	}

	kine := datastore.New(datastore.Options{
		Endpoint: cfg.DatastoreEndpoint,
		DBFile:   layout.DBFile(),
		Socket:   layout.KineSocket(),
		Log:      log.With("component", "kine"),
	})
	probe, err := controlplane.NewProbeClient(apiURL, tlsFiles.ServerCACert, tlsFiles.SupervisorCert, tlsFiles.SupervisorKey)
	if err != nil {
		return err
	}
	params := controlplane.Params{
		Config:               cfg,
		TLS:                  tlsFiles,
		AdvertiseAddress:     advertise.String(),
		ControllerKubeconfig: credPath(layout, "controller"),
		SchedulerKubeconfig:  credPath(layout, "scheduler"),
	}
	// The apiserver's flags need kine's endpoints, known once it started.
	apiserver := &lazyAPIServer{
		APIServer: controlplane.APIServer{
			Listener: ln,
			Wrap:     frontend.Wrap(frontend.Options{ServerCAFile: tlsFiles.ServerCACert, Join: &join.Signer{Token: token, TLS: tlsFiles}, StaticDir: filepath.Dir(layout.StaticChartsDir())}),
			Probe:    probe,
			Log:      log.With("component", "kube-apiserver"),
		},
		params: params,
		kine:   kine,
	}
	kcmArgs, err := controlplane.ControllerManagerArgs(params)
	if err != nil {
		return fmt.Errorf("--kube-controller-manager-arg: %w", err)
	}
	schedArgs, err := controlplane.SchedulerArgs(params)
	if err != nil {
		return fmt.Errorf("--kube-scheduler-arg: %w", err)
	}
	supervisor, err := clientcmd.BuildConfigFromFlags("", credPath(layout, "supervisor"))
	if err != nil {
		return err
	}
	disabled := map[string]bool{}
	for _, a := range config.KnownAddons {
		disabled[a] = cfg.Disabled(a)
	}
	ca, err := os.ReadFile(tlsFiles.ServerCACert)
	if err != nil {
		return err
	}
	shared, err := controller.NewInformers(supervisor)
	if err != nil {
		return err
	}
	addonValues := addons.Values{
		ClusterDNS:     cfg.ClusterDNS,
		ClusterDomain:  cfg.ClusterDomain,
		CoreDNSImage:   config.CoreDNSImage,
		ServerCABundle: base64.StdEncoding.EncodeToString(ca),
		TraefikImage:   config.TraefikImage,
	}
	platform := []component.Component{
		shared.Component("informers"),
		&addons.Deployer{
			Config:   supervisor,
			Embedded: manifests.FS,
			Values:   addonValues,
			Disabled: disabled,
			UserDir:  layout.ManifestsDir(),
			Interval: 30 * time.Second,
			Log:      log.With("component", "addons"),
		},
		&servicelb.Controller{
			Config:   supervisor,
			Identity: agent.NodeName(cfg),
			Disabled: disabled["servicelb"],
			Log:      log.With("component", "servicelb"),
		},
	}
	if !disabled["metrics-server"] {
		ms, err := newMetricsServer(layout, tlsFiles, apiURL, log.With("component", "metrics-server"))
		if err != nil {
			return err
		}
		apiserver.LocalServices = map[string]*url.URL{metricsserver.Namespace + "/" + metricsserver.ServiceName: ms.URL()}
		platform = append(platform, ms)
	}
	if !cfg.DisableHelmController {
		platform = append(platform, &helmchart.Controller{
			Informers:  shared,
			Kubeconfig: credPath(layout, "supervisor"),
			StaticDir:  layout.StaticChartsDir(),
			HelmHome:   filepath.Join(layout.Server(), "helm"),
			APIHost:    net.JoinHostPort(advertise.String(), strconv.Itoa(cfg.HTTPSListenPort)),
			ServerCA:   tlsFiles.ServerCACert,
			Log:        log.With("component", "helm-controller"),
		})
	}
	traefik, err := addons.Render(manifests.FS, "ingress/traefik.yaml", addonValues)
	if err != nil {
		return err
	}
	applier, err := addons.NewApplier(supervisor, log.With("component", "ingress"))
	if err != nil {
		return err
	}
	platform = append(platform, &ingress.Controller{
		Informers: shared,
		Applier:   applier,
		Manifest:  traefik,
		Image:     config.TraefikImage,
		Disabled:  disabled["ingress"],
		Log:       log.With("component", "ingress"),
	})
	components := append([]component.Component{
		kine,
		apiserver,
		&controlplane.ControllerManager{Args: kcmArgs, Log: log.With("component", "kube-controller-manager")},
		&controlplane.Scheduler{Args: schedArgs, Log: log.With("component", "kube-scheduler")},
	}, platform...)
	if !cfg.DisableAgent {
		node, err := agent.Components(agent.Options{
			Config:    cfg,
			ServerURL: apiURL,
			Creds:     agent.LocalCredentials(tlsFiles, agent.NodeName(cfg)),
			Log:       log,
		})
		if err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		components = append(components, node...)
	}

	return component.NewRunner(log).Run(ctx, components, func() {
		log.Info("kedge server is ready",
			"api", "https://"+net.JoinHostPort(advertise.String(), strconv.Itoa(cfg.HTTPSListenPort)),
			"kubeconfig", cfg.WriteKubeconfig,
			"took", time.Since(begin).Round(time.Millisecond))
		sdnotify.ReadyUntil(ctx, log)
	})
}

// lazyAPIServer renders the apiserver's flags at Start, after kine.
type lazyAPIServer struct {
	controlplane.APIServer
	params controlplane.Params
	kine   *datastore.Kine
}

func (l *lazyAPIServer) Start(ctx context.Context) error {
	l.params.EtcdEndpoints = l.kine.Endpoints()
	args, err := controlplane.APIServerArgs(l.params)
	if err != nil {
		return fmt.Errorf("--kube-apiserver-arg: %w", err)
	}
	l.Args = args
	return l.APIServer.Start(ctx)
}

// newMetricsServer gives metrics-server its serving certificate and
// identity, and opens its loopback listener.
func newMetricsServer(layout datadir.Layout, f pki.Files, apiURL string, log *slog.Logger) (*metricsserver.Server, error) {
	tls := layout.TLSDir()
	cert, key := filepath.Join(tls, "serving-metrics-server.crt"), filepath.Join(tls, "serving-metrics-server.key")
	if err := pki.IssueServingCert(f.ServerCACert, f.ServerCAKey, cert, key, metricsserver.ServiceHost, []string{metricsserver.ServiceHost, "127.0.0.1"}); err != nil {
		return nil, fmt.Errorf("metrics-server serving certificate: %w", err)
	}
	ccert, ckey := filepath.Join(tls, "client-metrics-server.crt"), filepath.Join(tls, "client-metrics-server.key")
	if err := pki.IssueClientCert(f.ClientCACert, f.ClientCAKey, ccert, ckey, "system:kedge-metrics-server", nil); err != nil {
		return nil, fmt.Errorf("metrics-server client certificate: %w", err)
	}
	kc := credPath(layout, "metrics-server")
	if err := pki.WriteKubeconfig(kc, 0o600, pki.Kubeconfig{Server: apiURL, CACert: f.ServerCACert, CertFile: ccert, KeyFile: ckey}); err != nil {
		return nil, err
	}
	return metricsserver.New(metricsserver.Options{
		Kubeconfig:                kc,
		ServingCert:               cert,
		ServingKey:                key,
		ClientCA:                  f.ClientCACert,
		RequestHeaderCA:           f.RequestHeaderCACert,
		RequestHeaderAllowedNames: "system:auth-proxy",
		KubeletCA:                 f.ServerCACert,
		Resolution:                15 * time.Second,
	}, log)
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

// advertiseAddress is --advertise-address, else the address of the
// interface holding the default route, else loopback.
func advertiseAddress(cfg config.Config) (net.IP, error) {
	if cfg.AdvertiseAddress != "" {
		return net.ParseIP(cfg.AdvertiseAddress), nil
	}
	if ip := net.ParseIP(cfg.BindAddress); ip != nil && !ip.IsUnspecified() {
		return ip, nil
	}
	ip, err := utilnet.ResolveBindAddress(nil)
	if err != nil || ip == nil {
		return net.ParseIP("127.0.0.1"), nil
	}
	return ip, nil
}
