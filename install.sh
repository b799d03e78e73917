#!/bin/sh
# kedge installer: installs the kedge binary, a service that runs it, the
# kubectl/crictl/ctr symlinks, kedge-killall.sh and an uninstall script.
#
#   curl -sfL https://HOST/install.sh | sh -                       # a server
#   curl -sfL https://HOST/install.sh | sh -s - --disable coredns   # a server, with flags
#   curl -sfL https://HOST/install.sh | KEDGE_URL=https://server:6443 KEDGE_TOKEN=... sh -
#                                                                   # an agent
#
# Arguments (after "sh -s -") and INSTALL_KEDGE_EXEC become kedge's command
# line: an optional command (server or agent) and its flags. Without a
# command it is "agent" when KEDGE_URL is set, else "server".
#
# Every KEDGE_* variable in the installer's environment (and HTTP_PROXY,
# HTTPS_PROXY, NO_PROXY) is written to the service's environment file,
# <config dir>/<name>.env (mode 0600), which the service reads: kedge takes
# every flag from KEDGE_<FLAG> (e.g. KEDGE_DATA_DIR, KEDGE_NODE_NAME).
#
# Re-running the installer is an upgrade: the binary, unit and environment
# file are replaced, and the service is restarted only if one of them
# changed. Re-run it with the same variables and arguments.
#
# Variables:
#   KEDGE_URL, KEDGE_TOKEN       the server an agent joins, and its token
#   INSTALL_KEDGE_VERSION        release to install (default: the latest)
#   INSTALL_KEDGE_DOWNLOAD_URL   base URL of the release artifacts
#                                (kedge-<arch> and kedge-<arch>.sha256), for
#                                mirrors and air-gapped sites; default
#                                https://github.com/kedge-dev/kedge/releases/download/<version>
#                                or .../releases/latest/download
#   INSTALL_KEDGE_SKIP_DOWNLOAD  true: use the kedge binary already in the bin dir
#   INSTALL_KEDGE_SKIP_ADDONS    true: do not fetch kedge-addons-<arch>.tar.zst,
#                                the optional archive of add-on images
#                                (Traefik, the Ingress controller)
#   INSTALL_KEDGE_BIN_DIR        where kedge, its symlinks and scripts go
#                                (default /usr/local/bin)
#   INSTALL_KEDGE_EXEC           kedge command and flags (split at spaces)
#   INSTALL_KEDGE_NAME           service name (default kedge, or kedge-agent)
#   INSTALL_KEDGE_SKIP_ENABLE    true: neither enable nor start the service
#   INSTALL_KEDGE_SKIP_START     true: enable the service, do not (re)start it
#   INSTALL_KEDGE_SYMLINK        skip: no kubectl/crictl/ctr symlinks; force:
#                                replace whatever has those names in the bin
#                                dir. By default a symlink is made only where
#                                no other program of that name exists.
#   INSTALL_KEDGE_INIT           systemd, openrc or none (default: detected;
#                                none installs everything but a service)
#   INSTALL_KEDGE_SYSTEMD_DIR    where the systemd unit goes (default /etc/systemd/system)
#   INSTALL_KEDGE_OPENRC_DIR     where the OpenRC service goes (default /etc/init.d)
#   INSTALL_KEDGE_CONFIG_DIR     kedge's config dir, which holds the
#                                environment file (default /etc/kedge)
#
# The data and run dirs the uninstall script removes are KEDGE_DATA_DIR and
# KEDGE_RUN_DIR, or --data-dir and --run-dir among the arguments (defaults
# /var/lib/kedge and /run/kedge).
#
# The whole script is functions and one "main" call on its last line, so a
# truncated download does nothing.
set -eu

GITHUB_URL=https://github.com/kedge-dev/kedge/releases

info() { echo "[kedge-install] $*" >&2; }
warn() { echo "[kedge-install] WARNING: $*" >&2; }
fatal() {
    echo "[kedge-install] ERROR: $*" >&2
    exit 1
}

is_true() {
    case ${1:-} in
    true | TRUE | True | yes | 1) return 0 ;;
    *) return 1 ;;
    esac
}

