package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// What each add-on adds to an idle node. kedge runs once with every add-on
// off ("none"), then once per add-on with only that one on; the figure is
// the difference of the idle PSS of kedge, its containerd and every pod
// process (the add-ons that are pods, CoreDNS and Traefik, count with
// their pods).
var addonVariants = []struct{ name, label string }{
	{"coredns", "CoreDNS (its pod included)"},
	{"servicelb", "servicelb"},
	{"local-storage", "local-path storage"},
	{"metrics-server", "metrics-server"},
	{"ingress", "Ingress: Traefik (its pod included, with one Ingress)"},
	{"helm-controller", "HelmChart controller"},
}

// addonsIdleAfter is when the add-on runs take their PSS: enough for the
// add-ons' caches and pods to settle, shorter than the main idle figure.
const addonsIdleAfter = 100 * time.Second

// addonsSamples are taken 5 s apart from then on.
const addonsSamples = 12

func init() {
	for _, v := range addonVariants {
		figures = append(figures, figure{"addon_" + v.name, "idle PSS added by " + v.label + " (median of 12 samples)", "MiB"})
	}
	figures = append(figures,
		figure{"addon_pods_coredns", "PSS of CoreDNS's pod", "MiB"},
		figure{"addon_pods_ingress", "PSS of Traefik's pod", "MiB"})
}

// addonArgs are kedge's flags for a variant: everything off but it.
func addonArgs(variant string) []string {
	var off []string
	for _, v := range addonVariants {
		if v.name != variant && v.name != "helm-controller" {
			off = append(off, v.name)
		}
	}
	args := []string{"--disable", strings.Join(off, ",")}
	if variant != "helm-controller" {
		args = append(args, "--disable-helm-controller")
	}
	return args
}

// measureAddons runs kedge for each variant and records what each add-on
// adds over the run with none.
func measureAddons(ctx context.Context, o options, res *results) error {
	pss := map[string]float64{}
	for _, v := range append([]string{"none"}, variantNames()...) {
		logf("kedge add-ons: %s", v)
		r, err := runSandboxed(ctx, o, systemKedge, 1, []string{groupAddons}, v)
		if err != nil {
			return fmt.Errorf("add-on run %s: %w", v, err)
		}
		res.Runs = append(res.Runs, r)
		pss[v] = r.Values["addons_pss"]
	}
	for _, v := range variantNames() {
		res.record(systemKedge, "addon_"+v, pss[v]-pss["none"])
	}
	for _, r := range res.Runs {
		if v, _ := r.Raw["addons_variant"].(string); v == "coredns" || v == "ingress" {
			res.record(systemKedge, "addon_pods_"+v, r.Values["addons_pods_pss"])
		}
	}
	return nil
}

func variantNames() []string {
	var names []string
	for _, v := range addonVariants {
		names = append(names, v.name)
	}
	return names
}

// measureAddonIdle (in the child) deploys what the variant needs to run
// (an Ingress for Traefik), waits, and records the PSS of kedge, its
// containerd and every process in the sandbox's pods.
func measureAddonIdle(ctx context.Context, spec childSpec, sys system, c *kubernetes.Clientset, t0 time.Time, res *runResult) error {
	if spec.Variant == "ingress" {
		if err := deployIngress(ctx, c); err != nil {
			return err
		}
	}
	if err := sleepCtx(ctx, time.Until(t0.Add(addonsIdleAfter))); err != nil {
		return err
	}
	// The median of a minute of samples: the Go heap breathes with the
	// garbage collector by tens of MiB, more than an informer costs.
	var totals, pods []float64
	per := map[string][]float64{}
	for i := 0; i < addonsSamples; i++ {
		if i > 0 {
			if err := sleepCtx(ctx, 5*time.Second); err != nil {
				return err
			}
		}
		var total int64
		for _, p := range sys.processes() {
			s, err := readProc(p.pid)
			if err != nil {
				return fmt.Errorf("%s (pid %d): %w", p.name, p.pid, err)
			}
			total += s.PSSKiB
			per[p.name] = append(per[p.name], float64(s.PSSKiB)/1024)
		}
		var podKiB int64
		for _, pid := range podProcesses(spec.CgroupRoot) {
			if s, err := readProc(pid); err == nil {
				podKiB += s.PSSKiB
			}
		}
		totals = append(totals, float64(total+podKiB)/1024)
		pods = append(pods, float64(podKiB)/1024)
	}
	res.Values["addons_pss"] = percentile(totals, 50)
	res.Values["addons_pods_pss"] = percentile(pods, 50)
	res.Raw["addons_variant"] = spec.Variant
	res.Raw["addons_pss_samples"] = totals
	res.Raw["addons_pss_per_process"] = per
	return nil
}

// deployIngress makes one Ingress, so kedge deploys Traefik, and waits for
// Traefik's pod to run.
func deployIngress(ctx context.Context, c *kubernetes.Clientset) error {
	ing := &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: "bench", Namespace: "default"},
		Spec: networkingv1.IngressSpec{DefaultBackend: &networkingv1.IngressBackend{
			Service: &networkingv1.IngressServiceBackend{Name: "kubernetes", Port: networkingv1.ServiceBackendPort{Number: 443}},
		}},
	}
	if _, err := c.NetworkingV1().Ingresses("default").Create(ctx, ing, metav1.CreateOptions{}); err != nil {
		return err
	}
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		pods, err := c.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=traefik"})
		if err == nil && len(pods.Items) > 0 && allReady(pods.Items) {
			return nil
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			return err
		}
	}
	return fmt.Errorf("traefik's pod not Ready after 3m (is the add-on archive in the images dir?)")
}

// podProcesses are the PIDs in the kubelet cgroup root's pods (the memory
// hierarchy holds every container process; cgroup v1 or v2).
func podProcesses(root string) []int {
	var pids []int
	for _, base := range []string{"/sys/fs/cgroup/memory", "/sys/fs/cgroup"} {
		dir := filepath.Join(base, root)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			data, _ := os.ReadFile(path)
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil {
					pids = append(pids, pid)
				}
			}
			return nil
		})
		if len(pids) > 0 {
			return pids
		}
	}
	return pids
}
