#!/usr/bin/env bash
# Self-check of the registry test environment (tests/registry_env/lib.sh) with skopeo and curl,
# no kiln: every registry mode, the token server's ACL, and every fault of the proxy.
# run by hand after changing any of it (not a ctest test: it checks the tests' tools, not kiln);
# by hand: bash tests/registry_env/selftest.sh   (KEEP_WORK=1 keeps the logs)
export KILN=${KILN:-/bin/false}   # lib.sh wants one; nothing here runs kiln
# shellcheck source-path=SCRIPTDIR/../e2e
source "$(dirname "${BASH_SOURCE[0]}")/../e2e/lib.sh"
TEST_NAME=registry_env
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need docker-registry skopeo curl jq openssl htpasswd python3 gzip sha256sum

SK=(skopeo --insecure-policy copy --quiet --retry-times 0)
on_fail() { registry_env_dump_logs 15; fail "$*"; }
# http_code ARGS...: curl's status code for a request ("000" when there was no answer)
http_code() { curl -sS -o /dev/null -w '%{http_code}' --max-time 20 "$@" 2>/dev/null || true; }
header() {   # header NAME ARGS...: a response header's value
  local name=$1; shift
  curl -sS -D - -o /dev/null --max-time 20 "$@" | tr -d '\r' | awk -v n="${name,,}" -F': ' 'tolower($1)==n {print $2}'
}

# --- plain: push, pull, blob mount and deletion, the request lines in the log -------------------
registry_start plain src
registry_seed_image lib/seed:1 2 65536
[[ $SEED_DIGEST == sha256:* && $(wc -w <<<"$SEED_LAYERS") == 2 ]] || on_fail "seed: digest [$SEED_DIGEST] layers [$SEED_LAYERS]"
"${SK[@]}" --src-tls-verify=false "docker://$REGISTRY_ADDR/lib/seed:1" "oci:$WORK/pulled:1" || on_fail "plain pull"
diff <(ls "$SEED_LAYOUT/blobs/sha256") <(ls "$WORK/pulled/blobs/sha256") || on_fail "pulled blobs differ from pushed"
layer=${SEED_LAYERS%% *}
assert_eq "$(http_code -X POST "$REGISTRY_URL/v2/dst/blobs/uploads/?mount=$layer&from=lib/seed")" 201 "cross-repository mount"
grep -qF "\"POST /v2/dst/blobs/uploads/?mount=$layer&from=lib/seed HTTP/1.1\" 201" "$REGISTRY_LOG" ||
  on_fail "the mount's request line is not in REGISTRY_LOG"
assert_eq "$(http_code -X DELETE "$REGISTRY_URL/v2/dst/blobs/$layer")" 202 "blob deletion"
assert_eq "$(header X-Content-Type-Options "$REGISTRY_URL/v2/")" nosniff "http.headers"
PLAIN=$REGISTRY_ADDR

# --- tls (and a second registry at once) ---------------------------------------------------------
registry_start tls
[[ $REGISTRY_ADDR != "$PLAIN" && -f $REGISTRY_CA && -f $REGISTRY_CERT_DIR/ca.crt ]] || on_fail "tls variables"
assert_eq "$(http_code "https://$REGISTRY_ADDR/v2/")" 000 "TLS without the CA must fail"
assert_eq "$(http_code --cacert "$REGISTRY_CA" "https://$REGISTRY_ADDR/v2/")" 200 "TLS by IP"
assert_eq "$(http_code --cacert "$REGISTRY_CA" "https://localhost:${REGISTRY_ADDR#*:}/v2/")" 200 "TLS by localhost"
"${SK[@]}" --dest-cert-dir "$REGISTRY_CERT_DIR" "oci:$WORK/pulled:1" "docker://$REGISTRY_ADDR/lib/copy:1" || on_fail "tls push"
registry_use src
assert_eq "$REGISTRY_ADDR" "$PLAIN" "registry_use"
assert_eq "$(http_code "$REGISTRY_URL/v2/lib/seed/tags/list")" 200 "the first registry still answers"

