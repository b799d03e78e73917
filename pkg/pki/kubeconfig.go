package pki

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/kedge-dev/kedge/pkg/datadir"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Kubeconfig describes a kubeconfig for one client certificate.
type Kubeconfig struct {
	Server   string // https://127.0.0.1:6443
	CACert   string // file with the server CA
	CertFile string
	KeyFile  string
	// Embed puts the certificate data into the file (for files handed to
	// users) instead of referencing the files (for kedge's own components).
	Embed bool
}

// WriteKubeconfig writes k to path with the given mode, atomically, with
// kubectl's conventional names ("default" cluster, user and context).
func WriteKubeconfig(path string, mode os.FileMode, k Kubeconfig) error {
	cluster := clientcmdapi.NewCluster()
	cluster.Server = k.Server
	user := clientcmdapi.NewAuthInfo()
	if k.Embed {
		var err error
		if cluster.CertificateAuthorityData, err = os.ReadFile(k.CACert); err != nil {
			return fmt.Errorf("kubeconfig %s: %w", path, err)
		}
		if user.ClientCertificateData, err = os.ReadFile(k.CertFile); err != nil {
			return fmt.Errorf("kubeconfig %s: %w", path, err)
		}
		if user.ClientKeyData, err = os.ReadFile(k.KeyFile); err != nil {
			return fmt.Errorf("kubeconfig %s: %w", path, err)
		}
	} else {
		cluster.CertificateAuthority = k.CACert
		user.ClientCertificate = k.CertFile
		user.ClientKey = k.KeyFile
	}
	ctx := clientcmdapi.NewContext()
	ctx.Cluster, ctx.AuthInfo = "default", "default"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["default"] = cluster
	cfg.AuthInfos["default"] = user
	cfg.Contexts["default"] = ctx
	cfg.CurrentContext = "default"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return datadir.WriteFileAtomic(path, data, mode)
}
