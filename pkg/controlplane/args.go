// Package controlplane runs the upstream kube-apiserver,
// kube-controller-manager and kube-scheduler in-process: it renders their
// flags from kedge's config (the user's pass-through args override ours),
// starts them with a context kedge controls, and probes their health.
package controlplane

import (
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/spf13/pflag"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	kcmapp "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	schedoptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"

	"github.com/kedge-dev/kedge/pkg/config"
)

// Args holds a component's flags as key -> value; kedge's defaults are set
// first and the user's --<component>-arg values replace them.
type Args map[string]string

// Override applies "key=value" pass-through args on top of a.
func (a Args) Override(userArgs []string) error {
	for _, arg := range userArgs {
		k, v, err := config.SplitArg(arg)
		if err != nil {
			return err
		}
		a[k] = v
	}
	return nil
}

// List renders the flags as sorted "--key=value" strings.
func (a Args) List() []string {
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, fmt.Sprintf("--%s=%s", k, a[k]))
	}
	return out
}

// parseInto parses a component's flags into fs, naming the pass-through
// flag on error so the user knows where the bad value came from.
func parseInto(fs *pflag.FlagSet, component, userFlag string, args Args) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if err := fs.Parse(args.List()); err != nil {
		return fmt.Errorf("%s flags (set with --%s): %w", component, userFlag, err)
	}
	return nil
}

// CheckUserArgs parses the user's pass-through args with each component's
// own flag set, so that an unknown or malformed flag is reported before
// kedge writes anything or starts any component.
func CheckUserArgs(c config.Config) error {
	var errs []error
	for _, comp := range []struct {
		name, flag string
		args       []string
		flags      func() *pflag.FlagSet
	}{
		{"kube-apiserver", "kube-apiserver-arg", c.KubeAPIServerArgs, apiserverFlags},
		{"kube-controller-manager", "kube-controller-manager-arg", c.KubeControllerManagerArgs, controllerManagerFlags},
		{"kube-scheduler", "kube-scheduler-arg", c.KubeSchedulerArgs, schedulerFlags},
	} {
		if len(comp.args) == 0 {
			continue
		}
		a := Args{}
		if err := a.Override(comp.args); err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", comp.flag, err))
			continue
		}
		if err := parseInto(comp.flags(), comp.name, comp.flag, a); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func apiserverFlags() *pflag.FlagSet {
	fs, _ := newAPIServerFlags()
	return fs
}

func newAPIServerFlags() (*pflag.FlagSet, *options.ServerRunOptions) {
	s := options.NewServerRunOptions()
	fs := pflag.NewFlagSet("kube-apiserver", pflag.ContinueOnError)
	for _, f := range s.Flags().FlagSets {
		fs.AddFlagSet(f)
	}
	return fs, s
}

func controllerManagerFlags() *pflag.FlagSet {
	fs, _, err := newControllerManagerFlags()
	if err != nil {
		return pflag.NewFlagSet("kube-controller-manager", pflag.ContinueOnError)
	}
	return fs
}

func newControllerManagerFlags() (*pflag.FlagSet, *kcmoptions.KubeControllerManagerOptions, error) {
	s, err := kcmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return nil, nil, fmt.Errorf("kube-controller-manager options: %w", err)
	}
	named := s.Flags(kcmapp.KnownControllers(), kcmapp.ControllersDisabledByDefault(), kcmapp.ControllerAliases())
	s.ParsedFlags = &named
	fs := pflag.NewFlagSet("kube-controller-manager", pflag.ContinueOnError)
	for _, f := range named.FlagSets {
		fs.AddFlagSet(f)
	}
	return fs, s, nil
}

func schedulerFlags() *pflag.FlagSet {
	fs, _ := newSchedulerFlags()
	return fs
}

func newSchedulerFlags() (*pflag.FlagSet, *schedoptions.Options) {
	opts := schedoptions.NewOptions()
	fs := pflag.NewFlagSet("kube-scheduler", pflag.ContinueOnError)
	for _, f := range opts.Flags.FlagSets {
		fs.AddFlagSet(f)
	}
	return fs, opts
}