# sh_quote VALUE: VALUE single-quoted for sh (and systemd's environment files).
sh_quote() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# unit_quote VALUE: VALUE quoted for a systemd ExecStart= line, where "\",
# "%" and "$" are special even inside quotes.
unit_quote() {
    printf "'%s'" "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g" -e 's/%/%%/g' -e 's/\$/$$/g')"
}

# setup_env reads the variables and arguments into the settings below.
setup_env() {
    BIN_DIR=${INSTALL_KEDGE_BIN_DIR:-/usr/local/bin}
    SYSTEMD_DIR=${INSTALL_KEDGE_SYSTEMD_DIR:-/etc/systemd/system}
    OPENRC_DIR=${INSTALL_KEDGE_OPENRC_DIR:-/etc/init.d}
    CONFIG_DIR=${INSTALL_KEDGE_CONFIG_DIR:-/etc/kedge}
    SYMLINK=${INSTALL_KEDGE_SYMLINK:-}
    case $SYMLINK in
    '' | skip | force) ;;
    *) fatal "INSTALL_KEDGE_SYMLINK=$SYMLINK: use skip or force" ;;
    esac
    if [ -n "${KEDGE_URL:-}" ]; then
        case $KEDGE_URL in
        https://*) ;;
        *) fatal "KEDGE_URL=$KEDGE_URL: the server's URL must start with https:// (e.g. https://server:6443)" ;;
        esac
    fi

    # The command, then its flags.
    case ${1:-} in
    server | agent)
        COMMAND=$1
        shift
        ;;
    '' | -*)
        if [ -n "${KEDGE_URL:-}" ]; then COMMAND=agent; else COMMAND=server; fi
        ;;
    *) fatal "unknown kedge command \"$1\": the first argument is server, agent or a flag" ;;
    esac
    if [ "$COMMAND" = agent ] && [ -z "${KEDGE_URL:-}" ] && [ -z "${KEDGE_SERVER:-}" ]; then
        fatal "an agent needs the server's URL: set KEDGE_URL=https://SERVER:6443 and KEDGE_TOKEN"
    fi
    if [ -n "${KEDGE_URL:-}" ] && [ -z "${KEDGE_TOKEN:-}" ]; then
        fatal "KEDGE_URL is set but KEDGE_TOKEN is not: an agent needs the server's token (on the server: <data-dir>/server/token)"
    fi
    DATA_DIR=${KEDGE_DATA_DIR:-/var/lib/kedge}
    RUN_DIR=${KEDGE_RUN_DIR:-/run/kedge}
    prev=""
    for arg in "$@"; do
        case $prev in
        --data-dir | -d) DATA_DIR=$arg ;;
        --run-dir) RUN_DIR=$arg ;;
        esac
        case $arg in
        --data-dir=*) DATA_DIR=${arg#--data-dir=} ;;
        --run-dir=*) RUN_DIR=${arg#--run-dir=} ;;
        esac
        prev=$arg
    done
    UNIT_ARGS=$(unit_quote "$COMMAND")
    SH_ARGS=$(sh_quote "$COMMAND")
    for arg in "$@"; do
        UNIT_ARGS="$UNIT_ARGS \\
    $(unit_quote "$arg")"
        SH_ARGS="$SH_ARGS $(sh_quote "$arg")"
    done

    if [ "$COMMAND" = agent ]; then NAME=${INSTALL_KEDGE_NAME:-kedge-agent}; else NAME=${INSTALL_KEDGE_NAME:-kedge}; fi
    case $NAME in
    '' | *[!A-Za-z0-9_.-]*) fatal "INSTALL_KEDGE_NAME=$NAME: use letters, digits, '.', '_' and '-'" ;;
    esac
    ENV_FILE=$CONFIG_DIR/$NAME.env
    BIN=$BIN_DIR/kedge
    KILLALL=$BIN_DIR/kedge-killall.sh
    UNINSTALL=$BIN_DIR/$NAME-uninstall.sh
}

