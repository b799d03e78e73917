package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/kedge-dev/kedge/pkg/config"
	"github.com/kedge-dev/kedge/pkg/payload"
)

// runCrictl execs the crictl kedge carries, pointed at kedge's containerd
// unless the user chose another endpoint.
func runCrictl(args []string) error {
	dataDir := os.Getenv(config.EnvName("data-dir"))
	if dataDir == "" {
		dataDir = config.DefaultDataDir
	}
	bin, err := payload.Extract(dataDir)
	if err != nil {
		return fmt.Errorf("crictl: %w", err)
	}
	runDir := os.Getenv(config.EnvName("run-dir"))
	if runDir == "" {
		runDir = config.DefaultRunDir
	}
	endpoint := "unix://" + filepath.Join(runDir, "containerd", "containerd.sock")
	env := os.Environ()
	if os.Getenv("CRI_CONFIG_FILE") == "" {
		if _, err := os.Stat("/etc/crictl.yaml"); err != nil {
			// crictl's own config, so it neither warns about a missing
			// /etc/crictl.yaml nor tries the default endpoints first.
			conf := filepath.Join(runDir, "crictl.yaml")
			data := fmt.Sprintf("runtime-endpoint: %s\nimage-endpoint: %s\n", endpoint, endpoint)
			if err := os.WriteFile(conf, []byte(data), 0o644); err == nil {
				env = append(env, "CRI_CONFIG_FILE="+conf)
			}
		}
	}
	if os.Getenv("CONTAINER_RUNTIME_ENDPOINT") == "" {
		env = append(env, "CONTAINER_RUNTIME_ENDPOINT="+endpoint)
	}
	if os.Getenv("IMAGE_SERVICE_ENDPOINT") == "" {
		env = append(env, "IMAGE_SERVICE_ENDPOINT="+endpoint)
	}
	crictl := filepath.Join(bin, "crictl")
	return syscall.Exec(crictl, append([]string{"crictl"}, args...), env)
}
