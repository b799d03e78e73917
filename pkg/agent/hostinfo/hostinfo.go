// Package hostinfo detects the host facts the agent's configuration depends
// on (cgroup version and driver, capabilities), so none are hard-coded.
package hostinfo

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// Facts about the host.
type Facts struct {
	// CgroupV2 is true on a unified (v2-only) cgroup hierarchy.
	CgroupV2 bool
	// SystemdCgroups is true when systemd manages cgroups (it is PID 1).
	SystemdCgroups bool
	// CanLowerOOMScoreAdj is false without CAP_SYS_RESOURCE (some VMs and
	// containers): runc then cannot lower a container's oom_score_adj below
	// kedge's own, and containerd must be told to restrict it.
	CanLowerOOMScoreAdj bool
}

const capSysResource = 24

// Detect reads the facts from /sys and /proc.
func Detect() Facts {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	_, sd := os.Stat("/run/systemd/system")
	return Facts{
		CgroupV2:            err == nil,
		SystemdCgroups:      sd == nil,
		CanLowerOOMScoreAdj: hasCapability(capSysResource),
	}
}

// CgroupDriver is the driver kubelet and runc must share.
func (f Facts) CgroupDriver() string {
	if f.SystemdCgroups {
		return "systemd"
	}
	return "cgroupfs"
}

func hasCapability(bit uint) bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<bit) != 0
		}
	}
	return false
}