# setup_init picks the service manager: INIT is systemd, openrc or none.
setup_init() {
    INIT=${INSTALL_KEDGE_INIT:-}
    if [ -z "$INIT" ]; then
        # systemd's own test that it runs the host (sd_booted).
        if [ -d /run/systemd/system ]; then
            INIT=systemd
        elif [ -x /sbin/openrc-run ]; then
            INIT=openrc
        else
            INIT=none
        fi
    fi
    case $INIT in
    systemd) SERVICE_FILE=$SYSTEMD_DIR/$NAME.service ;;
    openrc) SERVICE_FILE=$OPENRC_DIR/$NAME ;;
    none) SERVICE_FILE="" ;;
    *) fatal "INSTALL_KEDGE_INIT=$INIT: use systemd, openrc or none" ;;
    esac
}

check_root() {
    if [ "$(id -u)" != 0 ]; then
        fatal "run the installer as root (curl -sfL ... | sudo sh -)"
    fi
}

# detect_arch sets ARCH to the release artifact's architecture.
detect_arch() {
    machine=$(uname -m)
    case $machine in
    x86_64 | amd64) ARCH=amd64 ;;
    aarch64 | arm64) ARCH=arm64 ;;
    armv7l | armv8l | armhf) ARCH=armv7 ;;
    *) fatal "unsupported architecture \"$machine\" (uname -m): kedge is released for x86_64 (amd64), aarch64 (arm64) and armv7l (armv7)" ;;
    esac
}

# download URL FILE with curl or wget.
download() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL -o "$2" "$1" || fatal "download $1 failed (curl)"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$2" "$1" || fatal "download $1 failed (wget)"
    else
        fatal "neither curl nor wget is installed: install one, or download kedge yourself and use INSTALL_KEDGE_SKIP_DOWNLOAD=true"
    fi
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | awk '{ print $1 }'
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | awk '{ print $1 }'
    else
        fatal "neither sha256sum nor shasum is installed: cannot verify the download"
    fi
}

# fetch_binary downloads kedge-<arch> and its checksum into TMP_DIR and
# verifies it; NEW_BIN is the verified file. Nothing is installed yet.
fetch_binary() {
    if is_true "${INSTALL_KEDGE_SKIP_DOWNLOAD:-}"; then
        [ -x "$BIN" ] || fatal "INSTALL_KEDGE_SKIP_DOWNLOAD is set but $BIN is not an executable file: copy kedge-<arch> there first"
        NEW_BIN=$BIN
        info "using $BIN (INSTALL_KEDGE_SKIP_DOWNLOAD)"
        return 0
    fi
    detect_arch
    if [ -n "${INSTALL_KEDGE_DOWNLOAD_URL:-}" ]; then
        base=${INSTALL_KEDGE_DOWNLOAD_URL%/}
    elif [ -n "${INSTALL_KEDGE_VERSION:-}" ]; then
        base=$GITHUB_URL/download/$INSTALL_KEDGE_VERSION
    else
        base=$GITHUB_URL/latest/download
    fi
    artifact=kedge-$ARCH
    info "downloading $base/$artifact"
    download "$base/$artifact.sha256" "$TMP_DIR/$artifact.sha256"
    download "$base/$artifact" "$TMP_DIR/$artifact"
    want=$(awk -v f="$artifact" '$2 == f || $2 == "*" f { print $1; exit }' "$TMP_DIR/$artifact.sha256")
    case $want in
    '' | *[!0-9a-f]*) fatal "$base/$artifact.sha256 has no sha256 for $artifact (want \"<hex>  $artifact\")" ;;
    esac
    got=$(sha256_of "$TMP_DIR/$artifact")
    if [ "$got" != "$want" ]; then
        fatal "checksum mismatch for $base/$artifact: got sha256 $got, want $want. Nothing was installed."
    fi
    info "verified sha256 $got"
    chmod 0755 "$TMP_DIR/$artifact"
    NEW_BIN=$TMP_DIR/$artifact
}

# try_download URL FILE is download that fails quietly (status 1).
try_download() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL -o "$2" "$1" 2>/dev/null
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$2" "$1"
    else
        return 1
    fi
}

