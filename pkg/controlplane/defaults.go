package controlplane

import (
	"os"
	"strconv"
	"strings"

	"github.com/kedge-dev/kedge/pkg/config"
	"github.com/kedge-dev/kedge/pkg/pki"
)

// Params are what the component flags are rendered from.
type Params struct {
	Config        config.Config
	TLS           pki.Files
	EtcdEndpoints []string
	// EtcdOverrides are "group/resource#servers" stored apart.
	EtcdOverrides []string
	// EtcdTLS: the datastore is kedge's embedded etcd, reached with
	// kedge's etcd client certificate.
	EtcdTLS          bool
	AdvertiseAddress string
	// EncryptionConfig, if the file exists, encrypts Secrets at rest.
	EncryptionConfig string
	// PodSecurityConfig and AuditPolicy are from Policies.
	PodSecurityConfig, AuditPolicy string
	// Kubeconfigs of the controller-manager and the scheduler.
	ControllerKubeconfig string
	SchedulerKubeconfig  string
}

// APIServerArgs are kedge's defaults for kube-apiserver, overridden by
// --kube-apiserver-arg.
func APIServerArgs(p Params) (Args, error) {
	c := p.Config
	issuer := "https://kubernetes.default.svc." + c.ClusterDomain
	a := Args{
		"advertise-address":                p.AdvertiseAddress,
		"bind-address":                     c.BindAddress,
		"secure-port":                      strconv.Itoa(c.HTTPSListenPort),
		"allow-privileged":                 "true",
		"anonymous-auth":                   "false",
		"authorization-mode":               "Node,RBAC",
		"enable-admission-plugins":         "NodeRestriction",
		"client-ca-file":                   p.TLS.ClientCACert,
		"tls-cert-file":                    p.TLS.ServingCert,
		"tls-private-key-file":             p.TLS.ServingKey,
		"etcd-servers":                     strings.Join(p.EtcdEndpoints, ","),
		"storage-backend":                  "etcd3",
		"service-cluster-ip-range":         c.ServiceCIDR,
		"service-account-issuer":           issuer,
		"api-audiences":                    issuer,
		"service-account-key-file":         p.TLS.ServiceAccountKey,
		"service-account-signing-key-file": p.TLS.ServiceAccountKey,
		"kubelet-client-certificate":       p.TLS.APIServerKubeletCert,
		"kubelet-client-key":               p.TLS.APIServerKubeletKey,
		"kubelet-certificate-authority":    p.TLS.ServerCACert,
		// Reach kubelets by IP: a --node-name need not resolve.
		"kubelet-preferred-address-types":    "InternalIP,ExternalIP,Hostname",
		"proxy-client-cert-file":             p.TLS.AuthProxyCert,
		"proxy-client-key-file":              p.TLS.AuthProxyKey,
		"requestheader-client-ca-file":       p.TLS.RequestHeaderCACert,
		"requestheader-allowed-names":        "system:auth-proxy",
		"requestheader-username-headers":     "X-Remote-User",
		"requestheader-group-headers":        "X-Remote-Group",
		"requestheader-extra-headers-prefix": "X-Remote-Extra-",
		"enable-aggregator-routing":          "true",
		"profiling":                          "false",
		"tls-min-version":                    "VersionTLS12",
		"tls-cipher-suites":                  config.TLSCipherSuites,
		// Long-lived watches (the in-process kubelet's) would otherwise
		// hold the HTTP server's shutdown for the 60s request timeout.
		"shutdown-send-retry-after": "true",
	}
	if len(p.EtcdOverrides) > 0 {
		a["etcd-servers-overrides"] = strings.Join(p.EtcdOverrides, ",")
	}
	if p.PodSecurityConfig != "" {
		a["admission-control-config-file"] = p.PodSecurityConfig
	}
	if p.AuditPolicy != "" {
		a["audit-policy-file"] = p.AuditPolicy
		a["audit-log-path"] = c.AuditLogPath
		a["audit-log-maxage"] = "30"
		a["audit-log-maxbackup"] = "10"
		a["audit-log-maxsize"] = "100"
	}
	if p.EncryptionConfig != "" {
		if _, err := os.Stat(p.EncryptionConfig); err == nil {
			a["encryption-provider-config"] = p.EncryptionConfig
			// Key rotations apply without a restart.
			a["encryption-provider-config-automatic-reload"] = "true"
		}
	}
	if p.EtcdTLS {
		a["etcd-cafile"] = p.TLS.EtcdServerCACert
		a["etcd-certfile"] = p.TLS.EtcdClientCert
		a["etcd-keyfile"] = p.TLS.EtcdClientKey
	}
	return a, a.Override(c.KubeAPIServerArgs)
}

// ControllerManagerArgs are kedge's defaults for kube-controller-manager:
// node IPAM on, every signer backed by kedge's CAs. Its own leader
// election is off: with more than one server, kedge runs it under a Lease
// (pkg/leader), because upstream's election ends the process when it stops
// or loses the lease.
func ControllerManagerArgs(p Params) (Args, error) {
	c := p.Config
	a := Args{
		"kubeconfig":                       p.ControllerKubeconfig,
		"authentication-kubeconfig":        p.ControllerKubeconfig,
		"authorization-kubeconfig":         p.ControllerKubeconfig,
		"leader-elect":                     "false",
		"allocate-node-cidrs":              "true",
		"cluster-cidr":                     c.ClusterCIDR,
		"service-cluster-ip-range":         c.ServiceCIDR,
		"root-ca-file":                     p.TLS.ServerCACert,
		"service-account-private-key-file": p.TLS.ServiceAccountKey,
		"use-service-account-credentials":  "true",
		"kube-api-qps":                     "100",
		"kube-api-burst":                   "200",
		"cluster-signing-kube-apiserver-client-cert-file": p.TLS.ClientCASigningCert,
		"cluster-signing-kube-apiserver-client-key-file":  p.TLS.ClientCAKey,
		"cluster-signing-kubelet-client-cert-file":        p.TLS.ClientCASigningCert,
		"cluster-signing-kubelet-client-key-file":         p.TLS.ClientCAKey,
		"cluster-signing-kubelet-serving-cert-file":       p.TLS.ServerCASigningCert,
		"cluster-signing-kubelet-serving-key-file":        p.TLS.ServerCAKey,
		"cluster-signing-legacy-unknown-cert-file":        p.TLS.ServerCASigningCert,
		"cluster-signing-legacy-unknown-key-file":         p.TLS.ServerCAKey,
		"configure-cloud-routes":                          "false",
		"profiling":                                       "false",
	}
	return a, a.Override(c.KubeControllerManagerArgs)
}

// SchedulerArgs are kedge's defaults for kube-scheduler; like the
// controller manager's, its election is kedge's.
func SchedulerArgs(p Params) (Args, error) {
	a := Args{
		"kubeconfig":                p.SchedulerKubeconfig,
		"authentication-kubeconfig": p.SchedulerKubeconfig,
		"authorization-kubeconfig":  p.SchedulerKubeconfig,
		"leader-elect":              "false",
		"profiling":                 "false",
	}
	return a, a.Override(p.Config.KubeSchedulerArgs)
}
