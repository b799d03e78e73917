// Package kubelet runs the upstream kubelet in-process, configured by a
// KubeletConfiguration file kedge renders; the user's --kubelet-arg flags
// take precedence over the file, as with a stock kubelet.
package kubelet

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	cliflag "k8s.io/component-base/cli/flag"
	"k8s.io/kubernetes/cmd/kubelet/app"
	"k8s.io/kubernetes/cmd/kubelet/app/options"
	kubeletvalidation "k8s.io/kubernetes/pkg/kubelet/apis/config/validation"
	"k8s.io/kubernetes/pkg/kubelet/kubeletconfig/configfiles"
	utilfs "k8s.io/kubernetes/pkg/util/filesystem"

	"github.com/kedge-dev/kedge/pkg/component"
	"github.com/kedge-dev/kedge/pkg/controlplane"
)

// Kubelet is the kubelet component.
type Kubelet struct {
	// ConfigFile is the rendered KubeletConfiguration.
	ConfigFile string
	// Args are kubelet flags (kedge's, then the user's --kubelet-arg).
	Args controlplane.Args
	// HealthzURL is the kubelet's healthz endpoint, probed for readiness.
	HealthzURL string
	Log        *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}
}

func (k *Kubelet) Name() string { return "kubelet" }

// Build parses flags and the config file into a KubeletServer, reporting
// errors in the user's terms; it starts nothing.
func Build(configFile string, args controlplane.Args) (*options.KubeletServer, error) {
	loader, err := configfiles.NewFsLoader(&utilfs.DefaultFs{}, configFile)
	if err != nil {
		return nil, fmt.Errorf("kubelet config %s: %w", configFile, err)
	}
	kc, err := loader.Load(context.Background())
	if err != nil {
		return nil, fmt.Errorf("kubelet config %s: %w", configFile, err)
	}
	kf := options.NewKubeletFlags()
	fs := pflag.NewFlagSet("kubelet", pflag.ContinueOnError)
	fs.SetNormalizeFunc(cliflag.WordSepNormalizeFunc)
	kf.AddFlags(fs)
	// Bound to the loaded file: flags given override its values.
	options.AddKubeletConfigFlags(fs, kc)
	fs.SetOutput(nopWriter{})
	if err := fs.Parse(args.List()); err != nil {
		return nil, fmt.Errorf("kubelet flags (set with --kubelet-arg): %w", err)
	}
	if err := utilfeature.DefaultMutableFeatureGate.SetFromMap(kc.FeatureGates); err != nil {
		return nil, fmt.Errorf("kubelet feature gates: %w", err)
	}
	if err := options.ValidateKubeletFlags(kf); err != nil {
		return nil, fmt.Errorf("kubelet flags (set with --kubelet-arg or --node-label): %w", err)
	}
	if err := kubeletvalidation.ValidateKubeletConfiguration(kc, utilfeature.DefaultFeatureGate); err != nil {
		return nil, fmt.Errorf("kubelet configuration: %w", err)
	}
	return &options.KubeletServer{KubeletFlags: *kf, KubeletConfiguration: *kc}, nil
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

func (k *Kubelet) Start(ctx context.Context) error {
	s, err := Build(k.ConfigFile, k.Args)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.RootDirectory, 0o700); err != nil {
		return fmt.Errorf("kubelet root dir %s: %w", s.RootDirectory, err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	deps, err := app.UnsecuredDependencies(runCtx, s, utilfeature.DefaultFeatureGate)
	if err != nil {
		cancel()
		return fmt.Errorf("kubelet dependencies: %w", err)
	}
	k.cancel, k.done = cancel, make(chan struct{})
	go func() {
		defer close(k.done)
		err := app.Run(runCtx, s, deps, utilfeature.DefaultFeatureGate)
		if runCtx.Err() == nil {
			component.Fail(ctx, fmt.Errorf("kubelet exited: %w", err))
		}
	}()
	return nil
}

func (k *Kubelet) Ready(ctx context.Context) error {
	probe := controlplane.ProbeClient{BaseURL: strings.TrimSuffix(k.HealthzURL, "/healthz"), Client: plainHTTP}
	return probe.Get(ctx, "/healthz")
}

func (k *Kubelet) Stop() error {
	if k.cancel == nil {
		return nil
	}
	k.cancel()
	// The kubelet has no complete shutdown path in-process; containers keep
	// running (as with a stopped upstream kubelet), and kedge is exiting.
	return nil
}

// RootDir is where the kubelet keeps pod volumes, given the data dir.
func RootDir(dataDir string) string { return filepath.Join(dataDir, "agent", "kubelet") }