# fetch_addons downloads and verifies kedge-addons-<arch>.tar.zst, the
# release's add-on images, into TMP_DIR; NEW_ADDONS is the file, or empty
# when the release has none (kedge then runs without them: an Ingress
# stays unserved until the archive is in the images dir).
fetch_addons() {
    NEW_ADDONS=""
    if is_true "${INSTALL_KEDGE_SKIP_ADDONS:-}" || is_true "${INSTALL_KEDGE_SKIP_DOWNLOAD:-}"; then
        return 0
    fi
    artifact=kedge-addons-$ARCH.tar.zst
    if ! try_download "$base/$artifact.sha256" "$TMP_DIR/$artifact.sha256"; then
        warn "no $base/$artifact: installing without the add-on images (Traefik); see the README, \"Ingress\""
        return 0
    fi
    download "$base/$artifact" "$TMP_DIR/$artifact"
    want=$(awk -v f="$artifact" '$2 == f || $2 == "*" f { print $1; exit }' "$TMP_DIR/$artifact.sha256")
    got=$(sha256_of "$TMP_DIR/$artifact")
    if [ -z "$want" ] || [ "$got" != "$want" ]; then
        fatal "checksum mismatch for $base/$artifact: got sha256 $got, want ${want:-none}. Nothing was installed."
    fi
    info "verified sha256 $got ($artifact)"
    NEW_ADDONS=$TMP_DIR/$artifact
}

# install_addons puts the add-on images where kedge imports them (at
# start, and within seconds while it runs: no restart needed).
install_addons() {
    [ -n "$NEW_ADDONS" ] || return 0
    make_dir "$DATA_DIR/agent"
    mkdir -p "$DATA_DIR/agent/images"
    chmod 0700 "$DATA_DIR/agent/images"
    put_file 0644 "$DATA_DIR/agent/images/kedge-addons.tar.zst" <"$NEW_ADDONS"
}

# make_dir DIR creates DIR and its parents, readable by all (the umask is
# 077 for the files).
make_dir() {
    (
        umask 022
        mkdir -p "$1"
    )
}

# put_file MODE DEST writes stdin to DEST (atomically, with MODE) unless it
# already holds exactly that; WROTE tells which.
put_file() {
    cat >"$TMP_DIR/put"
    WROTE=false
    if [ -f "$2" ] && cmp -s "$TMP_DIR/put" "$2"; then
        chmod "$1" "$2"
        return 0
    fi
    make_dir "$(dirname "$2")"
    cp "$TMP_DIR/put" "$2.kedge-new"
    chmod "$1" "$2.kedge-new"
    mv -f "$2.kedge-new" "$2"
    WROTE=true
    info "installed $2"
}

# install_binary installs NEW_BIN as BIN. BIN_SHA, its checksum, is
# recorded in the environment file, so that a binary replaced by hand
# (INSTALL_KEDGE_SKIP_DOWNLOAD) also restarts the service.
install_binary() {
    BIN_SHA=$(sha256_of "$NEW_BIN")
    if [ "$NEW_BIN" = "$BIN" ]; then
        old=$(sed -n 's/^# kedge binary sha256: //p' "$ENV_FILE" 2>/dev/null || true)
        if [ -n "$old" ] && [ "$old" != "$BIN_SHA" ]; then CHANGED="$CHANGED binary"; fi
        return 0
    fi
    if [ -f "$BIN" ] && cmp -s "$NEW_BIN" "$BIN"; then
        info "$BIN is already this version"
        return 0
    fi
    put_file 0755 "$BIN" <"$NEW_BIN"
    CHANGED="$CHANGED binary"
}

# is_ours PATH: PATH is a symlink to kedge.
is_ours() {
    [ -L "$1" ] || return 1
    case $(readlink "$1") in
    kedge | "$BIN") return 0 ;;
    *) return 1 ;;
    esac
}

