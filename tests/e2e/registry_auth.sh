#!/usr/bin/env bash
# Registry auth for real: htpasswd Basic auth over TLS with a CA made by openssl, and token auth
# (a token server issuing JWTs the registry verifies). login/logout and the auth file; Docker's
# config.json; a wrong password, a missing scope and an unknown CA give clear errors; credentials
# appear in no output, and are not sent to the blob storage a registry redirects to.
source "$(dirname "$0")/lib.sh"
need docker-registry skopeo jq python3 openssl htpasswd
source "$KILN_SOURCE_DIR/tests/registry_env/lib.sh"

# Credentials live under a home of the test's own.
export HOME=$WORK/home XDG_RUNTIME_DIR=$WORK/run
unset DOCKER_CONFIG XDG_CONFIG_HOME KILN_AUTH_FILE REGISTRY_AUTH_FILE
mkdir -p "$HOME" "$XDG_RUNTIME_DIR"
make_busybox_tar "$WORK/bb.tar"

# ---- htpasswd over TLS
registry_start htpasswd-tls
R=$REGISTRY_ADDR
kiln import "$WORK/bb.tar" "$R/app/bb:v1" >/dev/null
# 127.0.0.0/8 is insecure unless said otherwise (Docker's rule): --tls-verify=true checks the
# certificate, which without the CA is refused, saying so.
expect_fail 1 "certificate" kiln --tls-verify=true --retry 0 push "$R/app/bb:v1"
# With it (--cert-dir), but without credentials: the registry's refusal.
expect_fail 1 "unauthorized" kiln --tls-verify=true --cert-dir "$REGISTRY_CERT_DIR" push "$R/app/bb:v1"
# A wrong password: login fails, nothing is stored, the password is in no message.
expect_fail 1 "incorrect username or password" \
  kiln --tls-verify=true --cert-dir "$REGISTRY_CERT_DIR" login -u "$REGISTRY_USER" -p not-the-password "$R"
assert_not_contains "$(cat "$WORK/err")" "not-the-password" "the password in an error"
[[ ! -e $HOME/.config/kiln/auth.json ]] || fail "a failed login wrote the auth file"
out=$(printf '%s\n' "$REGISTRY_PASSWORD" |
  kiln login --cert-dir "$REGISTRY_CERT_DIR" -u "$REGISTRY_USER" --password-stdin "$R")
assert_eq "$out" "Login Succeeded" "login"
assert_eq "$(stat -c %a "$HOME/.config/kiln/auth.json")" "600" "auth file mode"
assert_eq "$(jq -r --arg r "$R" '.auths[$r].auth' "$HOME/.config/kiln/auth.json" | base64 -d)" \
  "$REGISTRY_USER:$REGISTRY_PASSWORD" "auth file content"
# The CA from certs.d, as Docker finds it, this time.
mkdir -p "$WORK/certs.d/$R"
cp "$REGISTRY_CA" "$WORK/certs.d/$R/ca.crt"
out=$(kiln --tls-verify=true --cert-dir "$WORK/certs.d/$R" push "$R/app/bb:v1" 2>&1)
assert_contains "$out" ": Pushed" "push with credentials"
assert_not_contains "$out" "$REGISTRY_PASSWORD" "password in the output"
# skopeo reads kiln's auth file (Docker's format) and sees the same image.
digest=$(skopeo inspect --authfile "$HOME/.config/kiln/auth.json" --cert-dir "$REGISTRY_CERT_DIR" \
  --format '{{.Digest}}' "docker://$R/app/bb:v1")
export KILN_ROOT=$WORK/store2
out=$(kiln --tls-verify=true --cert-dir "$REGISTRY_CERT_DIR" pull "$R/app/bb:v1")
assert_contains "$out" "Digest: $digest" "pull with credentials"
# The registry offers HTTP/2 over TLS (ALPN); kiln's blob and manifest requests use it.
for request in '"PUT /v2/app/bb/manifests/v1 HTTP/2.0" 201' '"PUT /v2/app/bb/blobs/uploads/[^ ]* HTTP/2.0" 201' \
  '"GET /v2/app/bb/manifests/v1 HTTP/2.0" 200' '"GET /v2/app/bb/blobs/sha256:[0-9a-f]* HTTP/2.0" 200'; do
  grep -q "$request [0-9]* \"\" \"kiln/" "$REGISTRY_LOG" ||
    fail "no $request from kiln in the registry's log: $(grep '"kiln/' "$REGISTRY_LOG" | tail -5)"