# --- htpasswd, htpasswd-tls ----------------------------------------------------------------------
registry_start htpasswd
assert_eq "$(http_code "$REGISTRY_URL/v2/")" 401 "htpasswd without credentials"
assert_eq "$(http_code -u "$REGISTRY_USER:$REGISTRY_PASSWORD" "$REGISTRY_URL/v2/")" 200 "htpasswd with credentials"
registry_start htpasswd-tls
registry_seed_image auth/img:1 1 4096   # skopeo with --dest-cert-dir and --dest-creds
"${SK[@]}" --src-cert-dir "$REGISTRY_CERT_DIR" --src-creds "$REGISTRY_USER:wrong" "docker://$SEED_REF" "oci:$WORK/x:1" 2>/dev/null &&
  on_fail "a wrong password pulled from the htpasswd registry"
"${SK[@]}" --src-cert-dir "$REGISTRY_CERT_DIR" --src-creds "$REGISTRY_USER:$REGISTRY_PASSWORD" "docker://$SEED_REF" "oci:$WORK/x:1" ||
  on_fail "htpasswd-tls pull"

# --- token: the ACL through skopeo's token flow, and the token server itself ---------------------
TOKEN_EXPIRES_IN=120 registry_start token
registry_seed_image public/img:1 1 4096
registry_seed_image private/img:1 1 4096
"${SK[@]}" --src-tls-verify=false "docker://$REGISTRY_ADDR/public/img:1" "oci:$WORK/t1:1" || on_fail "anonymous pull under public/"
"${SK[@]}" --src-tls-verify=false "docker://$REGISTRY_ADDR/private/img:1" "oci:$WORK/t2:1" 2>/dev/null &&
  on_fail "anonymous pull outside public/"
"${SK[@]}" --src-tls-verify=false --src-creds "reader:$REGISTRY_READER_PASSWORD" "docker://$REGISTRY_ADDR/private/img:1" "oci:$WORK/t3:1" ||
  on_fail "reader pull"
"${SK[@]}" --dest-tls-verify=false --dest-creds "reader:$REGISTRY_READER_PASSWORD" "oci:$WORK/t3:1" "docker://$REGISTRY_ADDR/private/new:1" 2>/dev/null &&
  on_fail "reader push"
"${SK[@]}" --dest-tls-verify=false --dest-creds "$REGISTRY_USER:$REGISTRY_PASSWORD" "oci:$WORK/t3:1" "docker://$REGISTRY_ADDR/private/new:1" ||
  on_fail "user push"
grep -q "TOKEN user=reader .*asked=repository:private/new:pull,push granted=repository:private/new:pull status=200" "$TOKEN_LOG" ||
  on_fail "the reader's token request is not logged as asked"
assert_eq "$(http_code -u "$REGISTRY_USER:nope" "$TOKEN_REALM?service=$TOKEN_SERVICE&scope=repository:a:pull")" 401 "wrong password"
curl -sS -u "$REGISTRY_USER:nope" "$TOKEN_REALM?service=$TOKEN_SERVICE" | jq -e '.errors[0].code == "UNAUTHORIZED"' >/dev/null ||
  on_fail "a refusal's JSON error"
answer=$(curl -sS -u "$REGISTRY_USER:$REGISTRY_PASSWORD" "$TOKEN_REALM?service=$TOKEN_SERVICE&scope=repository:a:pull,push")
jq -e '.token == .access_token and .expires_in == 120 and (.issued_at | test("Z$"))' <<<"$answer" >/dev/null ||
  on_fail "token answer: $answer"
answer=$(curl -sS --data-urlencode grant_type=password --data-urlencode username=reader --data-urlencode "password=$REGISTRY_READER_PASSWORD" \
  --data-urlencode access_type=offline --data-urlencode "service=$TOKEN_SERVICE" --data-urlencode "scope=repository:a:pull,push" "$TOKEN_REALM")
