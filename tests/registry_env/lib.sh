# shellcheck shell=bash disable=SC2034  # (the REGISTRY_* / PROXY_* variables are exported by name)
# Local registries, a token server and a fault-injecting proxy for the registry scenarios.
# Source it after lib.sh:
#   source "$(dirname "$0")/lib.sh"; source "$KILN_SOURCE_DIR/tests/registry_env/lib.sh"
# Everything listens on 127.0.0.1 only; every wait is bounded; every process it starts is
# stopped by registry_env_cleanup, which this file registers with lib.sh's at_exit (a script
# without lib.sh calls it from its own trap). tests/registry_env/README.md has the details.
#
#   registry_start MODE [NAME]     MODE: plain | tls | htpasswd | htpasswd-tls | token | token-tls
#   registry_use NAME              makes NAME's REGISTRY_* (and TOKEN_*) the current ones again
#   registry_stop [NAME]           stops one registry (and its token server); default the current one
#   registry_seed_image REPO:TAG [LAYERS [BYTES]]   pushes a random image to the current registry
#   registry_seed_index REPO:TAG ARCH...            pushes a multi-platform index of that image
#   registry_skopeo_flags src|dest prints the skopeo flags for the current registry, one a line
#   registry_token USER:PASSWORD|'' SCOPE...        a bearer token from the current token server
#   fault_proxy_start UPSTREAM_ADDR [NAME]          proxy in front of a plain-HTTP registry
#   fault_proxy_arm SPEC           arms a fault on the current proxy; returns once it is in force
#   fault_proxy_reset              clears the current proxy's faults
#   fault_proxy_use NAME           makes NAME's PROXY_* the current ones again
#   registry_env_dump_logs         prints the tail of every log (for a failing scenario)
#   registry_env_cleanup           stops everything; safe to call more than once
#
# Several registries in one script: every start names an instance (NAME, default reg1, reg2, …
# or proxy1, …) and sets the REGISTRY_* / PROXY_* variables to that instance; copy what you need
# after each call (SRC=$REGISTRY_ADDR) or switch back with registry_use NAME. Call the starters
# directly, not inside $(…) or a pipeline: their variables would be lost with the subshell.
# State (configs, data, logs, certificates) lives in REGISTRY_ENV_DIR: set it before the first
# call to choose; the default is $WORK/registry-env (lib.sh's scratch, so KEEP_WORK=1 keeps the
# logs), or a mktemp directory without lib.sh.

REGISTRY_ENV_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

REGISTRY_ENV_PYTHON=python3
[[ -x /usr/bin/python3 ]] && REGISTRY_ENV_PYTHON=/usr/bin/python3   # Debian's, stdlib only
REGISTRY_ENV_WAIT_TENTHS=100   # 10 s for a server to come up
REGISTRY_ENV_SERVICE=kiln-test-registry
REGISTRY_ENV_ISSUER=kiln-test-token-server

_renv_fail() {
  if declare -F fail >/dev/null; then fail "$*"; fi
  echo "registry_lib: $*" >&2
  return 1
}

# The state directory, made once: credentials, certificates, the list of processes to stop, and
# a watchdog that stops them if this shell dies without running its clean-up (SIGKILL, timeout).
_renv_init() {
  [[ -n ${_RENV_READY:-} && -d ${REGISTRY_ENV_DIR:-} ]] && return 0
  if [[ -z ${REGISTRY_ENV_DIR:-} ]]; then
    if [[ -n ${WORK:-} ]]; then REGISTRY_ENV_DIR=$WORK/registry-env
    else REGISTRY_ENV_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kiln-registry-env.XXXXXX"); fi
  fi
  mkdir -p "$REGISTRY_ENV_DIR"
  REGISTRY_ENV_DIR=$(cd "$REGISTRY_ENV_DIR" && pwd)
  export REGISTRY_ENV_DIR
  touch "$REGISTRY_ENV_DIR/pids"
  if [[ ! -f $REGISTRY_ENV_DIR/credentials ]]; then
    {
      printf 'REGISTRY_USER=%q\n' "${REGISTRY_USER:-kiln}"
      printf 'REGISTRY_PASSWORD=%q\n' "${REGISTRY_PASSWORD:-pw-$(openssl rand -hex 8)}"
      printf 'REGISTRY_READER_PASSWORD=%q\n' "${REGISTRY_READER_PASSWORD:-ro-$(openssl rand -hex 8)}"
    } >"$REGISTRY_ENV_DIR/credentials"
  fi
  local main=$$ dir=$REGISTRY_ENV_DIR
  ( trap '' INT TERM
    while kill -0 "$main" 2>/dev/null && [[ -f $dir/pids ]]; do sleep 1; done
    [[ -f $dir/pids ]] && while read -r p _; do kill -KILL "$p" 2>/dev/null || true; done <"$dir/pids"
    exit 0 ) </dev/null >/dev/null 2>&1 &
  echo "$! watchdog" >"$REGISTRY_ENV_DIR/watchdog.pid"
  disown $! 2>/dev/null || true
  _RENV_READY=1
}