done
# logout removes them; the pull is refused again.
assert_eq "$(kiln logout "$R")" "Removing login credentials for $R" "logout"
assert_eq "$(kiln logout "$R")" "Not logged in to $R" "second logout"
expect_fail 1 "unauthorized" kiln --tls-verify=true --cert-dir "$REGISTRY_CERT_DIR" pull "$R/app/bb:v1"
# Docker's config.json serves as well ($DOCKER_CONFIG).
mkdir -p "$WORK/docker"
jq -n --arg r "$R" --arg a "$(printf '%s:%s' "$REGISTRY_USER" "$REGISTRY_PASSWORD" | base64 -w0)" \
  '{auths: {($r): {auth: $a}}}' >"$WORK/docker/config.json"
DOCKER_CONFIG=$WORK/docker kiln --tls-verify=true --cert-dir "$REGISTRY_CERT_DIR" pull -q "$R/app/bb:v1" >/dev/null

# ---- token auth
registry_start token
T=$REGISTRY_ADDR
export KILN_ROOT=$WORK/store3
kiln import "$WORK/bb.tar" "$T/app/bb:v1" >/dev/null
kiln tag "$T/app/bb:v1" "$T/public/bb:v1"
# Anonymous: no push anywhere.
expect_fail 1 "denied: anonymous access is not granted \`repository:public/bb:pull,push\`" kiln push "$T/public/bb:v1"
# The reader may pull but not push: the refusal is the registry's, with the scope it lacked.
printf '%s\n' "$REGISTRY_READER_PASSWORD" | kiln login -u "$REGISTRY_READER_USER" --password-stdin "$T" >/dev/null
expect_fail 1 "denied: user \`reader\` is not granted \`repository:app/bb:pull,push\`" kiln push "$T/app/bb:v1"
# The writer pushes both; tokens are fetched per scope and reused, not one per request.
printf '%s\n' "$REGISTRY_PASSWORD" | kiln login -u "$REGISTRY_USER" --password-stdin "$T" >/dev/null
before=$(grep -c ' TOKEN ' "$TOKEN_LOG" || true)
out=$(kiln push "$T/app/bb:v1")
assert_contains "$out" ": Pushed" "token push"
fetched=$(( $(grep -c ' TOKEN ' "$TOKEN_LOG") - before ))
(( fetched >= 1 && fetched <= 2 )) || fail "push fetched $fetched tokens (expected 1 or 2)"
kiln push -q "$T/public/bb:v1"
# A mount under token auth: the token asked for covers the source repository too.
kiln tag "$T/app/bb:v1" "$T/app2/bb:v1"
out=$(kiln push "$T/app2/bb:v1")
from=$(sed -n 's/.*: Mounted from //p' <<<"$out")
[[ $from == app/bb || $from == public/bb ]] || fail "no mount under token auth: $out"
grep -q "asked=repository:app2/bb:pull,push.*repository:$from:pull\|asked=repository:$from:pull.*repository:app2/bb:pull,push" \
  "$TOKEN_LOG" || fail "no token asked for both repositories: $(grep ' TOKEN ' "$TOKEN_LOG" | tail -3)"
