#!/bin/sh
# kedge-killall.sh: stop kedge and everything it started on this host: the
# kedge process, containerd, the containerd shims with their containers,
# the mounts under kedge's directories, pod network namespaces, the pod
# bridge and kedge's iptables rules. Data is kept (kedge-uninstall.sh
# removes it).
#
# kedge's processes are found precisely, never by a bare name: by the PID
# files in the run dir and by the containerd socket path on the shims'
# command lines.
#
# Environment: KEDGE_DATA_DIR (default /var/lib/kedge),
#              KEDGE_RUN_DIR (default /run/kedge).
#
# install.sh carries a copy of this script, which it installs beside kedge:
# after editing, run go test ./tests/install -run TestKillallEmbedded -update
set -eu

info() { echo "kedge-killall: $*" >&2; }

# stop_pidfile FILE: TERM the process named in FILE, KILL it after 10s.
stop_pidfile() {
    [ -f "$1" ] || return 0
    pid=$(cat "$1")
    case $pid in '' | *[!0-9]*) return 0 ;; esac
    kill -0 "$pid" 2>/dev/null || return 0
    info "stopping $(basename "$1" .pid) (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# descendants PID...: the PIDs given and all their descendants, from one
# scan of /proc (no recursion: POSIX sh has no local variables).
descendants() {
    for stat in /proc/[0-9]*/stat; do
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        sed -n 's/^\([0-9]*\) .*) [A-Za-z] \([0-9]*\) .*/\1 \2/p' "$stat" 2>/dev/null
    done | awk -v roots="$*" '
        { parent[$1] = $2 }
        END {
            n = split(roots, r, " ")
            for (i = 1; i <= n; i++) keep[r[i]] = 1
            for (changed = 1; changed; ) {
                changed = 0
                for (p in parent)
                    if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 }
            }
            for (p in keep) print p
        }'
}

# kedge_shims: PIDs of shims serving kedge's containerd socket.
kedge_shims() {
    sock=$KEDGE_RUN_DIR/containerd/containerd.sock
    for cmdline in /proc/[0-9]*/cmdline; do
        args=$(tr '\0' ' ' <"$cmdline" 2>/dev/null) || continue
        case $args in
        *containerd-shim*"-address $sock "*)
            p=${cmdline#/proc/}
            echo "${p%/cmdline}"
            ;;
        esac
    done
}

kill_shims() {
    shims=$(kedge_shims)
    [ -n "$shims" ] || return 0
    # shellcheck disable=SC2086 # word splitting of the PID list is wanted
    pids=$(descendants $shims | sort -u)
    info "killing $(echo "$shims" | wc -w) containerd shims and their containers"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
}

# kill_orphan_containers kills containers whose shim is gone (it died,
# or was killed, without them): their init PIDs are in containerd's task
# state in the run dir. A PID is killed only if its cgroup names the
# container, so a PID reused since is left alone.
kill_orphan_containers() {
    for pidfile in "$KEDGE_RUN_DIR"/containerd/state/io.containerd.runtime.v2.task/*/*/init.pid; do
        [ -f "$pidfile" ] || continue
        dir=${pidfile%/init.pid}
        id=${dir##*/}
        pid=$(cat "$pidfile" 2>/dev/null) || continue
        case $pid in '' | *[!0-9]*) continue ;; esac
        grep -q -e "$id" "/proc/$pid/cgroup" 2>/dev/null || continue
        info "killing container $id (pid $pid), whose shim is gone"
        kill -KILL "$pid" 2>/dev/null || true
    done
}

# unmount_under DIR: unmount everything mounted under DIR, deepest first.
unmount_under() {
    [ -d "$1" ] || return 0
    awk -v dir="$1" '$2 == dir || index($2, dir "/") == 1 { print $2 }' /proc/self/mounts |
        sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || info "cannot unmount $m"
    done
}

remove_network() {
    for link in cni0 flannel.1; do
        if ip link show "$link" >/dev/null 2>&1; then
            info "deleting interface $link"
            ip link delete "$link" || true
        fi
    done
    for ipt in iptables ip6tables; do
        command -v "$ipt-save" >/dev/null 2>&1 || continue
        # Chains the CNI plugins made for kedge's network ("name: \"kedge\""
        # in their rules' comments), and the rules that jump to them.
        chains=$("$ipt-save" -t nat 2>/dev/null | awk '/name: \\"kedge\\"/ { for (i = 1; i <= NF; i++) if ($i == "-A" || $i == "-j") print $(i + 1) }' | grep '^CNI-' | sort -u) || true
        for chain in $chains; do
            "$ipt-save" -t nat | awk -v c="$chain" '$1 == "-A" && $0 ~ ("-j " c "( |$)") { $1 = "-D"; print }' |
                while read -r rule; do
                    # iptables-save quotes comments the way the shell does.
                    eval "\"\$ipt\" -t nat $rule" 2>/dev/null || true
                done
            "$ipt" -t nat -F "$chain" 2>/dev/null || true
            "$ipt" -t nat -X "$chain" 2>/dev/null || true
        done
    done
}