refresh=$(jq -er .refresh_token <<<"$answer") || on_fail "POST password grant: $answer"
curl -sS --data-urlencode grant_type=refresh_token --data-urlencode "refresh_token=$refresh" --data-urlencode "service=$TOKEN_SERVICE" \
  "$TOKEN_REALM" | jq -e .token >/dev/null || on_fail "POST refresh_token grant"
token=$(registry_token "" repository:public/img:pull)
assert_eq "$(http_code -H "Authorization: Bearer $token" "$REGISTRY_URL/v2/public/img/tags/list")" 200 "an anonymous token under public/"
assert_eq "$(http_code -H "Authorization: Bearer ${token%?????}AAAAA" "$REGISTRY_URL/v2/public/img/tags/list")" 401 "a forged signature"
token=$(registry_token "reader:$REGISTRY_READER_PASSWORD" repository:private/img:pull)
assert_eq "$(http_code -X POST -H "Authorization: Bearer $token" "$REGISTRY_URL/v2/private/img/blobs/uploads/")" 401 "a pull token pushing"

TOKEN_STRICT_EXPIRY=1 TOKEN_EXPIRES_IN=3 registry_start token strict
token=$(registry_token "$REGISTRY_USER:$REGISTRY_PASSWORD" repository:a/b:pull)
assert_eq "$(http_code -H "Authorization: Bearer $token" "$REGISTRY_URL/v2/a/b/tags/list")" 404 "a fresh token (404: no such repository)"
sleep 4
assert_eq "$(http_code -H "Authorization: Bearer $token" "$REGISTRY_URL/v2/a/b/tags/list")" 401 "a strictly expired token"

registry_start token-tls
registry_seed_image private/tls:1 1 4096 || on_fail "push to token-tls"
assert_eq "$(http_code --cacert "$REGISTRY_CA" "$TOKEN_REALM?service=$TOKEN_SERVICE")" 200 "the token server over TLS"

# --- the fault proxy, in front of the plain registry ---------------------------------------------
registry_use src
registry_seed_image lib/big:1 1 1048576
fault_proxy_start "$REGISTRY_ADDR"
blob=${SEED_LAYERS%% *}
url=http://$PROXY_ADDR/v2/lib/big/blobs/$blob
size=$(stat -c %s "$SEED_LAYOUT/blobs/sha256/${blob#sha256:}")
"${SK[@]}" --src-tls-verify=false "docker://$PROXY_ADDR/lib/big:1" "oci:$WORK/p1:1" || on_fail "pull through the proxy"
"${SK[@]}" --dest-tls-verify=false "oci:$WORK/p1:1" "docker://$PROXY_ADDR/lib/again:1" || on_fail "push through the proxy"

# cut: headers and 1000 bytes, then the connection closes; a ranged request gets the rest
fault_proxy_arm "cut:/blobs/$blob:1000"
rc=0; curl -sS -o "$WORK/part" --max-time 20 "$url" 2>/dev/null || rc=$?
assert_eq "$rc:$(stat -c %s "$WORK/part")" "18:1000" "cut: curl's exit code and bytes"
curl -sS -o "$WORK/rest" -H 'Range: bytes=1000-' "$url" || on_fail "ranged GET"
assert_eq "sha256:$(cat "$WORK/part" "$WORK/rest" | sha256sum | cut -d' ' -f1)" "$blob" "cut + range"
grep -q "GET /v2/lib/big/blobs/$blob range=bytes=1000- " "$PROXY_LOG" || on_fail "the Range header is not in PROXY_LOG"

# status: 500, then 429 with Retry-After, twice, then through again
fault_proxy_arm 'status:^GET /v2/lib/big/blobs/:500'
assert_eq "$(http_code "$url")" 500 "status 500"
fault_proxy_arm 'status:/blobs/:429:2:7'
assert_eq "$(header Retry-After "$url")" 7 "429's Retry-After"
curl -sS "$url" | jq -e '.errors[0].code == "TOOMANYREQUESTS"' >/dev/null || on_fail "429's JSON error"
assert_eq "$(http_code "$url")" 200 "after COUNT faults, through again"