# _renv_pki: a CA, a server certificate for 127.0.0.1 and localhost, and the token signing pair.
_renv_pki() {
  local d=$REGISTRY_ENV_DIR/pki
  [[ -f $d/complete ]] && return 0
  mkdir -p "$d/certs"
  ( set -e; cd "$d"
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key
    openssl req -x509 -new -key ca.key -subj /CN=kiln-test-ca -days 30 -sha256 \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign -out ca.crt
    openssl ecparam -name prime256v1 -genkey -noout -out server.key
    openssl req -new -key server.key -subj /CN=127.0.0.1 -out server.csr
    printf '%s\n' basicConstraints=CA:FALSE keyUsage=critical,digitalSignature extendedKeyUsage=serverAuth \
      subjectAltName=IP:127.0.0.1,DNS:localhost >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -sha256 \
      -extfile server.ext -out server.crt
    openssl genrsa -out token-signing.key 2048
    openssl req -x509 -new -key token-signing.key -subj /CN=kiln-test-token-signer -days 30 -sha256 \
      -out token-signing.crt
    cp ca.crt certs/ca.crt
    : >complete ) >"$d/openssl.log" 2>&1 || _renv_fail "making test certificates failed: $(cat "$d/openssl.log")"
}

# _renv_free_port: a port on 127.0.0.1 that was free a moment ago (the kernel's choice).
_renv_free_port() {
  "$REGISTRY_ENV_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

_renv_listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# _renv_spawn LOG LABEL CMD...: starts CMD in the background (stdio to LOG), records its PID
# and LABEL in the list registry_env_cleanup stops; sets _RENV_PID.
_renv_spawn() {
  local log=$1 label=$2; shift 2
  "$@" </dev/null >>"$log" 2>&1 &
  _RENV_PID=$!
  disown "$_RENV_PID" 2>/dev/null || true   # no "Terminated" notices when cleanup stops it
  echo "$_RENV_PID $label" >>"$REGISTRY_ENV_DIR/pids"
}

# _renv_stop_pid PID: TERM, up to 5 s, then KILL; by PID only.
_renv_stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

# _renv_wait_file FILE PID LOG WHAT: until FILE exists (bounded), or PID died.
_renv_wait_file() {
  local file=$1 pid=$2 log=$3 what=$4 i
  for ((i = 0; i < REGISTRY_ENV_WAIT_TENTHS; i++)); do
    [[ -s $file ]] && return 0
    kill -0 "$pid" 2>/dev/null || _renv_fail "$what exited at start: $(tail -n 20 "$log")" || return 1
    sleep 0.1
  done
  _renv_fail "$what did not start within $((REGISTRY_ENV_WAIT_TENTHS / 10)) s: $(tail -n 20 "$log")"
}

_renv_save_env() {   # _renv_save_env FILE VAR...: the variables, reloadable with source
  local file=$1 v; shift
  for v in "$@"; do printf 'export %s=%q\n' "$v" "${!v-}"; done >"$file"
}

_renv_next_name() {   # _renv_next_name PREFIX: PREFIX1, PREFIX2, … (the first unused)
  local i
  for ((i = 1; ; i++)); do [[ -e $REGISTRY_ENV_DIR/$1$i ]] || { echo "$1$i"; return; }; done
}

REGISTRY_VARS=(REGISTRY_NAME REGISTRY_MODE REGISTRY_ADDR REGISTRY_URL REGISTRY_LOG REGISTRY_DATA
  REGISTRY_CONFIG REGISTRY_PID REGISTRY_CA REGISTRY_CERT_DIR REGISTRY_USER REGISTRY_PASSWORD
  REGISTRY_READER_USER REGISTRY_READER_PASSWORD TOKEN_ADDR TOKEN_REALM TOKEN_SERVICE TOKEN_LOG TOKEN_PID)

# registry_start MODE [NAME]: a docker-registry (distribution 2.8) on a free 127.0.0.1 port.
#   plain         HTTP, no auth            tls           HTTPS (REGISTRY_CA), no auth
#   htpasswd      HTTP + basic auth        htpasswd-tls  HTTPS + basic auth (bcrypt htpasswd)
#   token         HTTP registry and token server (Docker token auth, RS256 JWTs)
#   token-tls     both over HTTPS with REGISTRY_CA
# Exports the REGISTRY_VARS above (empty when they do not apply to MODE). Token ACL: REGISTRY_USER
# everything everywhere; REGISTRY_READER_USER (reader) pull everywhere; anonymous pull on public/*.
# Token lifetime: TOKEN_EXPIRES_IN (seconds, default 300); the registry honours a token 60 s past
# it unless TOKEN_STRICT_EXPIRY=1 (set either for the call: TOKEN_EXPIRES_IN=5 registry_start token).
registry_start() {
  local mode=${1:?registry_start MODE [NAME]} name=${2:-} auth tls=0 scheme=http dir port try
  case $mode in
    plain | htpasswd | token) auth=${mode%-tls} ;;
    tls) auth=none; tls=1 ;;
    htpasswd-tls | token-tls) auth=${mode%-tls}; tls=1 ;;
    *) _renv_fail "registry_start: unknown mode '$mode' (plain, tls, htpasswd, htpasswd-tls, token, token-tls)"; return 1 ;;
  esac
  [[ $auth == plain ]] && auth=none
  command -v docker-registry >/dev/null || { _renv_fail "registry_start: docker-registry is not installed"; return 1; }
  _renv_init
  [[ -n $name ]] || name=$(_renv_next_name reg)
  [[ $name =~ ^[A-Za-z0-9_.-]+$ && ! -e $REGISTRY_ENV_DIR/$name ]] ||
    { _renv_fail "registry_start: bad or used instance name '$name'"; return 1; }
  dir=$REGISTRY_ENV_DIR/$name
  mkdir -p "$dir/data"
  [[ $tls == 1 || $auth == token ]] && { _renv_pki || return 1; }
  [[ $tls == 1 ]] && scheme=https
  # shellcheck disable=SC1091
  source "$REGISTRY_ENV_DIR/credentials"
  REGISTRY_NAME=$name REGISTRY_MODE=$mode REGISTRY_DATA=$dir/data REGISTRY_LOG=$dir/registry.log
  REGISTRY_CONFIG=$dir/config.yml REGISTRY_CA='' REGISTRY_CERT_DIR='' REGISTRY_READER_USER=''
  TOKEN_ADDR='' TOKEN_REALM='' TOKEN_SERVICE='' TOKEN_LOG='' TOKEN_PID=''
  if [[ $tls == 1 ]]; then REGISTRY_CA=$REGISTRY_ENV_DIR/pki/ca.crt REGISTRY_CERT_DIR=$REGISTRY_ENV_DIR/pki/certs; fi
  case $auth in
    none) REGISTRY_USER='' REGISTRY_PASSWORD='' REGISTRY_READER_PASSWORD='' ;;
    htpasswd)
      REGISTRY_READER_PASSWORD=''
      htpasswd -nbB "$REGISTRY_USER" "$REGISTRY_PASSWORD" >"$dir/htpasswd" 2>>"$dir/setup.log" ||
        { _renv_fail "registry_start: htpasswd -B failed (apache2-utils)"; return 1; } ;;
    token)
      REGISTRY_READER_USER=reader
      local tls_args=()
      [[ $tls == 1 ]] && tls_args=(--tls-cert "$REGISTRY_ENV_DIR/pki/server.crt" --tls-key "$REGISTRY_ENV_DIR/pki/server.key")
      TOKEN_LOG=$dir/token.log
      _renv_spawn "$dir/token-server.out" "$name/token_server" "$REGISTRY_ENV_PYTHON" "$REGISTRY_ENV_SRC/token_server.py" \
        --port-file "$dir/token.port" --log "$TOKEN_LOG" --issuer "$REGISTRY_ENV_ISSUER" \
        --key "$REGISTRY_ENV_DIR/pki/token-signing.key" --cert "$REGISTRY_ENV_DIR/pki/token-signing.crt" \
        --user "$REGISTRY_USER:$REGISTRY_PASSWORD" --reader "reader:$REGISTRY_READER_PASSWORD" \
        --expires-in "${TOKEN_EXPIRES_IN:-300}" "${tls_args[@]}"   # TOKEN_STRICT_EXPIRY passes through the environment
      TOKEN_PID=$_RENV_PID
      _renv_wait_file "$dir/token.port" "$TOKEN_PID" "$dir/token-server.out" "token server" || return 1
      TOKEN_ADDR=127.0.0.1:$(cat "$dir/token.port")
      TOKEN_REALM=$scheme://$TOKEN_ADDR/token TOKEN_SERVICE=$REGISTRY_ENV_SERVICE ;;
  esac
  # The port is chosen before docker-registry binds it: another process may take it in between,
  # so a start that finds it taken tries a new one.
  for try in 1 2 3; do
    port=$(_renv_free_port)
    REGISTRY_ADDR=127.0.0.1:$port REGISTRY_URL=$scheme://127.0.0.1:$port
    _renv_registry_config "$auth" "$tls" "$dir" "$port" >"$REGISTRY_CONFIG"
    # docker-registry reads REGISTRY_* variables as overrides of its configuration (REGISTRY_LOG
    # would replace the log section): it starts without any.
    local unset_args=() v
    for v in $(compgen -e); do [[ $v == REGISTRY_* ]] && unset_args+=(-u "$v"); done
    _renv_spawn "$REGISTRY_LOG" "$name/docker-registry" env "${unset_args[@]}" docker-registry serve "$REGISTRY_CONFIG"
    REGISTRY_PID=$_RENV_PID
    local i up=0
    for ((i = 0; i < REGISTRY_ENV_WAIT_TENTHS; i++)); do
      _renv_listening "$port" && { up=1; break; }
      kill -0 "$REGISTRY_PID" 2>/dev/null || break
      sleep 0.1
    done
    [[ $up == 1 ]] && break
    _renv_stop_pid "$REGISTRY_PID"
    grep -q 'address already in use' "$REGISTRY_LOG" || { _renv_fail "registry $name did not start: $(tail -n 20 "$REGISTRY_LOG")"; return 1; }
    [[ $try == 3 ]] && { _renv_fail "registry $name: no free port after 3 tries"; return 1; }
  done
  export "${REGISTRY_VARS[@]}"
  _renv_save_env "$dir/env" "${REGISTRY_VARS[@]}"
}

