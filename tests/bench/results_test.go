package main

import (
	"strings"
	"testing"
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
