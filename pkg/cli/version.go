package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"k8s.io/component-base/version"
)

// Set at build time by scripts/build (-ldflags -X).
var (
	Version = "dev"
	Commit  = "unknown"
)

// bundled are the modules whose versions --version reports.
var bundled = []struct{ name, module string }{
	{"kine", "github.com/k3s-io/kine"},
	{"etcd client", "go.etcd.io/etcd/client/v3"},
	{"kubectl", "k8s.io/kubectl"},
	{"containerd", "github.com/containerd/containerd/v2"},
	{"flannel", "github.com/flannel-io/flannel"},
}

func versionString() string {
	var b strings.Builder
	fmt.Fprintf(&b, "kedge version %s (%s)\n", Version, Commit)
	fmt.Fprintf(&b, "kubernetes %s\n", version.Get().GitVersion)
	mods := map[string]string{}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, m := range info.Deps {
			v := m.Version
			if m.Replace != nil {
				v = m.Replace.Version
			}
			mods[m.Path] = v
		}
	}
	for _, c := range bundled {
		if v, ok := mods[c.module]; ok {
			fmt.Fprintf(&b, "%s %s\n", c.name, v)
		}
	}
	fmt.Fprintf(&b, "go %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return b.String()
}
