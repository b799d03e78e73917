// Command bench measures kedge against the upstream baseline it replaces
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
// kube-proxy and containerd as separate processes, as a kubeadm node runs
// them) and prints one markdown table, writing every raw sample to a JSON
// file. scripts/bench builds everything and runs it as root.
//
// Each run of a system happens in a sandbox of its own: a network
// namespace, a temporary directory and a kubelet cgroup root. The parent
// process creates the sandbox, runs itself as a child inside the network
// namespace (the child starts the system and measures), then removes the
// sandbox whatever the child did.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Figure groups, selectable with -only.
const (
	groupSize  = "size"
	groupStart = "start"
	groupIdle  = "idle"
	groupPods  = "pods"
	groupBurst = "burst"
	groupAPI   = "api"
	// groupAddons is the idle memory each add-on adds (kedge only).
	groupAddons = "addons"
	// groupHA is the API figures of 3 servers on embedded etcd.
	groupHA = "ha"
	// groupNet is pod-to-pod throughput across two nodes, per flannel
	// backend.
	groupNet = "net"
	// groupChurn is the datastore's size under pod churn.
	groupChurn = "churn"
	// groupScale is hollow nodes against one control plane (-scale).
	groupScale = "scale"
)

var allGroups = []string{groupSize, groupStart, groupIdle, groupAPI, groupPods, groupBurst, groupChurn, groupAddons, groupHA, groupNet}

