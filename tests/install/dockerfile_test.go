package install

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// No Docker engine runs where kedge is developed, and hadolint cannot be
// installed from the registries here, so this test is the Dockerfile's
// lint: it checks what hadolint's main rules and the image's purpose ask.
//   - multi-stage; the build stage builds kedge with scripts/build, as
//     everyone does; base images pinned to a tag, never :latest
//   - apt-get install with --no-install-recommends and -y, after update in
//     the same RUN, which then removes /var/lib/apt/lists
//   - the final image holds kedge from the build stage, the kubectl,
//     crictl and ctr symlinks and the host tools kedge uses; exec-form
//     ENTRYPOINT kedge; /var/lib/kedge is a volume
//   - .dockerignore keeps .git and build outputs out of the context
//
// A manual check where Docker runs: docker build -t kedge . && docker run
// -d --privileged --name kedge kedge server && docker exec kedge kubectl
// get nodes (Ready within a minute or two).
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	instrs := dockerInstructions(string(data))
	var froms, runs []string
	for _, in := range instrs {
		switch in[0] {
		case "FROM":
			froms = append(froms, in[1])
		case "RUN":
			runs = append(runs, in[1])
		}
	}
	if len(froms) < 2 {
		t.Fatalf("want a multi-stage build, got FROM %q", froms)
	}
	for _, f := range froms {
		image := strings.Fields(f)[0]
		if !strings.Contains(image, ":") || strings.HasSuffix(image, ":latest") {
			t.Errorf("FROM %s: pin the base image to a tag", image)
		}
	}
	if !strings.HasSuffix(froms[0], " AS build") {
		t.Errorf("the first stage should be named build: FROM %s", froms[0])
	}
	built := false
	for _, r := range runs {
		if strings.Contains(r, "./scripts/build bin/kedge") {
			built = true
		}
		if strings.Contains(r, "apt-get install") {
			if !strings.Contains(r, "apt-get update") || !strings.Contains(r, "--no-install-recommends") ||
				!strings.Contains(r, " -y") || !strings.Contains(r, "rm -rf /var/lib/apt/lists/*") {
				t.Errorf("RUN %s: apt-get update, install -y --no-install-recommends and rm -rf /var/lib/apt/lists/* in one RUN", r)
			}
		}
	}
	if !built {
		t.Error("the build stage does not run ./scripts/build bin/kedge")
	}

	final := instrs[lastFrom(instrs):]
	text := ""
	for _, in := range final {
		text += in[0] + " " + in[1] + "\n"
	}
	for _, want := range []string{
		"COPY --from=build /src/bin/kedge /usr/local/bin/kedge\n",
		"ln -s kedge /usr/local/bin/kubectl", "ln -s kedge /usr/local/bin/crictl", "ln -s kedge /usr/local/bin/ctr",
		"iptables", "iproute2", "ca-certificates", "nftables",
		`ENTRYPOINT ["/usr/local/bin/kedge"]` + "\n",
		"VOLUME /var/lib/kedge",
		`CMD ["server"]` + "\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the final stage lacks %q:\n%s", want, text)
		}
	}

	ignore, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".git", "bin/", "dist/"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).Match(ignore) {
			t.Errorf(".dockerignore lacks %s", want)
		}
	}
}

// dockerInstructions splits a Dockerfile into [instruction, arguments],
// joining continuation lines and dropping comments.
func dockerInstructions(text string) [][2]string {
	var out [][2]string
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if rest, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(rest)
			continue
		}
		cur.WriteString(trimmed)
		if s := cur.String(); s != "" {
			word, args, _ := strings.Cut(s, " ")
			out = append(out, [2]string{strings.ToUpper(word), strings.Join(strings.Fields(args), " ")})
		}
		cur.Reset()
	}
	return out
}

func lastFrom(instrs [][2]string) int {
	last := 0
	for i, in := range instrs {
		if in[0] == "FROM" {
			last = i
		}
	}
	return last
}
