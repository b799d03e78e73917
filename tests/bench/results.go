package main

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"
)

// figure is one row of the table.
type figure struct {
	key, label, unit string
}

// figures in table order. Keys are the JSON's.
var figures = []figure{
	{"size", "size of everything a node runs", "MiB"},
	{"size_release", "release binary, this machine's architecture (zstd -19)", "MiB"},
	{"start_readyz", "cold start: exec → /readyz", "s"},
	{"start_node", "cold start: exec → node Ready", "s"},
	{"start_system", "cold start: exec → kube-system pods Ready", "s"},
	{"idle_rss", "idle RSS, control plane + agent", "MiB"},
	{"idle_pss", "idle PSS, control plane + agent", "MiB"},
	{"idle_cpu", "idle CPU (60 s average)", "millicores"},
	{"idle_write", "idle disk writes", "KiB/s"},
	{"pod_p50", "pod startup p50 (30 pods, 1/s)", "ms"},
	{"pod_p99", "pod startup p99 (30 pods, 1/s)", "ms"},
	{"burst_time", "burst: 240 replicas all Running", "s"},
	{"burst_rate", "burst: pods per minute", "pods/min"},
	{"api_create_p50", "API: ConfigMap create p50 (1000, 8 clients)", "ms"},
	{"api_create_p99", "API: ConfigMap create p99 (1000, 8 clients)", "ms"},
	{"api_list_p50", "API: list 1000 ConfigMaps p50 (20 lists)", "ms"},
	{"api_list_p99", "API: list 1000 ConfigMaps p99 (20 lists)", "ms"},
	{"churn_db_early", "datastore after 5 min of churn (10 pods/s)", "MiB"},
	{"churn_db_end", "datastore after 1h0m0s of churn", "MiB"},
	{"churn_wal_max", "churn: largest write-ahead log", "MiB"},
	{"churn_compact_lag", "churn: most revisions kept uncompacted (kine)", "revisions"},
}

// churnLabel names the churn's length in its figure.
func churnLabel(d time.Duration) {
	for i := range figures {
		if figures[i].key == "churn_db_end" {
			figures[i].label = fmt.Sprintf("datastore after %s of churn", d)
		}
	}
}

// summary is one figure of one system over its runs.
type summary struct {
	Samples []float64 `json:"samples"`
	Min     float64   `json:"min"`
	Median  float64   `json:"median"`
	Max     float64   `json:"max"`
}

func (s *summary) add(v float64) {
	s.Samples = append(s.Samples, v)
	sorted := append([]float64(nil), s.Samples...)
	sort.Float64s(sorted)
	s.Min, s.Max = sorted[0], sorted[len(sorted)-1]
	s.Median = median(sorted)
}

// runResult is what one child run reports.
type runResult struct {
	System string             `json:"system"`
	Run    int                `json:"run"`
	Values map[string]float64 `json:"values"`
	// Raw holds every individual measurement of the run (latencies in ms,
	// process sizes and CPU per process).
	Raw   map[string]any `json:"raw"`
	Notes []string       `json:"notes,omitempty"`
}

type results struct {
	Machine string `json:"machine"`
	// Load averages (1, 5, 15 min) before and after: the host may be
	// shared, and its load shows in the timings.
	LoadStart string                         `json:"loadAverageAtStart"`
	LoadEnd   string                         `json:"loadAverageAtEnd"`
	Elapsed   string                         `json:"elapsed"`
	Figures   map[string]map[string]*summary `json:"figures"`
	Runs      []*runResult                   `json:"runs"`
	Notes     map[string]any                 `json:"notes,omitempty"`
}

func newResults() *results {
	return &results{Machine: machine(), Figures: map[string]map[string]*summary{}, Notes: map[string]any{}}
}

func (r *results) record(sys, key string, v float64) {
	if r.Figures[key] == nil {
		r.Figures[key] = map[string]*summary{}
	}
	if r.Figures[key][sys] == nil {
		r.Figures[key][sys] = &summary{}
	}
	r.Figures[key][sys].add(v)
}

// addRun records a child's figures; start-up figures only if withStart.
func (r *results) addRun(sys string, run *runResult, withStart bool) {
	r.Runs = append(r.Runs, run)
	for k, v := range run.Values {
		if strings.HasPrefix(k, "start_") && !withStart {
			continue
		}
		r.record(sys, k, v)
	}
}

// addPrefixed records a run's figures whose keys start with prefix: the
// one group a control-plane-only run measures.
func (r *results) addPrefixed(sys string, run *runResult, prefix string) {
	r.Runs = append(r.Runs, run)
	for k, v := range run.Values {
		if strings.HasPrefix(k, prefix) {
			r.record(sys, k, v)
		}
	}
}

// table renders the medians as markdown: figure | kedge | baseline | ratio.
func (r *results) table(systems []string) string {
	var b strings.Builder
	b.WriteString("| figure | " + strings.Join(systems, " | "))
	if len(systems) == 2 {
		b.WriteString(" | ratio")
	}
	b.WriteString(" |\n|---|" + strings.Repeat("---:|", len(systems)))
	if len(systems) == 2 {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, f := range figures {
		per := r.Figures[f.key]
		if per == nil {
			continue
		}
		fmt.Fprintf(&b, "| %s (%s) |", f.label, f.unit)
		for _, s := range systems {
			if sum := per[s]; sum != nil {
				fmt.Fprintf(&b, " %s |", format(sum.Median))
			} else {
				b.WriteString(" – |")
			}
		}
		if len(systems) == 2 {
			a, c := per[systems[0]], per[systems[1]]
			if a != nil && c != nil && c.Median != 0 {
				fmt.Fprintf(&b, " %.2f |", a.Median/c.Median)
			} else {
				b.WriteString(" – |")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func format(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// median of sorted values.
func median(sorted []float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// percentile of samples (nearest rank), p in (0, 100].
func percentile(samples []float64, p float64) float64 {
	if len(samples) == 0 {
		return 0
	}
	sorted := append([]float64(nil), samples...)
	sort.Float64s(sorted)
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	if rank < 1 {
		rank = 1
	}
	return sorted[rank-1]
}

// machine describes the host: CPUs, memory, kernel, cgroup version.
func machine() string {
	mem := ""
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		fmt.Sscanf(strings.TrimPrefix(strings.SplitN(string(data), "\n", 2)[0], "MemTotal:"), "%d", &kb)
		mem = fmt.Sprintf("%.1f GiB RAM", float64(kb)/1024/1024)
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	cg := "cgroup v1"
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		cg = "cgroup v2"
	}
	osName := ""
	if data, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				osName = strings.Trim(v, `"`)
			}
		}
	}
	return fmt.Sprintf("%d CPUs %s, %s, %s, kernel %s, %s", runtime.NumCPU(), runtime.GOARCH, mem, osName, strings.TrimSpace(string(kernel)), cg)
}