# install_symlinks links kubectl, crictl and ctr to kedge (which runs the
# built-in tool of the name it is called by), never over another program.
install_symlinks() {
    if [ "$SYMLINK" = skip ]; then
        info "not linking kubectl, crictl, ctr (INSTALL_KEDGE_SYMLINK=skip)"
        return 0
    fi
    for tool in kubectl crictl ctr; do
        link=$BIN_DIR/$tool
        if is_ours "$link"; then
            continue
        fi
        if [ "$SYMLINK" != force ]; then
            if [ -e "$link" ] || [ -L "$link" ]; then
                info "not linking $link: it exists and is not kedge (INSTALL_KEDGE_SYMLINK=force replaces it; or use \"kedge $tool\")"
                continue
            fi
            other=$(command -v "$tool" 2>/dev/null || true)
            if [ -n "$other" ]; then
                info "not linking $link: $other is in PATH (INSTALL_KEDGE_SYMLINK=force links it anyway; or use \"kedge $tool\")"
                continue
            fi
        fi
        info "linking $link to kedge"
        rm -f "$link"
        ln -s kedge "$link"
    done
}

# env_file prints the service's environment: KEDGE_* and the proxy
# variables, sorted, one quoted assignment a line.
env_file() {
    echo "# Environment of the $NAME service, written by kedge's install.sh."
    echo "# kedge binary sha256: $BIN_SHA"
    env | sed -n 's/^\(KEDGE_[A-Za-z0-9_]*\)=.*/\1/p; s/^\(HTTPS\{0,1\}_PROXY\)=.*/\1/p; s/^\(NO_PROXY\)=.*/\1/p' |
        sort -u | while read -r var; do
        eval "value=\${$var:-}"
        # shellcheck disable=SC2154 # set by the eval
        echo "$var=$(sh_quote "$value")"
    done
}

systemd_unit() {
    cat <<EOF
[Unit]
Description=kedge: Kubernetes for the edge ($COMMAND)
Documentation=https://github.com/kedge-dev/kedge
Wants=network-online.target
After=network-online.target

[Install]
WantedBy=multi-user.target

[Service]
# kedge tells systemd when it is ready (sd_notify READY=1).
Type=notify
EnvironmentFile=-$ENV_FILE
# Stopping kedge leaves its containers running (as upstream Kubernetes
# does); kedge-killall.sh stops them.
KillMode=process
Delegate=yes
# Limits as for containerd: accounting belongs to the containers' cgroups.
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
TimeoutStartSec=0
Restart=always
RestartSec=5s
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=$BIN \\
    $UNIT_ARGS
EOF
}

openrc_service() {
    cat <<EOF
#!/sbin/openrc-run
# The $NAME service, written by kedge's install.sh.

depend() {
    after network-online
    want cgroups
}

start_pre() {
    modprobe br_netfilter 2>/dev/null || true
    modprobe overlay 2>/dev/null || true
}

supervisor=supervise-daemon
name=$NAME
command=$(sh_quote "$BIN")
command_args=$(sh_quote "$SH_ARGS")
output_log=/var/log/$NAME.log
error_log=/var/log/$NAME.log
pidfile=/var/run/$NAME.pid
respawn_delay=5
respawn_max=0

set -o allexport
if [ -f /etc/environment ]; then . /etc/environment; fi
if [ -f $(sh_quote "$ENV_FILE") ]; then . $(sh_quote "$ENV_FILE"); fi
set +o allexport
EOF
}

install_service_files() {
    env_file >"$TMP_DIR/env"
    # Only the variables count: the binary's checksum is a comment.
    old_vars=$(grep -v '^#' "$ENV_FILE" 2>/dev/null || true)
    new_vars=$(grep -v '^#' "$TMP_DIR/env" || true)
    put_file 0600 "$ENV_FILE" <"$TMP_DIR/env"
    if [ "$WROTE" = true ] && [ "$old_vars" != "$new_vars" ]; then CHANGED="$CHANGED environment"; fi
    case $INIT in
    systemd)
        systemd_unit >"$TMP_DIR/service"
        put_file 0644 "$SERVICE_FILE" <"$TMP_DIR/service"
        ;;
    openrc)
        openrc_service >"$TMP_DIR/service"
        put_file 0755 "$SERVICE_FILE" <"$TMP_DIR/service"
        ;;
    none) return 0 ;;
    esac
    if [ "$WROTE" = true ]; then CHANGED="$CHANGED service"; fi
}

