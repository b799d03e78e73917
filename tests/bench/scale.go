package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// variantScale runs a system's control plane alone, for hollow nodes.
const variantScale = "scale"

// controlPlaneOnly is whether a variant runs the control plane without
// the system's own node.
func controlPlaneOnly(variant string) bool {
	return variant == variantScale || variant == variantChurn
}

// scaleReadyTimeout bounds the wait for all hollow nodes, and for all
// pods, to be Ready and Running.
const scaleReadyTimeout = 15 * time.Minute

// measureScale starts spec.ScaleNodes hollow kubelets (kubemark, built
// from the same Kubernetes module: a real kubelet with a fake runtime)
// against the control plane, creates spec.ScalePods pods through one
// Deployment, and records how long the nodes and pods took, the pod
// startup latency (first seen to Running, as a watch sees them), the API
// request latency p99 from the apiserver's own histograms over the run
// (mutating calls and lists, against upstream's SLOs of 1 s and 5 s), and
// the control plane's memory with everything running.
func measureScale(ctx context.Context, spec childSpec, sys system, c *kubernetes.Clientset, kubeconfig string, res *runResult) error {
	before, err := requestDurations(ctx, c)
	if err != nil {
		return err
	}
	dir := filepath.Join(spec.Dir, "hollow")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var hollow []*exec.Cmd
	defer func() { stopProcs(30*time.Second, hollow...) }()
	t0 := time.Now()
	for i := 1; i <= spec.ScaleNodes; i++ {
		name := fmt.Sprintf("hollow-%d", i)
		// Each keeps its root dir under TMPDIR: the sandbox.
		cmd, err := startProc(name, filepath.Join(dir, name+".log"), cleanEnv("TMPDIR="+dir), spec.Kubemark,
			"--morph=kubelet", "--name="+name, "--kubeconfig="+kubeconfig,
			"--kubelet-port="+strconv.Itoa(20000+i), "--kubelet-read-only-port=0",
			"--use-host-image-service=false", "--max-pods=110")
		if err != nil {
			return err
		}
		hollow = append(hollow, cmd)
	}
	if err := waitNodes(ctx, c, spec.ScaleNodes); err != nil {
		return err
	}
	res.Values["scale_nodes_ready"] = time.Since(t0).Seconds()
	logf("%s: %d hollow nodes Ready after %.0fs", spec.System, spec.ScaleNodes, res.Values["scale_nodes_ready"])

	w, t1, err := runDeployment(ctx, c, "scale", spec.ScalePods, hollowPodSpec(), scaleReadyTimeout)
	if err != nil {
		return err
	}
	defer close(w.stop)
	res.Values["scale_pods_running"] = time.Since(t1).Seconds()
	logf("%s: %d pods Running after %.0fs", spec.System, spec.ScalePods, res.Values["scale_pods_running"])
	var startup []float64
	w.mu.Lock()
	for name, running := range w.running {
		if added, ok := w.added[name]; ok {
			startup = append(startup, ms(running.Sub(added)))
		}
	}
	w.mu.Unlock()
	sort.Float64s(startup)
	res.Values["scale_pod_p50"] = percentile(startup, 50)
	res.Values["scale_pod_p99"] = percentile(startup, 99)

	after, err := requestDurations(ctx, c)
	if err != nil {
		return err
	}
	res.Values["scale_api_mutating_p99"] = after.p99(before, "POST", "PUT", "PATCH", "DELETE") * 1000
	res.Values["scale_api_list_p99"] = after.p99(before, "LIST") * 1000
	var pss int64
	for _, p := range sys.processes() {
		s, err := readProc(p.pid)
		if err != nil {
			return fmt.Errorf("%s (pid %d): %w", p.name, p.pid, err)
		}
		pss += s.PSSKiB
	}
	res.Values["scale_server_pss"] = float64(pss) / 1024
	return nil
}