# _renv_registry_config AUTH TLS DIR PORT: the registry's config.yml. Log level info with the
# access log: every request is one line (method, raw URI with its query, status) in REGISTRY_LOG.
_renv_registry_config() {
  local auth=$1 tls=$2 dir=$3 port=$4 pki=$REGISTRY_ENV_DIR/pki
  cat <<EOF
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: kiln-test-$(openssl rand -hex 8)
  headers:
    X-Content-Type-Options: [nosniff]
EOF
  [[ $tls == 1 ]] && printf '  tls:\n    certificate: %s\n    key: %s\n' "$pki/server.crt" "$pki/server.key"
  case $auth in
    htpasswd) printf 'auth:\n  htpasswd:\n    realm: %s\n    path: %s\n' "$REGISTRY_ENV_SERVICE" "$dir/htpasswd" ;;
    token) printf 'auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n' \
      "$TOKEN_REALM" "$REGISTRY_ENV_SERVICE" "$REGISTRY_ENV_ISSUER" "$pki/token-signing.crt" ;;
  esac
  return 0
}

# registry_use NAME: the REGISTRY_* / TOKEN_* variables of registry NAME again.
registry_use() {
  [[ -f ${REGISTRY_ENV_DIR:-}/${1:?registry_use NAME}/env ]] || { _renv_fail "registry_use: no registry '$1'"; return 1; }
  # shellcheck disable=SC1090
  source "$REGISTRY_ENV_DIR/$1/env"
}