install_killall() {
    killall_script >"$TMP_DIR/killall"
    put_file 0755 "$KILLALL" <"$TMP_DIR/killall"
}

# killall_script prints scripts/kedge-killall.sh. This copy is generated
# (go test ./tests/install -run TestKillallEmbedded -update), so that
# install.sh, downloaded alone, carries it: edit scripts/kedge-killall.sh.
killall_script() {
    cat <<'KEDGE_KILLALL_EOF'
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
KEDGE_KILLALL_EOF
}

# uninstall_script prints the uninstall script, with this installation's
# paths written in.
uninstall_script() {
    cat <<EOF
#!/bin/sh
# $NAME-uninstall.sh: generated by kedge's install.sh. Stops the $NAME
# service and kedge with its containers (kedge-killall.sh), then removes
# what the installer and kedge created: the service, its environment file,
# the binary, its symlinks and scripts, kedge's config, data and run dirs.
set -eu

NAME=$(sh_quote "$NAME")
INIT=$(sh_quote "$INIT")
SERVICE_FILE=$(sh_quote "$SERVICE_FILE")
ENV_FILE=$(sh_quote "$ENV_FILE")
BIN_DIR=$(sh_quote "$BIN_DIR")
CONFIG_DIR=$(sh_quote "$CONFIG_DIR")
DATA_DIR=$(sh_quote "$DATA_DIR")
RUN_DIR=$(sh_quote "$RUN_DIR")
EOF
    cat <<'EOF'

info() { echo "[kedge-uninstall] $*" >&2; }

stop_service() {
    case $INIT in
    systemd)
        if command -v systemctl >/dev/null 2>&1; then
            systemctl stop "$NAME" || true
            systemctl disable "$NAME" || true
        fi
        ;;
    openrc)
        rc-service "$NAME" stop || true
        rc-update delete "$NAME" default || true
        rm -f "/var/log/$NAME.log"
        ;;
    esac
    if [ -n "$SERVICE_FILE" ]; then rm -f "$SERVICE_FILE"; fi
    rm -f "$ENV_FILE"
    if [ "$INIT" = systemd ] && command -v systemctl >/dev/null 2>&1; then
        systemctl daemon-reload || true
        systemctl reset-failed "$NAME" 2>/dev/null || true
    fi
}