// hollowPodSpec is the bench's pod, pulled by the hollow kubelets' fake
// image service (which has every image).
func hollowPodSpec() corev1.PodSpec {
	spec := podSpec()
	spec.Containers[0].ImagePullPolicy = corev1.PullIfNotPresent
	return spec
}

// waitNodes waits until n nodes are Ready.
func waitNodes(ctx context.Context, c *kubernetes.Clientset, n int) error {
	deadline := time.Now().Add(scaleReadyTimeout)
	for {
		nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		ready := 0
		if err == nil {
			for _, node := range nodes.Items {
				for _, cond := range node.Status.Conditions {
					if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
						ready++
					}
				}
			}
		}
		if ready >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d hollow nodes Ready after %s", ready, n, scaleReadyTimeout)
		}
		if err := sleepCtx(ctx, 2*time.Second); err != nil {
			return err
		}
	}
}

// histogram is apiserver_request_duration_seconds summed by verb: the
// count of requests at or below each upper bound.
type histogram map[string]map[float64]uint64

// requestDurations reads the apiserver's request latency histograms.
func requestDurations(ctx context.Context, c *kubernetes.Clientset) (histogram, error) {
	data, err := c.CoreV1().RESTClient().Get().AbsPath("/metrics").Timeout(time.Minute).DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("apiserver metrics: %w", err)
	}
	return parseRequestDurations(string(data))
}

// parseRequestDurations reads apiserver_request_duration_seconds from the
// Prometheus text format.
func parseRequestDurations(text string) (histogram, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("apiserver metrics: %w", err)
	}
	h := histogram{}
	fam, ok := families["apiserver_request_duration_seconds"]
	if !ok {
		return nil, fmt.Errorf("apiserver metrics: no apiserver_request_duration_seconds")
	}
	for _, m := range fam.GetMetric() {
		verb := label(m, "verb")
		if h[verb] == nil {
			h[verb] = map[float64]uint64{}
		}
		for _, b := range m.GetHistogram().GetBucket() {
			if !math.IsInf(b.GetUpperBound(), 1) { // the text format lists it; the count is all of them
				h[verb][b.GetUpperBound()] += b.GetCumulativeCount()
			}
		}
		h[verb][math.Inf(1)] += m.GetHistogram().GetSampleCount()
	}
	return h, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// p99 is the 99th percentile, in seconds, of the requests of these verbs
// made since before: the upper bound of the first bucket that holds 99 %
// of them (the histogram's resolution; +Inf reads as its last bound).
func (h histogram) p99(before histogram, verbs ...string) float64 {
	counts := map[float64]uint64{}
	for _, v := range verbs {
		for bound, n := range h[v] {
			counts[bound] += n - before[v][bound]
		}
	}
	var bounds []float64
	for b := range counts {
		bounds = append(bounds, b)
	}
	sort.Float64s(bounds)
	if len(bounds) == 0 {
		return 0
	}
	total := counts[bounds[len(bounds)-1]]
	if total == 0 {
		return 0
	}
	last := 0.0
	for _, b := range bounds {
		if math.IsInf(b, 1) {
			return last
		}
		if float64(counts[b]) >= 0.99*float64(total) {
			return b
		}
		last = b
	}
	return last
}

func init() {
	figures = append(figures,
		figure{"scale_nodes_ready", "scale: hollow nodes all Ready", "s"},
		figure{"scale_pods_running", "scale: pods all Running on them", "s"},
		figure{"scale_pod_p50", "scale: pod startup p50", "ms"},
		figure{"scale_pod_p99", "scale: pod startup p99", "ms"},
		figure{"scale_api_mutating_p99", "scale: API mutating calls p99 (SLO 1000)", "ms"},
		figure{"scale_api_list_p99", "scale: API lists p99 (SLO 5000)", "ms"},
		figure{"scale_server_pss", "scale: control plane PSS, everything running", "MiB"})
}
