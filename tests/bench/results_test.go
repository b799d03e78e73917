package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	samples := make([]float64, 30)
	for i := range samples {
		samples[i] = float64(30 - i) // unsorted on purpose
	}
	for _, tc := range []struct {
		p    float64
		want float64
	}{
		{50, 15},
		{99, 30},
		{100, 30},
		{1, 1},
	} {
		if got := percentile(samples, tc.p); got != tc.want {
			t.Errorf("p%v of 1..30 = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %v, want 0", got)
	}
}

func TestSummary(t *testing.T) {
	var s summary
	for _, v := range []float64{3, 1, 2, 10} {
		s.add(v)
	}
	if s.Min != 1 || s.Max != 10 || s.Median != 2.5 || len(s.Samples) != 4 {
		t.Errorf("summary of 3,1,2,10 = %+v", s)
	}
}

func TestTable(t *testing.T) {
	r := newResults()
	r.record(systemKedge, "start_readyz", 4)
	r.record(systemBaseline, "start_readyz", 2)
	r.record(systemKedge, "idle_rss", 300)
	got := r.table([]string{systemKedge, systemBaseline})
	for _, want := range []string{
		"| figure | kedge | baseline | ratio |",
		"| cold start: exec → /readyz (s) | 4.00 | 2.00 | 2.00 |",
		"| idle RSS, control plane + agent (MiB) | 300 | – | – |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "burst") {
		t.Errorf("table shows a figure nobody measured:\n%s", got)
	}
}

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"-only", "start,api", "-runs", "1"}, ""},
		{[]string{"--only", "nope"}, `unknown figure group "nope"`},
		{[]string{"-systems", "k3s"}, `unknown system "k3s"`},
		{[]string{"-runs", "0"}, "-runs must be at least 1"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := parseOptions(tc.args)
			if tc.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestStartTrace(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)
	log := filepath.Join(t.TempDir(), "kedge.log")
	os.WriteFile(log, []byte(`time=2026-12-06T08:00:00.500Z level=INFO msg=starting component=kine
time=2026-12-06T08:00:00.800Z level=INFO msg=ready component=kine took=300ms
time=2026-12-06T08:00:02.000Z level=INFO msg=ready component=kube-apiserver took=1.2s
time=2026-12-06T08:00:05.250Z level=INFO msg="flannel running" component=flannel backend=vxlan
time=2026-12-06T08:00:05.000Z level=INFO msg="Successfully registered node" component=kubernetes node=n1
time=2026-12-06T08:00:06.000Z level=INFO msg="Successfully registered node" component=kubernetes node=n1
not a log line
`), 0o644)
	steps, err := startTrace(log, t0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range steps {
		got = append(got, fmt.Sprintf("%s@%.2f", s.Step, s.At))
	}
	want := "kine ready@0.80 kube-apiserver ready@2.00 kubelet registered the node@5.00 flannel holds its lease@5.25"
	if strings.Join(got, " ") != want {
		t.Fatalf("trace: %s\nwant: %s", strings.Join(got, " "), want)
	}
	table := traceTable("kedge", 1, steps)
	if !strings.Contains(table, "| flannel holds its lease | 5.25 | 0.25 |") {
		t.Errorf("table:\n%s", table)
	}
	r := &runResult{System: "kedge", Run: 1, Raw: map[string]any{}}
	data, _ := json.Marshal(steps)
	var raw any
	json.Unmarshal(data, &raw)
	r.Raw["start_trace"] = raw
	if out := (&results{Runs: []*runResult{r}}).traces(); !strings.Contains(out, "start trace, kedge run 1") {
		t.Errorf("traces: %q", out)
	}
}

func TestHistogramP99(t *testing.T) {
	inf := math.Inf(1)
	before := histogram{"POST": {0.1: 10, 1: 10, inf: 10}}
	after := histogram{
		"POST":  {0.1: 10 + 980, 1: 10 + 999, inf: 10 + 1000},
		"PATCH": {0.1: 0, 1: 0, inf: 0},
		"LIST":  {0.1: 50, 1: 90, inf: 100},
	}
	if got := after.p99(before, "POST", "PATCH"); got != 1 {
		t.Errorf("mutating p99 %v, want 1 (99%% of the new requests took at most 1 s)", got)
	}
	// More than 1 % beyond the last bound: the last bound is all we know.
	if got := after.p99(histogram{}, "LIST"); got != 1 {
		t.Errorf("list p99 %v, want 1", got)
	}
	if got := after.p99(before, "DELETE"); got != 0 {
		t.Errorf("no requests: %v", got)
	}
}

func TestParseRequestDurations(t *testing.T) {
	text := `# HELP apiserver_request_duration_seconds [STABLE] Response latency distribution.
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_bucket{resource="pods",verb="POST",le="0.1"} 98
apiserver_request_duration_seconds_bucket{resource="pods",verb="POST",le="1"} 100
apiserver_request_duration_seconds_bucket{resource="pods",verb="POST",le="+Inf"} 100
apiserver_request_duration_seconds_sum{resource="pods",verb="POST"} 3
apiserver_request_duration_seconds_count{resource="pods",verb="POST"} 100
apiserver_request_duration_seconds_bucket{resource="events",verb="POST",le="0.1"} 100
apiserver_request_duration_seconds_bucket{resource="events",verb="POST",le="1"} 100
apiserver_request_duration_seconds_bucket{resource="events",verb="POST",le="+Inf"} 100
apiserver_request_duration_seconds_sum{resource="events",verb="POST"} 1
apiserver_request_duration_seconds_count{resource="events",verb="POST"} 100
`
	h, err := parseRequestDurations(text)
	if err != nil {
		t.Fatal(err)
	}
	// 198 of 200 within 0.1 s: exactly 99 %.
	if got := h.p99(histogram{}, "POST"); got != 0.1 {
		t.Errorf("p99 %v, want 0.1 (counts %v)", got, h["POST"])
	}
}
