package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"
)

// traceStep is one milestone of a cold start, in seconds after exec.
type traceStep struct {
	Step string  `json:"step"`
	At   float64 `json:"at"`
}

// milestones are the log lines, besides each component's "ready", that
// mark the way to node Ready: the kubelet's registration, flannel's lease
// and the pod network's CNI config.
var milestones = []struct{ msg, step string }{
	{`msg="Successfully registered node"`, "kubelet registered the node"},
	{`msg="flannel running"`, "flannel holds its lease"},
	{`msg="pod network configured"`, "CNI config written"},
	{`msg="imported built-in image"`, "built-in images imported"},
}

var (
	logTime   = regexp.MustCompile(`^time=(\S+) `)
	readyLine = regexp.MustCompile(`msg=ready component=(\S+)`)
)

// startTrace reads a kedge log for the start's milestones, each at its
// first occurrence, in the order they came.
func startTrace(logFile string, t0 time.Time) ([]traceStep, error) {
	f, err := os.Open(logFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	seen := map[string]bool{}
	var steps []traceStep
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		m := logTime.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			continue
		}
		step := ""
		if r := readyLine.FindStringSubmatch(line); r != nil {
			step = r[1] + " ready"
		}
		for _, ms := range milestones {
			if strings.Contains(line, ms.msg) {
				step = ms.step
			}
		}
		if step == "" || seen[step] {
			continue
		}
		seen[step] = true
		steps = append(steps, traceStep{Step: step, At: at.Sub(t0).Seconds()})
	}
	sort.SliceStable(steps, func(i, j int) bool { return steps[i].At < steps[j].At })
	return steps, sc.Err()
}

// traceTable renders a start trace with each step's gap from the one
// before: the long gaps are the critical path's costs.
func traceTable(sys string, run int, steps []traceStep) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nstart trace, %s run %d (s after exec):\n\n| step | at | since the step before |\n|---|---:|---:|\n", sys, run)
	prev := 0.0
	for _, s := range steps {
		fmt.Fprintf(&b, "| %s | %.2f | %.2f |\n", s.Step, s.At, s.At-prev)
		prev = s.At
	}
	return b.String()
}

// traceOf is a run's start trace, as the child recorded it.
func traceOf(r *runResult) []traceStep {
	raw, ok := r.Raw["start_trace"]
	if !ok {
		return nil
	}
	data, err := json.Marshal(raw)
	if err != nil {
		return nil
	}
	var steps []traceStep
	if json.Unmarshal(data, &steps) != nil {
		return nil
	}
	return steps
}

// traces renders the start trace of each system's first run that has one.
func (r *results) traces() string {
	var b strings.Builder
	done := map[string]bool{}
	for _, run := range r.Runs {
		if steps := traceOf(run); len(steps) > 0 && !done[run.System] {
			done[run.System] = true
			b.WriteString(traceTable(run.System, run.Run, steps))
		}
	}
	return b.String()
}
