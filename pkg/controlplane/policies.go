package controlplane

import (
	"os"
	"path/filepath"

	"github.com/kedge-dev/kedge/pkg/config"
	"github.com/kedge-dev/kedge/pkg/datadir"
)

// podSecurity enforces the baseline Pod Security Standard everywhere but
// in kube-system, and warns about and audits what restricted would
// refuse, as k3s's CIS hardening guide does. A namespace labelled
// pod-security.kubernetes.io/enforce=privileged opts out.
const podSecurity = `# Written by kedge at every start; replace it with --pod-security-admission-config-file.
apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
- name: PodSecurity
  configuration:
    apiVersion: pod-security.admission.config.k8s.io/v1
    kind: PodSecurityConfiguration
    defaults:
      enforce: baseline
      enforce-version: latest
      audit: restricted
      audit-version: latest
      warn: restricted
      warn-version: latest
    exemptions:
      usernames: []
      runtimeClasses: []
      namespaces: [kube-system]
`

// auditPolicy records every request's metadata (not bodies: no Secret
// contents in the log).
const auditPolicy = `# Written by kedge at every start (--audit-log-path).
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  users: ["system:kube-proxy", "system:kedge-servicelb", "system:kedge-flannel"]
  verbs: [watch]
- level: Metadata
`

// Policies writes the PodSecurity and audit policies into credDir and
// returns the files the apiserver is given ("" for none).
func Policies(c config.Config, credDir string) (podSecurityFile, auditPolicyFile string, err error) {
	podSecurityFile = c.PodSecurityAdmissionConfigFile
	if podSecurityFile == "" {
		podSecurityFile = filepath.Join(credDir, "pod-security.yaml")
		if err := datadir.WriteFileAtomic(podSecurityFile, []byte(podSecurity), 0o600); err != nil {
			return "", "", err
		}
	} else if _, err := os.Stat(podSecurityFile); err != nil {
		return "", "", err
	}
	if c.AuditLogPath != "" {
		auditPolicyFile = filepath.Join(credDir, "audit-policy.yaml")
		if err := datadir.WriteFileAtomic(auditPolicyFile, []byte(auditPolicy), 0o600); err != nil {
			return "", "", err
		}
		if err := os.MkdirAll(filepath.Dir(c.AuditLogPath), 0o700); err != nil {
			return "", "", err
		}
	}
	return podSecurityFile, auditPolicyFile, nil
}
