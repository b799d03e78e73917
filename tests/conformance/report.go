package main

import (
	"encoding/xml"
	"fmt"
	"os"
	"strings"
	"time"
)

// junitSuites is the part of ginkgo's JUnit report the summary reads.
type junitSuites struct {
	Suites []struct {
		Cases []struct {
			Name   string `xml:"name,attr"`
			Status string `xml:"status,attr"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// passResult is what one pass's report says.
type passResult struct {
	name    string
	took    time.Duration
	passed  []string
	failed  []string
	skipped int
}

// readJUnit reads a ginkgo JUnit report. Tests are its "[It]" cases; a
// failed setup node (a [BeforeSuite], say) counts as a failure too, under
// its own name, since no test after it counts.
func readJUnit(path string) (passResult, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return passResult{}, err
	}
	var s junitSuites
	if err := xml.Unmarshal(data, &s); err != nil {
		return passResult{}, fmt.Errorf("%s: %w", path, err)
	}
	var r passResult
	for _, suite := range s.Suites {
		for _, tc := range suite.Cases {
			test := strings.HasPrefix(tc.Name, "[It] ")
			name := strings.TrimPrefix(tc.Name, "[It] ")
			switch tc.Status {
			case "passed":
				if test {
					r.passed = append(r.passed, name)
				}
			case "skipped", "pending":
				if test {
					r.skipped++
				}
			default: // failed, panicked, interrupted, timedout, aborted
				r.failed = append(r.failed, fmt.Sprintf("%s (%s)", name, tc.Status))
			}
		}
	}
	return r, nil
}

// summarize is summary.txt: a line per pass, the total, and each failed
// test by name.
func summarize(o runOptions, passes []passResult, took time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "kedge conformance run, %s, suite %s, focus %q", time.Now().UTC().Format("2006-01-02 15:04 MST"), o.version, o.focus)
	if o.skip != "" {
		fmt.Fprintf(&b, ", skip %q", o.skip)
	}
	fmt.Fprintf(&b, ", 2 nodes, took %s\n", took.Round(time.Minute))
	var passed, failed int
	for _, p := range passes {
		fmt.Fprintf(&b, "%s: %d passed, %d failed (%s)\n", p.name, len(p.passed), len(p.failed), p.took.Round(time.Second))
		passed += len(p.passed)
		failed += len(p.failed)
	}
	fmt.Fprintf(&b, "total: %d passed, %d failed\n", passed, failed)
	for _, p := range passes {
		for _, f := range p.failed {
			fmt.Fprintf(&b, "FAILED [%s] %s\n", p.name, f)
		}
	}
	return b.String()
}