// options are the parent's flags.
type options struct {
	kedge       string // kedge binary
	baselineDir string // etcd, kube-*, kubelet, containerd
	imagesDir   string // tests/images output (hello-v1.tar)
	// addonsArchive is kedge-addons.tar.zst (Traefik's image).
	addonsArchive string
	kubectl       string // any kubectl; kedge's own by default
	workDir       string // where sandboxes are made
	jsonOut       string
	runs          int // runs of the start-up figures
	heavyRuns     int // runs of idle, api, pods and burst
	churnFor      time.Duration
	// scale runs groupScale: kubemark's hollow nodes and pods on them.
	scale    bool
	kubemark string
	// release is kedge's release binary (scripts/release), for its size.
	release    string
	scaleNodes int
	scalePods  int
	only       map[string]bool
	systems    []string
	keep       bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "child" {
		if err := runChild(ctx, os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseOptions(args []string) (options, error) {
	var o options
	var only, systems string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&o.kedge, "kedge", "bin/kedge", "kedge binary")
	fs.StringVar(&o.baselineDir, "baseline", "", "directory with the baseline binaries")
	fs.StringVar(&o.imagesDir, "images", "bin/images", "test image archives (tests/images/build.sh)")
	fs.StringVar(&o.addonsArchive, "addons", "", "kedge-addons archive (scripts/addon-images), for the Traefik figure")
	fs.StringVar(&o.kubectl, "kubectl", "", "kubectl binary (default: kedge kubectl)")
	fs.StringVar(&o.workDir, "work", os.TempDir(), "directory for the sandboxes")
	fs.StringVar(&o.jsonOut, "json", "bench.json", "file for every raw sample")
	fs.IntVar(&o.runs, "runs", 3, "runs of the start-up figures (the median is shown)")
	fs.IntVar(&o.heavyRuns, "heavy-runs", 1, "runs of the idle, api, pods and burst figures")
	fs.DurationVar(&o.churnFor, "churn-for", time.Hour, "how long the churn group creates and deletes pods")
	fs.BoolVar(&o.scale, "scale", false, "also run hollow nodes (kubemark) and pods on them against each system's control plane")
	fs.StringVar(&o.kubemark, "kubemark", "", "kubemark binary (k8s.io/kubernetes/cmd/kubemark), for -scale")
	fs.StringVar(&o.release, "release", "", "kedge's release binary (scripts/release) of this machine's architecture, whose size the size group also reports")
	fs.IntVar(&o.scaleNodes, "scale-nodes", 100, "hollow nodes of -scale")
	fs.IntVar(&o.scalePods, "scale-pods", 3000, "pods of -scale")
	fs.StringVar(&only, "only", strings.Join(allGroups, ","), "figure groups to run: "+strings.Join(allGroups, ","))
	fs.StringVar(&systems, "systems", "kedge,baseline", "systems to measure")
	fs.BoolVar(&o.keep, "keep", false, "keep each sandbox's logs (not the data) for debugging")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.only = map[string]bool{}
	for _, g := range strings.Split(only, ",") {
		g = strings.TrimSpace(g)
		if !contains(allGroups, g) {
			return o, fmt.Errorf("-only: unknown figure group %q (have %s)", g, strings.Join(allGroups, ","))
		}
		o.only[g] = true
	}
	for _, s := range strings.Split(systems, ",") {
		if s != systemKedge && s != systemBaseline {
			return o, fmt.Errorf("-systems: unknown system %q (kedge, baseline)", s)
		}
		o.systems = append(o.systems, s)
	}
	if o.runs < 1 || o.heavyRuns < 0 {
		return o, errors.New("-runs must be at least 1 and -heavy-runs at least 0")
	}
	if o.churnFor < churnEarly {
		return o, fmt.Errorf("-churn-for %s: at least %s, when the first size is taken", o.churnFor, churnEarly)
	}
	churnLabel(o.churnFor)
	if o.scale && o.kubemark == "" {
		return o, errors.New("-scale needs -kubemark (scripts/bench builds it)")
	}
	if o.scaleNodes < 1 || o.scalePods < 1 {
		return o, errors.New("-scale-nodes and -scale-pods must be at least 1")
	}
	for _, p := range []*string{&o.kedge, &o.baselineDir, &o.imagesDir, &o.addonsArchive, &o.kubectl, &o.workDir, &o.jsonOut, &o.kubemark, &o.release} {
		if *p != "" {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return o, err
			}
			*p = abs
		}
	}
	if o.kubectl == "" {
		o.kubectl = o.kedge
	}
	return o, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func run(ctx context.Context, args []string) error {
	o, err := parseOptions(args)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root: the bench starts kubelets, containerd and network namespaces")
	}
	began := time.Now()
	res := newResults()
	res.LoadStart = loadAverage()
	if o.only[groupSize] {
		if err := measureSizes(o, res); err != nil {
			return err
		}
	}
	heavy := o.only[groupIdle] || o.only[groupAPI] || o.only[groupPods] || o.only[groupBurst]
	needStart := o.only[groupStart] || heavy
	for _, sys := range o.systems {
		if !needStart {
			break
		}
		runs := 0
		if o.only[groupStart] {
			runs = o.runs
		}
		if heavy && o.heavyRuns > runs {
			runs = o.heavyRuns
		}
		for i := 1; i <= runs; i++ {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var groups []string
			for _, g := range []string{groupIdle, groupAPI, groupPods, groupBurst} {
				if o.only[g] && i <= o.heavyRuns {
					groups = append(groups, g)
				}
			}
			logf("%s run %d/%d: start-up%s", sys, i, runs, prefixed(", ", groups))
			r, err := runSandboxed(ctx, o, sys, i, groups, "")
			if err != nil {
				return fmt.Errorf("%s run %d: %w", sys, i, err)
			}
			res.addRun(sys, r, o.only[groupStart])
		}
	}
	if o.scale {
		for _, sys := range o.systems {
			logf("%s: %d hollow nodes, %d pods", sys, o.scaleNodes, o.scalePods)
			r, err := runSandboxed(ctx, o, sys, 1, []string{groupScale}, variantScale)
			if err != nil {
				return fmt.Errorf("%s scale: %w", sys, err)
			}
			res.addPrefixed(sys, r, "scale_")
		}
	}
	if o.only[groupHA] && contains(o.systems, systemKedge) {
		if err := measureHA(ctx, o, res); err != nil {
			return err
		}
	}
	if o.only[groupNet] && contains(o.systems, systemKedge) {
		if err := measureNet(ctx, o, res); err != nil {
			return err
		}
	}
	if o.only[groupAddons] && contains(o.systems, systemKedge) {
		if err := measureAddons(ctx, o, res); err != nil {
			return err
		}
	}
	if o.only[groupChurn] {
		if err := measureChurnAll(ctx, o, res); err != nil {
			return err
		}
	}
	res.Elapsed = time.Since(began).Round(time.Second).String()
	res.LoadEnd = loadAverage()
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(o.jsonOut, data, 0o644); err != nil {
		return err
	}
	fmt.Print(res.table(o.systems))
	for _, b := range netBackends {
		if why, ok := res.Notes["net_tcp_"+b].(string); ok {
			fmt.Printf("pod-to-pod TCP throughput, %s: %s\n", b, why)
		}
	}
	fmt.Print(res.traces())
	logf("raw samples in %s; took %s", o.jsonOut, res.Elapsed)
	return nil
}

func prefixed(sep string, list []string) string {
	if len(list) == 0 {
		return ""
	}
	return sep + strings.Join(list, ", ")
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// loadAverage is /proc/loadavg's first three fields.
func loadAverage() string {
	data, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