# other_installs prints the uninstall scripts of other kedge services in
# the bin dir (a server and an agent share the binary and the data).
other_installs() {
    for f in "$BIN_DIR"/*-uninstall.sh; do
        if [ -f "$f" ] && [ "$f" != "$BIN_DIR/$NAME-uninstall.sh" ] && grep -q "generated by kedge's install.sh" "$f"; then
            echo "$f"
        fi
    done
}

# remove_dir DIR, unless something is still mounted under it (rm -rf
# would then delete through the mount).
remove_dir() {
    [ -e "$1" ] || return 0
    if awk -v dir="$1" '$2 == dir || index($2, dir "/") == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
        info "not removing $1: something is still mounted under it"
        return 1
    fi
    rm -rf "$1"
    info "removed $1"
}

main() {
    if [ "$(id -u)" != 0 ]; then
        info "must run as root"
        exit 1
    fi
    stop_service
    rm -f "$BIN_DIR/$NAME-uninstall.sh"
    others=$(other_installs)
    if [ -n "$others" ]; then
        info "removed the $NAME service; kedge itself stays for: $others"
        return 0
    fi
    if [ -x "$BIN_DIR/kedge-killall.sh" ]; then
        KEDGE_DATA_DIR=$DATA_DIR KEDGE_RUN_DIR=$RUN_DIR "$BIN_DIR/kedge-killall.sh"
    fi
    for tool in kubectl crictl ctr; do
        link=$BIN_DIR/$tool
        if [ -L "$link" ]; then
            case $(readlink "$link") in
            kedge | "$BIN_DIR/kedge") rm -f "$link" ;;
            esac
        fi
    done
    rm -f "$BIN_DIR/kedge" "$BIN_DIR/kedge-killall.sh"
    status=0
    for dir in "$DATA_DIR" "$RUN_DIR" "$CONFIG_DIR"; do
        remove_dir "$dir" || status=1
    done
    info "kedge is uninstalled"
    return "$status"
}

main "$@"
EOF
}

install_uninstall() {
    uninstall_script >"$TMP_DIR/uninstall"
    put_file 0755 "$UNINSTALL" <"$TMP_DIR/uninstall"
}

# check_cgroups warns when the memory cgroup controller is off (Raspberry
# Pi OS turns it off by default): the kubelet cannot run pods without it.
check_cgroups() {
    if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        grep -qw memory /sys/fs/cgroup/cgroup.controllers && return 0
    elif [ -f /proc/cgroups ]; then
        awk '$1 == "memory" && $4 == 1 { on = 1 } END { exit !on }' /proc/cgroups && return 0
    else
        return 0
    fi
    if [ -f /boot/firmware/cmdline.txt ]; then
        cmdline=/boot/firmware/cmdline.txt
    elif [ -f /boot/cmdline.txt ]; then
        cmdline=/boot/cmdline.txt
    else
        cmdline="/boot/firmware/cmdline.txt (older releases: /boot/cmdline.txt)"
    fi
    warn "the memory cgroup is disabled: kedge cannot run pods until it is enabled.
    Add \"cgroup_memory=1 cgroup_enable=memory\" to the kernel command line and reboot;
    on a Raspberry Pi, append it to the single line of $cmdline."
}

# start_service enables the service and starts it, or restarts it when
# something changed (CHANGED).
start_service() {
    if [ "$INIT" = none ]; then
        warn "neither systemd nor OpenRC runs this host, so no service was installed
    (INSTALL_KEDGE_INIT=systemd or openrc installs one anyway). Start kedge by hand, as root:
    set -a; . $ENV_FILE; set +a
    $BIN $SH_ARGS"
        if [ -n "$CHANGED" ]; then
            info "changed:$CHANGED; restart a running kedge to use them"
        fi
        return 0
    fi
    if is_true "${INSTALL_KEDGE_SKIP_ENABLE:-}"; then
        info "not enabling or starting $NAME (INSTALL_KEDGE_SKIP_ENABLE)"
        return 0
    fi
    case $INIT in
    systemd)
        systemctl daemon-reload
        systemctl enable "$NAME" >/dev/null 2>&1 || systemctl enable "$NAME"
        ;;
    openrc) rc-update add "$NAME" default >/dev/null ;;
    esac
    info "enabled $NAME"
    if is_true "${INSTALL_KEDGE_SKIP_START:-}"; then
        info "not starting $NAME (INSTALL_KEDGE_SKIP_START)"
        return 0
    fi
    if [ -n "$CHANGED" ]; then
        info "restarting $NAME (changed:$CHANGED)"
        action=restart
    else
        info "$NAME is unchanged; not restarting it (starting it if stopped)"
        action=start
    fi
    case $INIT in
    systemd) systemctl "$action" "$NAME" ;;
    openrc) rc-service "$NAME" "$action" ;;
    esac
}

main() {
    # Nothing an install writes is for others to read unless made so.
    umask 077
    # INSTALL_KEDGE_EXEC splits at spaces; no pattern in it is expanded.
    set -f
    # shellcheck disable=SC2086
    set -- ${INSTALL_KEDGE_EXEC:-} "$@"
    set +f
    setup_env "$@"
    setup_init
    check_root
    TMP_DIR=$(mktemp -d)
    trap 'rm -rf "$TMP_DIR"' EXIT
    # Everything that can fail (architecture, download, checksum) happens
    # before the first file is written.
    fetch_binary
    fetch_addons
    check_cgroups
    CHANGED=""
    install_binary
    install_addons
    install_symlinks
    install_killall
    install_uninstall
    install_service_files
    start_service
    info "installed kedge $COMMAND as $NAME; uninstall with $UNINSTALL"
}

main "$@"
