package agent

import (
	"context"
	"log/slog"

	"github.com/kedge-dev/kedge/pkg/agent/nettools"
	"github.com/kedge-dev/kedge/pkg/netpol"
	"github.com/kedge-dev/kedge/pkg/payload"
)

// unpack extracts the payload (runc, the shim, the CNI plugins, crictl)
// and sets up the networking tools carried in it, first in the runtime's
// background start: on a fresh data dir that takes a few tenths of a
// second, which the control plane's start no longer waits for. Nothing
// before the runtime's place in the list runs these tools.
type unpack struct {
	dataDir       string
	preferBundled bool
	// removePolicies removes the NetworkPolicy chain a run with policies
	// left (--disable-network-policy), with the tools just set up.
	removePolicies bool
	log            *slog.Logger
}

func (u *unpack) Name() string { return "payload" }

func (u *unpack) Start(context.Context) error {
	binDir, err := payload.Extract(u.dataDir)
	if err != nil {
		return err
	}
	if _, err := nettools.Setup(binDir, u.preferBundled, u.log.With("component", "nettools")); err != nil {
		return err
	}
	if u.removePolicies {
		netpol.Remove() // a chain left from a run with policies would drop
	}
	return nil
}

func (u *unpack) Ready(context.Context) error { return nil }
func (u *unpack) Stop() error                 { return nil }