kiln logout "$T" >/dev/null
# Anonymous pull of public/ works with an anonymous token; of app/, it is refused.
export KILN_ROOT=$WORK/store4
kiln pull -q "$T/public/bb:v1" >/dev/null
expect_fail 1 "denied: anonymous access is not granted \`repository:app/bb:pull\`" kiln pull "$T/app/bb:v1"
# Tokens that expire within a pull: the registry refuses the old one, kiln fetches another and
# goes on. The config blob's answer stalls for 3 s, past the 2 s the tokens live.
TOKEN_EXPIRES_IN=2 TOKEN_STRICT_EXPIRY=1 registry_start token short
S=$REGISTRY_ADDR
export KILN_ROOT=$WORK/store5
kiln import "$WORK/bb.tar" "$S/public/bb:v1" >/dev/null
printf '%s\n' "$REGISTRY_PASSWORD" | kiln login -u "$REGISTRY_USER" --password-stdin "$S" >/dev/null
kiln push -q "$S/public/bb:v1"
config=$(kiln inspect --format '{{.Id}}' "$S/public/bb:v1")
fault_proxy_start "$S"
export KILN_ROOT=$WORK/store6
before=$(grep -c ' TOKEN ' "$TOKEN_LOG")
fault_proxy_arm "stall:/blobs/$config:1:3"
kiln pull -q "$PROXY_ADDR/public/bb:v1" >/dev/null
(( $(grep -c ' TOKEN ' "$TOKEN_LOG") - before >= 2 )) || fail "no second token after the first expired"
grep -q " -> 401" "$PROXY_LOG" || fail "the registry never refused the expired token: $(tail -5 "$PROXY_LOG")"

# ---- redirects to blob storage
# Registries backed by S3 or GCS answer blob requests with a redirect to a pre-signed URL on
# another host. kiln follows it without the registry's credentials: the proxy's blob store (like
# S3) refuses a request that carries them. A download cut there resumes through a new redirect.
registry_start htpasswd redirecting
export KILN_ROOT=$WORK/store7
kiln import "$WORK/bb.tar" "$REGISTRY_ADDR/app/bb:v1" >/dev/null
fault_proxy_start "$REGISTRY_ADDR" redirect
P=$PROXY_ADDR
kiln tag "$REGISTRY_ADDR/app/bb:v1" "$P/app/bb:v1"
printf '%s\n' "$REGISTRY_PASSWORD" | kiln login -u "$REGISTRY_USER" --password-stdin "$P" >/dev/null
kiln push -q "$P/app/bb:v1" >/dev/null
manifest_layer=$(curl -sf -u "$REGISTRY_USER:$REGISTRY_PASSWORD" \
  -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
  "http://$REGISTRY_ADDR/v2/app/bb/manifests/v1" | jq -r '.layers[0].digest')
[[ $manifest_layer == sha256:* ]] || fail "no layer in the pushed manifest"
fault_proxy_arm 'redirect:^(GET|HEAD) /v2/.*/blobs/:0'
# HEAD redirected too: the second push finds every blob there.
out=$(kiln push "$P/app/bb:v1")
assert_contains "$out" "Layer already exists" "push through redirected HEADs"
export KILN_ROOT=$WORK/store8
printf '%s\n' "$REGISTRY_PASSWORD" | kiln login -u "$REGISTRY_USER" --password-stdin "$P" >/dev/null
fault_proxy_arm "cut:^STORAGE GET .*/blobs/$manifest_layer:100000"
out=$(kiln pull "$P/app/bb:v1")
assert_contains "$out" "Digest: sha256:" "pull through redirects"
grep -q "STORAGE GET /v2/app/bb/blobs/$manifest_layer range=- .* auth=- " "$PROXY_LOG" ||
  fail "the layer was not fetched from the blob store: $(grep STORAGE "$PROXY_LOG" | tail -5)"
grep -q "STORAGE GET /v2/app/bb/blobs/$manifest_layer range=bytes=[1-9][0-9]*- .* auth=- " "$PROXY_LOG" ||
  fail "the cut download did not resume with a Range at the blob store: $(grep STORAGE "$PROXY_LOG" | tail -5)"
! grep -q "STORAGE.* -> 400" "$PROXY_LOG" || fail "credentials sent to the blob store: $(grep -- '-> 400' "$PROXY_LOG")"
grep -q "STORAGE HEAD " "$PROXY_LOG" || fail "no HEAD went to the blob store"
grep -q "GET /v2/app/bb/blobs/$manifest_layer .* auth=basic " "$PROXY_LOG" ||
  fail "the registry got the blob request without credentials"
echo "ok"
