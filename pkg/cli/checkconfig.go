package cli

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kedge-dev/kedge/pkg/config"
	"github.com/kedge-dev/kedge/pkg/kernel"
)

func newCheckConfigCommand(out io.Writer) *cobra.Command {
	var backend string
	var noPolicy bool
	cmd := &cobra.Command{
		Use:   "check-config [KERNEL-CONFIG]",
		Short: "Check that this kernel has what a kedge node needs, without starting anything",
		Long: `check-config reads the kernel's build configuration (/proc/config.gz or
/boot/config-<release>; or KERNEL-CONFIG, or $` + kernel.ConfigEnv + `) and lists
each feature a kedge node needs: namespaces, cgroups, overlayfs, bridge,
veth, netfilter and the iptables matches kube-proxy uses, the netlink
queue and iptables parts NetworkPolicy enforcement uses (unless
--disable-network-policy), VXLAN for --flannel-backend vxlan and WireGuard
for --flannel-backend wireguard-native. A feature built as a module counts when the
module is loaded or installed under /lib/modules.

kedge server and kedge agent run the same check before they write or
start anything, and stop with the names of what is missing. It exits 1
when something is missing; "unknown" (no configuration to read) does not
fail.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !slices.Contains(config.FlannelBackends, backend) {
				return fmt.Errorf("--flannel-backend: %q is not one of %s", backend, strings.Join(config.FlannelBackends, ", "))
			}
			c := kernel.Checker{}
			if len(args) == 1 {
				c.Config = args[0]
			}
			r, err := c.Check(kernel.Needed(backend, !noPolicy))
			if err != nil {
				return err
			}
			r.Write(out)
			return r.Err()
		},
	}
	cmd.Flags().StringVar(&backend, "flannel-backend", "vxlan", "the pod network backend to check for: "+strings.Join(config.FlannelBackends, ", "))
	cmd.Flags().BoolVar(&noPolicy, "disable-network-policy", false, "leave out what NetworkPolicy enforcement needs")
	return cmd
}