# stall: 1000 bytes, 2 s of silence, then the rest
fault_proxy_arm 'stall:/blobs/:1000:2'
start=$SECONDS
assert_eq "$(curl -sS -o /dev/null -w '%{size_download}' "$url")" "$size" "stall: the whole body"
(( SECONDS - start >= 2 )) || on_fail "stall: done in less than 2 s"
fault_proxy_arm 'stall:/blobs/:1000:3'
rc=0; curl -sS -o "$WORK/part" --max-time 1 "$url" 2>/dev/null || rc=$?
assert_eq "$rc:$(stat -c %s "$WORK/part")" "28:1000" "stall: a client timing out"

# cut-request: the registry sees a PATCH end early, the client sees no answer
head -c 300000 /dev/urandom >"$WORK/upload"
loc=$(header Location -X POST "http://$PROXY_ADDR/v2/lib/up/blobs/uploads/")
fault_proxy_arm 'cut-request:^PATCH /v2/lib/up/:5000'
rc=0; curl -sS -o /dev/null -X PATCH --data-binary "@$WORK/upload" -H 'Content-Type: application/octet-stream' "$loc" 2>/dev/null || rc=$?
[[ $rc == 52 || $rc == 55 || $rc == 56 ]] || on_fail "cut-request: curl exit $rc"
for ((i = 0; i < 20; i++)); do grep -q 'client disconnected during blob PATCH.*copied=5000' "$REGISTRY_LOG" && break; sleep 0.1; done
grep -q 'client disconnected during blob PATCH.*copied=5000' "$REGISTRY_LOG" || on_fail "cut-request: the registry did not see 5000 bytes"

# a whole upload through the proxy: PATCH with Expect: 100-continue, chunked PUT, keep-alive
head -c 2000000 /dev/urandom >"$WORK/upload"
loc=$(header Location -X POST "http://$PROXY_ADDR/v2/lib/up/blobs/uploads/")
loc=$(header Location -X PATCH -H 'Expect: 100-continue' --data-binary "@$WORK/upload" -H 'Content-Type: application/octet-stream' "$loc")
digest=sha256:$(sha256sum "$WORK/upload" | cut -d' ' -f1)
assert_eq "$(http_code -X PUT -H 'Transfer-Encoding: chunked' --data-binary @/dev/null "$loc&digest=$digest")" 201 "chunked PUT"
curl -sS -o /dev/null -o /dev/null "http://$PROXY_ADDR/v2/" "http://$PROXY_ADDR/v2/lib/up/blobs/$digest" || on_fail "keep-alive pair"
conns=$(grep -E "GET /v2/(lib/up/blobs/$digest)? " "$PROXY_LOG" | tail -2 | grep -o 'conn=[0-9]*' | sort -u | wc -l)
assert_eq "$conns" 1 "two requests on one kept-alive connection"

# drop, a bad spec, reset
fault_proxy_arm 'drop:/v2/$'
assert_eq "$(http_code "http://$PROXY_ADDR/v2/")" 000 "drop"
assert_eq "$(http_code --data-binary 'cut:x' "http://$PROXY_CTL/arm")" 400 "a bad spec"
fault_proxy_arm 'status:/v2/$:503:0'
assert_eq "$(http_code "http://$PROXY_ADDR/v2/"):$(http_code "http://$PROXY_ADDR/v2/")" 503:503 "COUNT 0 = until reset"
fault_proxy_reset
assert_eq "$(http_code "http://$PROXY_ADDR/v2/")" 200 "reset"

# --- clean-up leaves nothing running -------------------------------------------------------------
mapfile -t pids < <(cut -d' ' -f1 "$REGISTRY_ENV_DIR/pids")
(( ${#pids[@]} == 11 )) || on_fail "expected 11 processes (7 registries, 3 token servers, 1 proxy), got ${#pids[@]}"
registry_env_cleanup
for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && fail "process $p still runs after registry_env_cleanup"; done
note "registry environment OK: plain, tls, htpasswd, htpasswd-tls, token, token-tls, fault proxy"
