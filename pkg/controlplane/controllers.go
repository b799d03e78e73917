package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"k8s.io/component-base/configz"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	schedapp "k8s.io/kubernetes/cmd/kube-scheduler/app"

	"github.com/kedge-dev/kedge/pkg/component"
)

// ControllerManager runs kube-controller-manager in-process. Its health
// endpoint serves on a loopback listener kedge opened on a free port, so
// nothing else on the host can collide with it.
type ControllerManager struct {
	Args Args
	Log  *slog.Logger

	probe  ProbeClient
	cancel context.CancelFunc
	done   chan struct{}
}

func (c *ControllerManager) Name() string { return "kube-controller-manager" }

func (c *ControllerManager) Start(ctx context.Context) error {
	fs, s, err := newControllerManagerFlags()
	if err != nil {
		return err
	}
	known, disabled, aliases := kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases()
	if err := parseInto(fs, "kube-controller-manager", "kube-controller-manager-arg", c.Args); err != nil {
		return err
	}
	if err := s.ComponentGlobalsRegistry.Set(); err != nil {
		return fmt.Errorf("kube-controller-manager feature gates: %w", err)
	}
	ln, probe, err := loopbackHealth()
	if err != nil {
		return fmt.Errorf("kube-controller-manager: %w", err)
	}
	s.SecureServing.Listener = ln
	runCtx, cancel := context.WithCancel(context.Background())
	cfg, err := s.Config(runCtx, known, disabled, aliases)
	if err != nil {
		cancel()
		ln.Close()
		return fmt.Errorf("kube-controller-manager (set with --kube-controller-manager-arg): %w", err)
	}
	c.probe, c.cancel, c.done = probe, cancel, make(chan struct{})
	go func() {
		defer close(c.done)
		if cfg.ComponentConfig.KubeCloudShared.UseServiceAccountCredentials {
			// Only a head start: the controller manager creates any
			// account still missing itself.
			if err := controllerAccounts(runCtx, cfg.Client); err != nil {
				c.Log.Warn("could not create the controllers' service accounts ahead", "err", err)
			}
		}
		err := kcmapp.Run(runCtx, cfg.Complete())
		if runCtx.Err() == nil {
			component.Fail(ctx, fmt.Errorf("kube-controller-manager exited: %w", err))
		}
	}()
	return nil
}

func (c *ControllerManager) Ready(ctx context.Context) error { return c.probe.Get(ctx, "/healthz") }

// Stop stops it and frees its /configz name, so that it can start again
// in this process (a server that lost its Lease and won it back).
func (c *ControllerManager) Stop() error {
	err := stopAndWait(c.cancel, c.done)
	configz.Delete(kcmapp.ConfigzName)
	return err
}

// Scheduler runs kube-scheduler in-process.
type Scheduler struct {
	Args Args
	Log  *slog.Logger

	probe  ProbeClient
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *Scheduler) Name() string { return "kube-scheduler" }

func (s *Scheduler) Start(ctx context.Context) error {
	fs, opts := newSchedulerFlags()
	if err := parseInto(fs, "kube-scheduler", "kube-scheduler-arg", s.Args); err != nil {
		return err
	}
	if err := opts.ComponentGlobalsRegistry.Set(); err != nil {
		return fmt.Errorf("kube-scheduler feature gates: %w", err)
	}
	ln, probe, err := loopbackHealth()
	if err != nil {
		return fmt.Errorf("kube-scheduler: %w", err)
	}
	opts.SecureServing.Listener = ln
	runCtx, cancel := context.WithCancel(context.Background())
	cc, sched, err := schedapp.Setup(runCtx, opts)
	if err != nil {
		cancel()
		ln.Close()
		return fmt.Errorf("kube-scheduler (set with --kube-scheduler-arg): %w", err)
	}
	s.probe, s.cancel, s.done = probe, cancel, make(chan struct{})
	go func() {
		defer close(s.done)
		err := schedapp.Run(runCtx, cc, sched)
		if runCtx.Err() == nil {
			component.Fail(ctx, fmt.Errorf("kube-scheduler exited: %w", err))
		}
	}()
	return nil
}

func (s *Scheduler) Ready(ctx context.Context) error { return s.probe.Get(ctx, "/healthz") }

// Stop stops it and frees its /configz name, as the controller
// manager's Stop does.
func (s *Scheduler) Stop() error {
	err := stopAndWait(s.cancel, s.done)
	configz.Delete("componentconfig")
	return err
}

// loopbackHealth opens a listener on a free loopback port for a
// component's secure port, and a probe for its (self-signed) health path.
func loopbackHealth() (net.Listener, ProbeClient, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, ProbeClient{}, fmt.Errorf("listen on loopback: %w", err)
	}
	probe, err := NewProbeClient("https://"+ln.Addr().String(), "", "", "")
	if err != nil {
		ln.Close()
		return nil, ProbeClient{}, err
	}
	return ln, probe, nil
}