# registry_stop [NAME]: stops registry NAME (default the current one) and its token server; its
# data and logs stay. The REGISTRY_* variables are left as they were.
registry_stop() {
  local name=${1:-${REGISTRY_NAME:-}} pid
  [[ -f ${REGISTRY_ENV_DIR:-}/$name/env ]] || { _renv_fail "registry_stop: no registry '$name'"; return 1; }
  # shellcheck disable=SC1090
  for pid in $( (source "$REGISTRY_ENV_DIR/$name/env"; echo "$REGISTRY_PID $TOKEN_PID")); do
    _renv_stop_pid "$pid"
  done
}

# registry_skopeo_flags src|dest: skopeo's flags for the current registry (TLS and credentials),
# one a line:  mapfile -t f < <(registry_skopeo_flags dest); skopeo copy "${f[@]}" …
registry_skopeo_flags() {
  local side=${1:?registry_skopeo_flags src|dest}
  if [[ -n ${REGISTRY_CERT_DIR:-} ]]; then echo "--$side-cert-dir=$REGISTRY_CERT_DIR"
  else echo "--$side-tls-verify=false"; fi
  [[ -n ${REGISTRY_PASSWORD:-} ]] && echo "--$side-creds=$REGISTRY_USER:$REGISTRY_PASSWORD"
  return 0
}