# remove_nft_masquerade removes the nftables masquerade rules the bridge
# plugin made for kedge's network ("net: kedge" in their comments), and its
# table once no rule is left in it.
remove_nft_masquerade() {
    command -v nft >/dev/null 2>&1 || return 0
    t=cni_plugins_masquerade
    nft list table inet "$t" >/dev/null 2>&1 || return 0
    nft -a list chain inet "$t" masq_checks 2>/dev/null |
        awk '/net: kedge,/ { print $NF }' | while read -r handle; do
        nft delete rule inet "$t" masq_checks handle "$handle" 2>/dev/null || true
    done
    if ! nft list chain inet "$t" masq_checks 2>/dev/null | grep -q 'saddr'; then
        nft delete table inet "$t" 2>/dev/null || true
    fi
}

# remove_unused_portmap_chains removes the portmap plugin's shared
# CNI-HOSTPORT-* chains once no container rule is left in them (any CNI
# user on the host shares them, so they stay while one is in use).
remove_unused_portmap_chains() {
    for ipt in iptables ip6tables; do
        command -v "$ipt-save" >/dev/null 2>&1 || continue
        dump=$("$ipt-save" -t nat 2>/dev/null) || continue
        echo "$dump" | grep -q '^:CNI-HOSTPORT-DNAT' || continue
        echo "$dump" | grep -q '^-A CNI-HOSTPORT-DNAT ' && continue
        echo "$dump" | grep -v -e '^:CNI-HOSTPORT-' -e '^-A CNI-HOSTPORT-' -e '-j CNI-HOSTPORT-' |
            "$ipt-restore" -T nat || info "cannot remove the portmap chains from $ipt"
    done
}

# remove_kube_proxy_rules removes kube-proxy's chains (its own KUBE-
# namespace), flannel's (FLANNEL-) and kedge's own (KEDGE-: the node API
# cache's redirect for pods, the NetworkPolicy queue) and every rule
# jumping to them, one table at a time, kube-proxy's nftables tables and
# the NetworkPolicy engine's.
remove_kube_proxy_rules() {
    for ipt in iptables ip6tables; do
        command -v "$ipt-save" >/dev/null 2>&1 || continue
        for table in nat filter mangle; do
            dump=$("$ipt-save" -t "$table" 2>/dev/null) || continue
            echo "$dump" | grep -q -e 'KUBE-' -e 'FLANNEL-' -e 'KEDGE-' || continue
            echo "$dump" | grep -v -e '^:KUBE-' -e '^-A KUBE-' -e '-j KUBE-' \
                -e '^:FLANNEL-' -e '^-A FLANNEL-' -e '-j FLANNEL-' \
                -e '^:KEDGE-' -e '^-A KEDGE-' -e '-j KEDGE-' | "$ipt-restore" -T "$table" ||
                info "cannot remove kube-proxy's $ipt $table rules"
        done
    done
    if command -v nft >/dev/null 2>&1; then
        for family in ip ip6; do
            nft delete table "$family" kube-proxy 2>/dev/null || true
        done
        nft delete table inet kedge-network-policies 2>/dev/null || true
    fi
}

# use_carried_tools puts the iptables, nft and conntrack kedge carries
# (unpacked under the data dir) first on PATH, as kedge itself does, so
# its rules are found on a host without those packages.
use_carried_tools() {
    for dir in "$KEDGE_DATA_DIR"/data/*/nettools/sbin; do
        [ -x "$dir/iptables" ] || continue
        PATH=$dir:$PATH
    done
    export PATH
}

main() {
    KEDGE_DATA_DIR=${KEDGE_DATA_DIR:-/var/lib/kedge}
    KEDGE_RUN_DIR=${KEDGE_RUN_DIR:-/run/kedge}
    if [ "$(id -u)" != 0 ]; then
        info "must run as root"
        exit 1
    fi
    use_carried_tools
    stop_pidfile "$KEDGE_RUN_DIR/kedge-agent.pid"
    stop_pidfile "$KEDGE_RUN_DIR/kedge.pid"
    stop_pidfile "$KEDGE_RUN_DIR/containerd/containerd.pid"
    kill_shims
    kill_orphan_containers
    unmount_under "$KEDGE_RUN_DIR"
    unmount_under "$KEDGE_DATA_DIR/agent/kubelet"
    unmount_under "$KEDGE_DATA_DIR/agent/containerd"
    remove_network
    remove_nft_masquerade
    remove_unused_portmap_chains
    remove_kube_proxy_rules
    rm -rf "${KEDGE_RUN_DIR:?}"/containerd "$KEDGE_RUN_DIR/kedge.pid" "$KEDGE_RUN_DIR/kedge-agent.pid"
    info "done"
}

main "$@"
