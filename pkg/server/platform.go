package server

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/rest"

	"github.com/kedge-dev/kedge/manifests"
	"github.com/kedge-dev/kedge/pkg/addons"
	"github.com/kedge-dev/kedge/pkg/agent"
	"github.com/kedge-dev/kedge/pkg/autonomy"
	"github.com/kedge-dev/kedge/pkg/component"
	"github.com/kedge-dev/kedge/pkg/config"
	"github.com/kedge-dev/kedge/pkg/controller"
	"github.com/kedge-dev/kedge/pkg/datadir"
	"github.com/kedge-dev/kedge/pkg/helmchart"
	"github.com/kedge-dev/kedge/pkg/ingress"
	"github.com/kedge-dev/kedge/pkg/join"
	"github.com/kedge-dev/kedge/pkg/leader"
	"github.com/kedge-dev/kedge/pkg/metricsserver"
	"github.com/kedge-dev/kedge/pkg/pki"
	"github.com/kedge-dev/kedge/pkg/servicelb"
)

// serverPlatform is what a server runs besides the control plane, in
// three parts the server puts around its own node's components.
type serverPlatform struct {
	// informers are the shared informers, first.
	informers component.Component
	// nodeRBAC applies the RBAC of the node's own components
	// (manifests/rbac.yaml and local-storage.yaml) before the node starts,
	// so the node need not wait for the add-on deployer.
	nodeRBAC component.Component
	// controllers are the cluster-wide controllers (add-on deployer,
	// servicelb, HelmChart, ingress), which run on one server at a time
	// when there can be several, then metrics-server (on every server):
	// none of them is on the node's way to Ready.
	controllers []component.Component
}

// platform makes the server's platform.
func platform(cfg config.Config, layout datadir.Layout, f pki.Files, supervisor *rest.Config, apiURL string, apiserver *lazyAPIServer, advertise string, ha bool, log *slog.Logger) (serverPlatform, error) {
	disabled := map[string]bool{}
	for _, a := range config.KnownAddons {
		disabled[a] = cfg.Disabled(a)
	}
	ca, err := os.ReadFile(f.ServerCACert)
	if err != nil {
		return serverPlatform{}, err
	}
	shared, err := controller.NewInformers(supervisor)
	if err != nil {
		return serverPlatform{}, err
	}
	values := addons.Values{
		ClusterDNS:     cfg.ClusterDNSIP(),
		ClusterDomain:  cfg.ClusterDomain,
		CoreDNSImage:   config.CoreDNSImage,
		ServerCABundle: base64.StdEncoding.EncodeToString(ca),
		TraefikImage:   config.TraefikImage,
	}
	// metrics-server comes last: it needs the RBAC the add-on deployer
	// applies.
	var metrics []component.Component
	if !disabled["metrics-server"] {
		ms, err := newMetricsServer(layout, f, apiURL, log.With("component", "metrics-server"))
		if err != nil {
			return serverPlatform{}, err
		}
		apiserver.LocalServices = map[string]*url.URL{metricsserver.Namespace + "/" + metricsserver.ServiceName: ms.URL()}
		metrics = append(metrics, ms)
	}
	// The node's components need their RBAC before it starts: flannel's,
	// servicelb's (rbac.yaml), the storage provisioner's.
	nodeFiles := []string{"rbac.yaml"}
	if !disabled["local-storage"] {
		nodeFiles = append(nodeFiles, "local-storage.yaml")
	}
	plat := serverPlatform{
		informers: shared.Component("informers"),
		nodeRBAC:  &addons.Prerequisite{Config: supervisor, Embedded: manifests.FS, Files: nodeFiles, Values: values, Log: log.With("component", "addons")},
	}
	traefik, err := addons.Render(manifests.FS, "ingress/traefik.yaml", values)
	if err != nil {
		return serverPlatform{}, err
	}
	applier, err := addons.NewApplier(supervisor, log.With("component", "ingress"))
	if err != nil {
		return serverPlatform{}, err
	}
	clusterWide := []component.Component{
		&addons.Deployer{
			Config:   supervisor,
			Embedded: manifests.FS,
			Values:   values,
			Disabled: disabled,
			UserDir:  layout.ManifestsDir(),
			Interval: 30 * time.Second,
			Log:      log.With("component", "addons"),
		},
		&join.PasswordCleaner{Informers: shared, Log: log.With("component", "join")},
		&autonomy.Controller{Informers: shared, Log: log.With("component", "autonomy")},
		&servicelb.Controller{
			Config:   supervisor,
			Identity: agent.NodeName(cfg),
			Disabled: disabled["servicelb"],
			Log:      log.With("component", "servicelb"),
		},
	}
	if !cfg.DisableHelmController {
		clusterWide = append(clusterWide, &helmchart.Controller{
			Informers:  shared,
			Kubeconfig: credPath(layout, "supervisor"),
			StaticDir:  layout.StaticChartsDir(),
			HelmHome:   filepath.Join(layout.Root, "helm"),
			APIHost:    net.JoinHostPort(advertise, strconv.Itoa(cfg.HTTPSListenPort)),
			ServerCA:   f.ServerCACert,
			Log:        log.With("component", "helm-controller"),
		})
	}
	clusterWide = append(clusterWide, &ingress.Controller{
		Informers: shared,
		Applier:   applier,
		Manifest:  traefik,
		Image:     config.TraefikImage,
		Disabled:  disabled["ingress"],
		Log:       log.With("component", "ingress"),
	})
	if ha {
		clusterWide = []component.Component{&leader.Elected{
			Config:     supervisor,
			Lease:      "kedge-controllers",
			Identity:   agent.NodeName(cfg),
			Components: clusterWide,
			Log:        log.With("component", "leader"),
		}}
	}
	plat.controllers = append(clusterWide, metrics...)
	return plat, nil
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