# registry_token USER:PASSWORD|'' SCOPE...: prints a token from the current registry's token
# server ('' = anonymous); fails on a refusal.
registry_token() {
  local creds=$1 args=() s; shift
  [[ -n ${TOKEN_REALM:-} ]] || { _renv_fail "registry_token: the current registry has no token server"; return 1; }
  [[ -n $creds ]] && args+=(-u "$creds")
  [[ -n ${REGISTRY_CA:-} ]] && args+=(--cacert "$REGISTRY_CA")
  for s in "$@"; do args+=(--data-urlencode "scope=$s"); done
  if s=$(curl -sS --max-time 10 -G "${args[@]}" --data-urlencode "service=$TOKEN_SERVICE" "$TOKEN_REALM" 2>&1) &&
    jq -er .token <<<"$s" 2>/dev/null; then
    return 0
  fi
  _renv_fail "registry_token ${creds%%:*} $*: $s"
}

# registry_seed_image REPO:TAG [LAYERS [BYTES]]: pushes an image of LAYERS (default 2) gzip
# layers, each a tar of one file of BYTES (default 65536) random bytes, to the current registry
# with skopeo (credentials and TLS as the registry needs). Exports SEED_LAYOUT (the OCI layout it
# pushed, ref name = TAG), SEED_DIGEST (manifest digest, as the registry stores it), SEED_CONFIG,
# SEED_LAYERS (layer digests, space separated) and SEED_REF (REGISTRY_ADDR/REPO:TAG).
registry_seed_image() {
  local ref=${1:?registry_seed_image REPO:TAG [LAYERS [BYTES]]} n=${2:-2} bytes=${3:-65536}
  local tag=${ref##*:} layout tmp i diff descs=() diffs=() d flags
  [[ $ref == *:* ]] || { _renv_fail "registry_seed_image: '$ref' has no tag"; return 1; }
  [[ -n ${REGISTRY_ADDR:-} ]] || { _renv_fail "registry_seed_image: no registry started"; return 1; }
  _renv_init
  layout=$(mktemp -d "$REGISTRY_ENV_DIR/seed.XXXXXX")
  tmp=$layout.tmp
  mkdir -p "$layout/blobs/sha256" "$tmp"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
  _renv_add_blob() {   # FILE MEDIATYPE -> descriptor JSON; moves FILE into the layout
    local dg sz; dg=$(sha256sum "$1" | cut -d' ' -f1); sz=$(stat -c %s "$1")
    mv "$1" "$layout/blobs/sha256/$dg"
    jq -cn --arg mt "$2" --arg d "sha256:$dg" --argjson s "$sz" '{mediaType:$mt, digest:$d, size:$s}'
  }
  for ((i = 0; i < n; i++)); do
    mkdir -p "$tmp/root"
    head -c "$bytes" /dev/urandom >"$tmp/root/file$i.bin"
    tar -C "$tmp/root" --numeric-owner --owner=0 --group=0 --mtime='2024-01-01 00:00:00' -cf "$tmp/layer.tar" .
    rm -rf -- "$tmp/root"
    diff=$(sha256sum "$tmp/layer.tar" | cut -d' ' -f1)
    gzip -n -1 "$tmp/layer.tar"
    diffs+=("\"sha256:$diff\"")
    descs+=("$(_renv_add_blob "$tmp/layer.tar.gz" application/vnd.oci.image.layer.v1.tar+gzip)")
  done
  jq -cn --argjson d "[$(IFS=,; echo "${diffs[*]}")]" \
    '{architecture:"amd64", os:"linux", config:{Cmd:["/bin/sh"]}, rootfs:{type:"layers", diff_ids:$d}}' >"$tmp/config.json"
  d=$(_renv_add_blob "$tmp/config.json" application/vnd.oci.image.config.v1+json)
  SEED_CONFIG=$(jq -r .digest <<<"$d")
  jq -cn --argjson c "$d" --argjson l "[$(IFS=,; echo "${descs[*]}")]" \
    '{schemaVersion:2, mediaType:"application/vnd.oci.image.manifest.v1+json", config:$c, layers:$l}' >"$tmp/manifest.json"
  d=$(_renv_add_blob "$tmp/manifest.json" application/vnd.oci.image.manifest.v1+json)
  jq -cn --argjson m "$d" --arg t "$tag" \
    '{schemaVersion:2, manifests:[$m + {annotations:{"org.opencontainers.image.ref.name":$t}}]}' >"$layout/index.json"
  SEED_LAYERS=$(printf '%s\n' "${descs[@]}" | jq -r .digest | tr '\n' ' ')
  SEED_LAYERS=${SEED_LAYERS% }
  SEED_REF=$REGISTRY_ADDR/$ref SEED_LAYOUT=$layout
  mapfile -t flags < <(registry_skopeo_flags dest)
  if ! skopeo --insecure-policy copy --quiet --retry-times 0 "${flags[@]}" --digestfile "$tmp/digest" \
      "oci:$layout:$tag" "docker://$SEED_REF" >"$tmp/skopeo.log" 2>&1; then
    _renv_fail "registry_seed_image: skopeo push of $SEED_REF failed: $(cat "$tmp/skopeo.log")"; return 1
  fi
  SEED_DIGEST=$(cat "$tmp/digest")
  rm -rf -- "$tmp"
  export SEED_LAYOUT SEED_DIGEST SEED_CONFIG SEED_LAYERS SEED_REF
}

# registry_seed_index REPO:TAG ARCH...: after registry_seed_image, a multi-platform image of the
# seed: per ARCH a config that differs only in its architecture, and a manifest with the seed's
# layers, in one OCI index pushed with `skopeo copy --all` to the current registry. Exports
# INDEX_LAYOUT (an OCI layout holding it under the tag "index"), INDEX_DIGEST, and per ARCH
# INDEX_MANIFEST_<ARCH> and INDEX_CONFIG_<ARCH>.
registry_seed_index() {
  local ref=${1:?registry_seed_index REPO:TAG ARCH...} arch entries=() d s md ms cd cs flags
  shift
  [[ -n ${SEED_LAYOUT:-} ]] || { _renv_fail "registry_seed_index: call registry_seed_image first"; return 1; }
  INDEX_LAYOUT=$(mktemp -d "$REGISTRY_ENV_DIR/index.XXXXXX")
  mkdir -p "$INDEX_LAYOUT/blobs/sha256"
  cp "$SEED_LAYOUT"/blobs/sha256/* "$INDEX_LAYOUT/blobs/sha256/"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$INDEX_LAYOUT/oci-layout"
  _renv_index_blob() {   # FILE -> "sha256:HEX SIZE"; moves FILE into the layout
    d=$(sha256sum "$1" | cut -d' ' -f1); s=$(stat -c %s "$1")
    mv "$1" "$INDEX_LAYOUT/blobs/sha256/$d"
    echo "sha256:$d $s"
  }
  for arch in "$@"; do
    jq -c --arg a "$arch" '.architecture=$a' "$SEED_LAYOUT/blobs/sha256/${SEED_CONFIG#sha256:}" >"$INDEX_LAYOUT/c.json"
    read -r cd cs < <(_renv_index_blob "$INDEX_LAYOUT/c.json")
    jq -c --arg d "$cd" --argjson s "$cs" '.config.digest=$d | .config.size=$s' \
      "$SEED_LAYOUT/blobs/sha256/${SEED_DIGEST#sha256:}" >"$INDEX_LAYOUT/m.json"
    read -r md ms < <(_renv_index_blob "$INDEX_LAYOUT/m.json")
    entries+=("$(jq -cn --arg d "$md" --argjson s "$ms" --arg a "$arch" \
      '{mediaType:"application/vnd.oci.image.manifest.v1+json", digest:$d, size:$s, platform:{os:"linux", architecture:$a}}')")
    printf -v "INDEX_MANIFEST_$arch" '%s' "$md"
    printf -v "INDEX_CONFIG_$arch" '%s' "$cd"
    export "INDEX_MANIFEST_$arch" "INDEX_CONFIG_$arch"
  done
  jq -cn --argjson m "[$(IFS=,; echo "${entries[*]}")]" \
    '{schemaVersion:2, mediaType:"application/vnd.oci.image.index.v1+json", manifests:$m}' >"$INDEX_LAYOUT/i.json"
  read -r INDEX_DIGEST s < <(_renv_index_blob "$INDEX_LAYOUT/i.json")
  jq -cn --arg d "$INDEX_DIGEST" --argjson s "$s" \
    '{schemaVersion:2, manifests:[{mediaType:"application/vnd.oci.image.index.v1+json", digest:$d, size:$s,
      annotations:{"org.opencontainers.image.ref.name":"index"}}]}' >"$INDEX_LAYOUT/index.json"
  mapfile -t flags < <(registry_skopeo_flags dest)
  skopeo --insecure-policy copy --quiet --retry-times 0 --all "${flags[@]}" \
    "oci:$INDEX_LAYOUT:index" "docker://$REGISTRY_ADDR/$ref" >/dev/null ||
    { _renv_fail "registry_seed_index: skopeo push of $REGISTRY_ADDR/$ref failed"; return 1; }
  export INDEX_LAYOUT INDEX_DIGEST
}

PROXY_VARS=(PROXY_NAME PROXY_ADDR PROXY_CTL PROXY_LOG PROXY_PID PROXY_UPSTREAM)

# fault_proxy_start UPSTREAM_ADDR [NAME]: tests/registry_env/fault_proxy.py on a free 127.0.0.1
# port in front of a plain-HTTP registry. Exports PROXY_ADDR (clients talk to it), PROXY_CTL
# (its control endpoint), PROXY_LOG (one line per request and per answer), PROXY_PID.
fault_proxy_start() {
  local upstream=${1:?fault_proxy_start UPSTREAM_ADDR [NAME]} name=${2:-} dir
  _renv_init
  [[ -n $name ]] || name=$(_renv_next_name proxy)
  [[ $name =~ ^[A-Za-z0-9_.-]+$ && ! -e $REGISTRY_ENV_DIR/$name ]] ||
    { _renv_fail "fault_proxy_start: bad or used instance name '$name'"; return 1; }
  dir=$REGISTRY_ENV_DIR/$name
  mkdir -p "$dir"
  PROXY_NAME=$name PROXY_LOG=$dir/proxy.log PROXY_UPSTREAM=$upstream
  _renv_spawn "$dir/proxy.out" "$name/fault_proxy" "$REGISTRY_ENV_PYTHON" "$REGISTRY_ENV_SRC/fault_proxy.py" \
    --upstream "$upstream" --log "$PROXY_LOG" --ready-file "$dir/ready"
  PROXY_PID=$_RENV_PID
  _renv_wait_file "$dir/ready" "$PROXY_PID" "$dir/proxy.out" "fault proxy" || return 1
  local port ctl
  read -r port ctl <"$dir/ready"
  PROXY_ADDR=127.0.0.1:$port PROXY_CTL=127.0.0.1:$ctl
  export "${PROXY_VARS[@]}"
  _renv_save_env "$dir/env" "${PROXY_VARS[@]}"
}

fault_proxy_use() {
  [[ -f ${REGISTRY_ENV_DIR:-}/${1:?fault_proxy_use NAME}/env ]] || { _renv_fail "fault_proxy_use: no proxy '$1'"; return 1; }
  # shellcheck disable=SC1090
  source "$REGISTRY_ENV_DIR/$1/env"
}

# fault_proxy_arm SPEC: arms one fault on the current proxy (see tests/registry_env/README.md);
# returns once the proxy has it in force, fails on a SPEC it rejects.
#   cut:REGEX:BYTES[:COUNT]   cut-request:REGEX:BYTES[:COUNT]   status:REGEX:CODE[:COUNT[:RETRY_AFTER]]
#   stall:REGEX:BYTES:SECONDS[:COUNT]   drop:REGEX[:COUNT]   redirect:REGEX[:COUNT]   reset
fault_proxy_arm() {
  local spec=${1:?fault_proxy_arm SPEC} out code
  [[ -n ${PROXY_CTL:-} ]] || { _renv_fail "fault_proxy_arm: no proxy started"; return 1; }
  out=$(printf '%s' "$spec" | curl -sS --max-time 5 -w '\n%{http_code}' --data-binary @- "http://$PROXY_CTL/arm" 2>&1) ||
    { _renv_fail "fault_proxy_arm '$spec': control endpoint: $out"; return 1; }
  code=${out##*$'\n'}
  [[ $code == 200 ]] || { _renv_fail "fault_proxy_arm '$spec': ${out%$'\n'*}"; return 1; }
}

fault_proxy_reset() { fault_proxy_arm reset; }

# registry_env_dump_logs [LINES]: the last LINES (default 30) of every log, on stderr.
registry_env_dump_logs() {
  local f
  [[ -d ${REGISTRY_ENV_DIR:-} ]] || return 0
  for f in "$REGISTRY_ENV_DIR"/*/*.log "$REGISTRY_ENV_DIR"/*/*.out; do
    [[ -s $f ]] || continue
    echo "==> $f <==" >&2
    tail -n "${1:-30}" "$f" >&2
  done
}

# registry_env_cleanup: stops every process this file started (by PID), then the watchdog.
registry_env_cleanup() {
  [[ -n ${REGISTRY_ENV_DIR:-} && -f $REGISTRY_ENV_DIR/pids ]] || return 0
  local pid _
  while read -r pid _; do _renv_stop_pid "$pid"; done <"$REGISTRY_ENV_DIR/pids"
  : >"$REGISTRY_ENV_DIR/pids"
  _RENV_READY=
  if [[ -f $REGISTRY_ENV_DIR/watchdog.pid ]]; then
    read -r pid _ <"$REGISTRY_ENV_DIR/watchdog.pid"
    kill -TERM "$pid" 2>/dev/null || true   # it ignores TERM in its loop; KILL follows
    kill -KILL "$pid" 2>/dev/null || true
    rm -f -- "$REGISTRY_ENV_DIR/watchdog.pid"
  fi
  return 0
}

if declare -F at_exit >/dev/null; then at_exit registry_env_cleanup; fi
