package images

import "testing"

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"myapp:v1":                   "docker.io/library/myapp:v1",
		"myapp":                      "docker.io/library/myapp:latest",
		"team/app:v2":                "docker.io/team/app:v2",
		"kedge.test/hello:v1":        "kedge.test/hello:v1",
		"registry.lan:5000/app:1":    "registry.lan:5000/app:1",
		"docker.io/library/myapp:v1": "docker.io/library/myapp:v1",
		"Not A Reference!":           "Not A Reference!",
	} {
		if got := Normalize(in); got != want {
			t.Errorf("Normalize(%q) = %q, want %q", in, got, want)
		}
	}
}
